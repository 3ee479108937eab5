"""Writes a study's results folder: ``runs.csv``, ``summary.csv``, ``paired.csv``,
``summary.md`` and ``curves_*.png``, all re-read from the workdirs."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import Any

from experiments import stats
from experiments.runner import archive, frontier
from experiments.runner.collect import collect_runs
from experiments.runner.markdown import render_summary
from experiments.runner.plots import plot_curves
from experiments.runner.spec import Cell, Study
from experiments.runner.summary import paired, summarize


def _csv_value(v: Any) -> Any:
  if v is None:
    return ""
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, float):
    return repr(v)
  return v


def _write_csv(path: str, dicts: Sequence[dict[str, Any]]) -> None:
  fields = list(dict.fromkeys(k for d in dicts for k in d if not k.startswith("_")))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for d in dicts:
      writer.writerow({k: _csv_value(d.get(k)) for k in fields})


def aggregate(study: Study, cells: Sequence[Cell], out_dir: str) -> dict[str, Any]:
  """Writes ``runs.csv``, ``summary.csv``, ``paired.csv``, ``summary.md`` and ``curves_*.png``
  (with a ``frontier``, ``frontier.csv`` and ``frontier.png`` too) to ``out_dir``, and keeps
  the finished cells' records in ``out_dir/cells/`` (``archive``; not for a study that reads
  another study's workdirs)."""
  os.makedirs(out_dir, exist_ok=True)
  if not study.workdirs_of:
    archive.save(out_dir, cells)
  rows = collect_runs(study, cells)
  groups = summarize(study, rows)
  _write_csv(os.path.join(out_dir, "runs.csv"), rows)
  _write_csv(os.path.join(out_dir, "summary.csv"), groups)
  comparisons = paired(study, rows)
  stats.write_csv(os.path.join(out_dir, stats.PAIRED_CSV), comparisons)
  if study.frontier is not None:
    frontier.write(study, rows, comparisons, out_dir)
  else:
    frontier.remove_stale(out_dir)
  plots = plot_curves(study, rows, groups, out_dir)
  with open(os.path.join(out_dir, "summary.md"), "w") as f:
    f.write(render_summary(study, rows, groups, plots))
  return {"rows": rows, "groups": groups, "plots": plots, "out_dir": out_dir}
