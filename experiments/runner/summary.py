"""Grouped statistics of the rows: mean and sample std per group, and the paired differences.

One summary dict per ``group_by`` combination (the lines of ``summary.csv``); the paired
per-seed differences of each arm against SGD and SAM are ``experiments.stats``'s.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from experiments import stats
from experiments.runner.spec import Study, norm_key


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
  """(mean, sample std with ddof=1 (None for n < 2), n)."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None, None, 0
  std = statistics.stdev(values) if len(values) > 1 else None
  return statistics.fmean(values), std, len(values)


def summarize(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One dict per group: counts, mean/std of each metric, wall time, time to target.

  Ordered by the group_by fields, each field's values in the order the study lists them.
  """
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(row["_group"], []).append(row)
  orders = [
    list(dict.fromkeys(norm_key((k[i],))[0] for k in groups)) for i in range(len(study.group_by))
  ]

  def rank(key: tuple) -> tuple[int, ...]:
    return tuple(orders[i].index(norm_key((v,))[0]) for i, v in enumerate(key))

  out = []
  for key in sorted(groups, key=rank):
    members = groups[key]
    done = [r for r in members if r["status"] == "done"]
    g: dict[str, Any] = {f: v for f, v in zip(study.group_by, key, strict=True)}
    g.update({"_key": key, "n": len(done), "n_asked": len(members)})
    for metric in study.metrics:
      mean, std, n = mean_std([r[metric] for r in done])
      g[f"{metric}_mean"], g[f"{metric}_std"], g[f"{metric}_n"] = mean, std, n
    g["wall_time_s_mean"], g["wall_time_s_std"], _ = mean_std([r["wall_time_s"] for r in done])
    if study.target_accuracy is not None:
      reached = [r for r in done if r["epochs_to_target"] is not None]
      g["reached"] = len(reached)
      for what in ("epochs_to_target", "seconds_to_target"):
        g[f"{what}_mean"], g[f"{what}_std"], _ = mean_std([r[what] for r in reached])
    if study.analyze is not None and study.analyze.summarized:
      for label in study.analyze.labels:
        analysed = [r for r in members if r["_analysis"][label]["status"] == "done"]
        g[f"analyzed@{label}"] = len(analysed)
        for column, _ in study.analyze.metrics:
          values = [r[f"{column}@{label}"] for r in analysed]
          mean, std, n = mean_std(values)
          g[f"{column}@{label}_mean"], g[f"{column}@{label}_std"] = mean, std
          g[f"{column}@{label}_n"] = n
    if study.paper:
      paper = study.paper["values"].get(norm_key(key))
      ours = g[f"{study.paper['metric']}_mean"]
      g["paper"] = paper
      g["ours_minus_paper"] = (
        None
        if paper is None or ours is None or not study.paper["comparable"]
        else ours * study.paper["scale"] - paper
      )
    out.append(g)
  return out


def paired(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Each arm minus SGD and SAM of its cell group, per seed, on the first metric (the arms are
  ``stats.study_arm_fields``: a frontier's ``arm_field`` when it names one)."""
  return stats.compare(
    rows,
    study.group_by,
    study.metrics[0],
    arm_fields=stats.study_arm_fields(study),
    paper=study.paper,
  )
