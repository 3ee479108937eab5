"""Reads the cells' workdirs into rows: one dict per cell, the lines of ``runs.csv``.

A row holds the cell's fields, status (``running``/``queued`` cells also ``held_by``: the run or
job that has them), attempts and wall time, the study's metrics from its
``eval`` records (``workdir.read_metrics``), the time to the target accuracy, and with a dict
``analyze`` the metrics read from each analysed checkpoint's ``analysis.json``. Keys starting with
``_`` (the eval records, the group key, the analysis details) are for the report, not the CSV.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from experiments import workdir as workdir_lib
from experiments.runner.spec import AnalysisJob, Cell, Study
from experiments.runner.state import (
  ANALYZE_LOG_FILE,
  DONE_FILE,
  LOG_FILE,
  analysis_status,
  cell_status,
  checkpoint_problem,
  held_by,
  last_error,
  read_json,
  shared_from,
  started_attempts,
)


def read_evals(workdir: str) -> list[dict[str, Any]]:
  """The ``eval`` records of ``workdir/metrics.jsonl``, one per epoch (the last one wins); none
  without the file (a cell not started). A last line cut short by a kill is left out."""
  if not os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    return []
  by_epoch: dict[Any, dict[str, Any]] = {}
  for record in workdir_lib.read_metrics(workdir):
    if record.get("kind") == "eval" and "epoch" in record:
      by_epoch[record["epoch"]] = record
  return [by_epoch[e] for e in sorted(by_epoch)]


def time_to_target(
  evals: Sequence[dict[str, Any]], metric: str, target: float
) -> tuple[Any, float | None]:
  """(epoch, training seconds) of the first eval with ``metric >= target``, else (None, None).

  ``evals`` are in epoch order. A record at a whole epoch closes that epoch; one at a fractional
  epoch (``eval_every_steps``) is inside it, and its ``train_epoch_time_s`` is the epoch's time
  so far. The seconds are the closed epochs' times plus the crossing record's own (compilation
  and evaluation excluded); None when a record lacks it or timed only part of its epoch (a run
  resumed mid-epoch: ``train_epoch_time_partial``).
  """
  closed: float | None = 0.0
  for record in evals:
    t = None if record.get("train_epoch_time_partial") else record.get("train_epoch_time_s")
    seconds = None if closed is None or t is None else closed + float(t)
    value = record.get(metric)
    if isinstance(value, (int, float)) and value >= target:
      return record["epoch"], seconds
    if float(record["epoch"]).is_integer():
      closed = seconds
  return None, None


def metric_value(evals: Sequence[dict[str, Any]], metric: str) -> float | None:
  """A study metric of a run's eval records: ``KEY`` at the last one, ``max:KEY``/``min:KEY``
  over all of them (the peak over epochs: an optimistic figure, since picking the epoch uses the
  evaluation data)."""
  op, _, key = metric.rpartition(":")
  values = [r[key] for r in evals if r.get(key) is not None]
  if not values:
    return None
  return {"": values[-1], "max": max(values), "min": min(values)}[op]


def collect_runs(study: Study, cells: Sequence[Cell]) -> list[dict[str, Any]]:
  """One row per cell (see ``runs.csv``)."""
  rows = []
  for cell in cells:
    status = cell_status(cell)
    train_attempts = started_attempts(cell.workdir) if os.path.isdir(cell.workdir) else []
    done = read_json(os.path.join(cell.workdir, DONE_FILE)) if status == "done" else None
    if done and done.get("wall_time_s") is not None:
      wall = float(done["wall_time_s"])
    else:
      wall = sum(a["wall_s"] for a in train_attempts) if train_attempts else None
    evals = read_evals(cell.workdir)
    row: dict[str, Any] = {"cell_id": cell.cell_id}
    row.update({k: v for k, v in cell.overrides if k != study.seed_field})
    row.update(
      {
        "seed": cell.seed,
        "config_hash": cell.config_hash,
        "status": status,
        "attempts": len(train_attempts) or (done or {}).get("attempts", 0),
        "wall_time_s": wall,
        "epochs": evals[-1]["epoch"] if evals else None,
      }
    )
    for metric in study.metrics:
      row[metric] = metric_value(evals, metric)
    if study.target_accuracy is not None:
      epoch, seconds = time_to_target(evals, study.target_metric, study.target_accuracy)
      row["epochs_to_target"] = epoch
      row["seconds_to_target"] = seconds
    if study.analyze is not None and not study.analyze.summarized:
      row["analyzed"] = all(analysis_status(j) == "done" for j in study.analysis_jobs(cell))
    elif study.analyze is not None:
      row["_analysis"] = {}
      for job in study.analysis_jobs(cell):
        row["_analysis"][job.label] = info = _analysis_info(job, study.analyze.metrics)
        row[f"analysis@{job.label}"] = info["status"]
        row.update({f"{c}@{job.label}": info["values"].get(c) for c, _ in study.analyze.metrics})
    if study.shares_cells_with:
      row["shared_from"] = shared_from(cell)
    row["error"] = last_error(os.path.join(cell.workdir, LOG_FILE)) if status == "failed" else ""
    if status in ("running", "queued"):  # The column appears only while some cell is held.
      row["held_by"] = held_by(cell)
    row["_evals"] = evals
    row["_group"] = study.group_key(cell)
    rows.append(row)
  return rows


def lookup(data: Any, path: str) -> tuple[float | None, str | None]:
  """``(number, None)`` at the dotted ``path`` of ``data`` (integer parts index lists, negative
  ones from the end), else ``(None, why not)``."""
  node = data
  for part in path.split("."):
    if isinstance(node, dict) and part in node:
      node = node[part]
    elif isinstance(node, list) and re.fullmatch(r"-?[0-9]+", part):
      if not -len(node) <= int(part) < len(node):
        return None, f"index {part} is outside a list of {len(node)}"
      node = node[int(part)]
    elif isinstance(node, dict) and isinstance(node.get("skipped"), str):
      return None, node["skipped"]
    else:
      return None, f"no {part!r} there"
  if node is None:
    return None, "null (not finite)"
  if isinstance(node, bool) or not isinstance(node, (int, float)):
    return None, f"not a number ({type(node).__name__})"
  return float(node), None


def _analysis_info(job: AnalysisJob, metrics: Sequence[tuple[str, str]]) -> dict[str, Any]:
  """The status of ``job`` and, when done, the metrics read from its ``analysis.json``."""
  status = analysis_status(job)
  info: dict[str, Any] = {"status": status, "values": {}, "problems": {}, "why": ""}
  if status == "no checkpoint":
    info["why"] = checkpoint_problem(job) or ""
  elif status == "failed":
    info["why"] = last_error(os.path.join(job.out_dir, ANALYZE_LOG_FILE))
  elif status == "done":
    data = read_json(os.path.join(job.out_dir, "analysis.json"))
    for column, path in metrics:
      value, problem = (None, "no readable analysis.json") if data is None else lookup(data, path)
      info["values"][column] = value
      if problem:
        info["problems"][column] = problem
  return info
