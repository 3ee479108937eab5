"""Studies: a grid of ``experiments.main`` runs, run resumably and summarised over seeds.

    python -m experiments.study STUDY_CONFIG [--jobs N] [--workdirs ROOT] [--results ROOT]
        [--only-aggregate] [--dry-run] [--cells PATTERN[,PATTERN...]] [--config.FIELD=VALUE ...]

A study config is a Python file whose ``get_study()`` returns a dict (see ``STUDY_KEYS`` and
``docs/studies.md``)::

    {"name": "t1", "base_config": "experiments/configs/fashion_mnist_default.py",
     "fixed": {"num_epochs": 10}, "grid": {"optimizer.name": ["sgd", "sam"]}, "seeds": [0, 1]}

The grid (cartesian product) plus the explicit ``cells`` are crossed with ``seeds``. Each cell is
an ordinary workdir of ``experiments.main``, ``WORKDIRS/<name>/<cell id>``, where the cell id is
the cell's values, its seed and a hash of its overrides (``sgd-s0-1a2b3c4d``). The runner knows
no config field: it passes ``--config=<base_config> --config.FIELD=VALUE ...`` and reads
``metrics.jsonl``'s ``eval`` records.

Running: a cell with ``DONE.json`` (written when its process exits 0) is skipped; a cell whose
workdir holds an earlier attempt is continued with ``--resume``; the others start fresh.
``--jobs N`` runs N processes side by side; each one's output goes to ``WORKDIR/log.txt``.
Attempts (wall time, exit status) are recorded in ``WORKDIR/study_cell.json``; the wall time of a
cell is summed over its attempts. A failed cell is reported, the others go on, and the exit
status is 1. Ctrl-C or SIGTERM stops the children (SIGTERM, then SIGKILL) and exits 130/143;
the next invocation resumes them.

Analysis (``analyze``: True or ``{"args": [...], "steps": [...], "metrics": {...}}``): each
finished cell is analysed once per requested checkpoint step with ``python -m experiments.analyze
WORKDIR [--step N] --out WORKDIR/analysis/<name>/<step_N|final> ARGS``; ``ANALYZED.json`` in
that folder marks it done (with the same ARGS: changed ones run it again). A step without a
checkpoint is skipped with a note. ``workdirs_of: OTHER`` makes the cells those of study OTHER
(same ids and hashes, workdirs ``WORKDIRS/OTHER/<cell id>``): such a study trains nothing, it
only analyses the finished ones.

Shared cells (``shares_cells_with: [OTHER, ...]``): a cell that has no workdir yet and whose
config hash is that of a finished cell in ``WORKDIRS/OTHER/`` becomes a symbolic link to that
workdir instead of training the same run again (``runs.csv``'s ``shared_from``; its wall time is
counted in OTHER's machine time, not here). Both studies must run the same code.

Aggregation (after running, or alone with ``--only-aggregate``) writes ``RESULTS/<name>/``:
``runs.csv``, ``summary.csv``, ``summary.md`` (mean +- sample std over the finished seeds of each
group, ``n=2 of 3`` when some are not finished; with a dict ``analyze``, also the analysis
metrics per step; each arm minus SGD and SAM per seed, ``experiments.stats``), ``paired.csv`` and
``curves_<metric>.png``.

Extra ``--config.FIELD=VALUE`` arguments are passed to every cell but are not part of the cell
id or hash: they are for machine-local settings (``dataset.data_dir``, ``progress_bar``), not
for anything that changes results.

Bad input prints one ``error: ...`` line and exits with status 2 before anything runs.
"""

from __future__ import annotations

import argparse
import collections
import csv
import dataclasses
import fnmatch
import hashlib
import importlib.util
import itertools
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments import stats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STUDY_KEYS = {
  "name": "the study's name: the folder under --workdirs and --results (letters, digits, ._-)",
  "base_config": "config file passed to experiments.main as --config",
  "fixed": "{FIELD: value} passed to every cell as --config.FIELD=value",
  "grid": "{FIELD: [values]}: the cartesian product of these is run",
  "cells": "[{FIELD: value, ...}]: explicit extra cells (each crossed with seeds)",
  "seeds": "[int]: every cell is run once per seed (default [0])",
  "seed_field": "the config field the seed goes to (default 'seed')",
  "group_by": "[FIELD]: one summary row per combination (default: every grid/cells field)",
  "metrics": "[key of the eval records]: reported at the final epoch (default test_accuracy); "
  "'max:KEY' / 'min:KEY': over all epochs (the peak, optimistic)",
  "paper": "{'source': str, 'metric': str, 'scale': float, 'values': {group tuple: number}} "
  "(or just the values mapping); 'comparable': bool; 'effect': 'difference' | 'relative_error' | "
  "'none' (how the paper's gain becomes the effect tested in the paired differences)",
  "analyze": "False (default) | True | {'args': [flag], 'steps': [int or 'final'], "
  "'metrics': {column: dotted path in analysis.json}}: run `python -m experiments.analyze` on "
  "each finished cell at these checkpoint steps (True: the final one, no metrics)",
  "workdirs_of": "name of another study whose cells these are: analyse its workdirs "
  "(WORKDIRS/<workdirs_of>/<cell id>), never train (needs analyze)",
  "shares_cells_with": "[name of another study]: a cell with no workdir yet whose config hash "
  "is that of a finished cell of such a study links to that workdir instead of training",
  "target_accuracy": "number: report epochs and training seconds to reach it",
  "target_metric": "the eval key compared with target_accuracy (default test_accuracy)",
  "description": "free text, shown at the top of summary.md",
}
PAPER_KEYS = {"source", "metric", "scale", "values", "comparable", "effect"}
ANALYZE_KEYS = {
  "args": "[str]: extra flags of experiments.analyze (not --step/--out; default [])",
  "steps": "[int >= 0 or 'final']: checkpoint steps to analyse (default ['final'])",
  "metrics": "{column: dotted path in analysis.json, e.g. 'hessian.eigenvalues.0'} (default {})",
}
FINAL = "final"
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
STATE_FILE = "study_cell.json"
DONE_FILE = "DONE.json"
ANALYZED_FILE = "ANALYZED.json"
LOG_FILE = "log.txt"
ANALYZE_LOG_FILE = "analyze_log.txt"
ANALYZE_STATE_FILE = "study_analysis.json"
ANALYSIS_DIR = "analysis"
ANALYZE_MODULE = "experiments.analyze"


class StudyError(ValueError):
  """Bad study config or command line."""


# ----------------------------------------------------------------------------- the study


@dataclasses.dataclass(frozen=True)
class Cell:
  """One run: ``experiments.main`` with ``base_config`` and ``overrides`` in ``workdir``."""

  cell_id: str
  values: tuple[tuple[str, Any], ...]  # The grid/cells fields of this cell, in order.
  overrides: tuple[tuple[str, Any], ...]  # fixed + values + seed: everything passed.
  seed: int
  config_hash: str
  workdir: str

  def override_args(self) -> list[str]:
    return [f"--config.{k}={format_value(v)}" for k, v in self.overrides]

  def value(self, field: str) -> Any:
    return dict(self.overrides).get(field)


def step_label(step: int | str) -> str:
  """The folder and column label of an analysed checkpoint: ``step_<N>`` or ``final``."""
  return FINAL if step == FINAL else f"step_{step}"


@dataclasses.dataclass(frozen=True)
class AnalysisSpec:
  """The study's ``analyze``: which checkpoints of each finished cell to analyse, and how."""

  args: tuple[str, ...] = ()
  steps: tuple[int | str, ...] = (FINAL,)
  metrics: tuple[tuple[str, str], ...] = ()  # (column, dotted path in analysis.json)
  summarized: bool = False  # Given as a dict: runs.csv and the summary get analysis columns.

  @property
  def labels(self) -> list[str]:
    return [step_label(s) for s in self.steps]


@dataclasses.dataclass(frozen=True)
class AnalysisJob:
  """One ``experiments.analyze`` run: a cell's checkpoint of ``step`` (None: its latest)."""

  cell: Cell
  step: int | None
  label: str
  out_dir: str
  args: tuple[str, ...]

  @property
  def name(self) -> str:
    return f"{self.cell.cell_id}@{self.label}"


@dataclasses.dataclass
class Study:
  name: str
  base_config: str
  fixed: dict[str, Any]
  grid: dict[str, list[Any]]
  cells: list[dict[str, Any]]
  seeds: list[int]
  seed_field: str
  group_by: list[str]
  metrics: list[str]
  paper: dict[str, Any] | None
  analyze: AnalysisSpec | None
  target_accuracy: float | None
  target_metric: str
  description: str
  path: str
  workdirs_of: str | None = None
  shares_cells_with: list[str] = dataclasses.field(default_factory=list)

  @property
  def workdirs_name(self) -> str:
    """The folder under the workdirs root that holds the cells (``workdirs_of`` or ``name``)."""
    return self.workdirs_of or self.name

  def analysis_jobs(self, cell: Cell) -> list[AnalysisJob]:
    """One job per requested step; outputs under ``WORKDIR/analysis/<name>/<label>``."""
    if self.analyze is None:
      return []
    return [
      AnalysisJob(
        cell=cell,
        step=None if step == FINAL else int(step),
        label=step_label(step),
        out_dir=os.path.join(cell.workdir, ANALYSIS_DIR, self.name, step_label(step)),
        args=self.analyze.args,
      )
      for step in self.analyze.steps
    ]

  def expand(self, workdirs_root: str) -> list[Cell]:
    """The cells: (grid product + explicit cells) x seeds, grid first, seeds innermost.

    Workdirs are ``<workdirs_root>/<workdirs_of or name>/<cell id>``; the ids and hashes do not
    depend on either name."""
    combos: list[dict[str, Any]] = []
    if self.grid:
      keys = list(self.grid)
      combos += [dict(zip(keys, vs, strict=True)) for vs in itertools.product(*self.grid.values())]
    combos += [dict(c) for c in self.cells]
    out, seen = [], {}
    for combo in combos:
      seeds = [combo.pop(self.seed_field)] if self.seed_field in combo else self.seeds
      for seed in seeds:
        overrides = tuple(self.fixed.items()) + tuple(combo.items()) + ((self.seed_field, seed),)
        chash = config_hash(self.base_config, overrides)
        readable = [_slug(format_value(v)) for v in combo.values()] + [f"s{_slug(str(seed))}"]
        cell_id = "-".join(readable)[:100] + "-" + chash
        if cell_id in seen:
          raise StudyError(f"cells {seen[cell_id]} and {dict(overrides)} are the same run")
        seen[cell_id] = dict(overrides)
        workdir = os.path.join(workdirs_root, self.workdirs_name, cell_id)
        out.append(Cell(cell_id, tuple(combo.items()), overrides, seed, chash, workdir))
    return out

  def group_key(self, cell: Cell) -> tuple:
    return tuple(cell.value(f) for f in self.group_by)


def format_value(value: Any) -> str:
  """The text of ``--config.FIELD=<text>`` for a study value."""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text)[:40] or "_"


def config_hash(base_config: str, overrides: Sequence[tuple[str, Any]]) -> str:
  """8 hex digits of sha256 over the base config path and the sorted override texts."""
  texts = sorted(f"{k}={format_value(v)}" for k, v in overrides)
  blob = json.dumps({"base_config": os.path.normpath(base_config), "overrides": texts})
  return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _is_scalar(v: Any) -> bool:
  return isinstance(v, (bool, int, float, str)) and not (isinstance(v, float) and math.isnan(v))


def _check_fields(where: str, mapping: Any) -> dict[str, Any]:
  if not isinstance(mapping, dict):
    raise StudyError(f"{where} must be a dict of FIELD: value, got {type(mapping).__name__}")
  for k in mapping:
    if not isinstance(k, str) or not FIELD_RE.match(k):
      raise StudyError(f"{where}: {k!r} is not a config field name (like 'optimizer.rho')")
  return mapping


def _check_value(where: str, v: Any) -> None:
  if not _is_scalar(v):
    raise StudyError(f"{where}: {v!r} is not a number, string or bool")


def _resolve(path: str) -> str | None:
  for candidate in (path, os.path.join(REPO, path)):
    if os.path.isfile(candidate):
      return candidate
  return None


def load_study(path: str) -> Study:
  """Runs ``get_study()`` of ``path`` and validates it."""
  if not os.path.isfile(path):
    raise StudyError(f"study config {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_study_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - any error in the file is bad input.
    raise StudyError(f"study config {path} failed to load: {type(e).__name__}: {e}") from None
  if not hasattr(module, "get_study"):
    raise StudyError(f"study config {path} has no get_study()")
  try:
    raw = module.get_study()
  except Exception as e:  # noqa: BLE001
    raise StudyError(f"{path}: get_study() raised {type(e).__name__}: {e}") from None
  return parse_study(raw, path)


def parse_study(raw: Any, path: str = "<study>") -> Study:
  """Validates a study dict (see ``STUDY_KEYS``)."""
  if not isinstance(raw, dict):
    raise StudyError(f"{path}: get_study() must return a dict, got {type(raw).__name__}")
  unknown = sorted(str(k) for k in raw if k not in STUDY_KEYS)
  if unknown:
    raise StudyError(f"{path}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(STUDY_KEYS)}")
  for key in ("name", "base_config"):
    if not isinstance(raw.get(key), str) or not raw[key]:
      raise StudyError(f"{path}: '{key}' (a non-empty string) is required")
  name = raw["name"]
  if not NAME_RE.match(name):
    raise StudyError(f"{path}: name {name!r} may only hold letters, digits, '.', '_' and '-'")
  if _resolve(raw["base_config"]) is None:
    raise StudyError(f"{path}: base_config {raw['base_config']} does not exist")

  fixed = _check_fields("fixed", raw.get("fixed", {}))
  for k, v in fixed.items():
    _check_value(f"fixed[{k!r}]", v)
  grid = _check_fields("grid", raw.get("grid", {}))
  for k, vs in grid.items():
    if not isinstance(vs, list):
      raise StudyError(f"grid[{k!r}] must be a list of values, got {type(vs).__name__}")
    if not vs:
      raise StudyError(f"grid[{k!r}] is empty")
    for v in vs:
      _check_value(f"grid[{k!r}]", v)
    if len(set(map(format_value, vs))) != len(vs):
      raise StudyError(f"grid[{k!r}] repeats a value: {vs}")
  cells = raw.get("cells", [])
  if not isinstance(cells, list):
    raise StudyError(f"cells must be a list of dicts, got {type(cells).__name__}")
  for i, c in enumerate(cells):
    _check_fields(f"cells[{i}]", c)
    if not c:
      raise StudyError(f"cells[{i}] is empty")
    for k, v in c.items():
      _check_value(f"cells[{i}][{k!r}]", v)
  if not grid and not cells:
    raise StudyError(f"{path}: empty grid: give 'grid' (FIELD: [values]) and/or 'cells'")

  seed_field = raw.get("seed_field", "seed")
  if not isinstance(seed_field, str) or not FIELD_RE.match(seed_field):
    raise StudyError(f"seed_field must be a config field name, got {seed_field!r}")
  seeds = raw.get("seeds", [0])
  if (
    not isinstance(seeds, list)
    or not seeds
    or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
  ):
    raise StudyError(f"seeds must be a non-empty list of integers, got {seeds!r}")
  if len(set(seeds)) != len(seeds):
    raise StudyError(f"seeds repeat a value: {seeds}")
  for where, keys in (("fixed", fixed), ("grid", grid)):
    if seed_field in keys:
      raise StudyError(f"{where} sets '{seed_field}': list seeds in 'seeds' instead")
  both = sorted(set(fixed) & (set(grid) | {k for c in cells for k in c}))
  if both:
    raise StudyError(f"field(s) {', '.join(both)} are both fixed and varied")

  varied = list(grid) + [k for c in cells for k in c if k != seed_field and k not in grid]
  varied = list(dict.fromkeys(varied))
  group_by = raw.get("group_by", varied)
  if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
    raise StudyError(f"group_by must be a list of field names, got {group_by!r}")
  stray = [g for g in group_by if g not in varied and g not in fixed]
  if stray:
    raise StudyError(f"group_by field(s) {', '.join(stray)} are not in fixed, grid or cells")
  metrics = raw.get("metrics", ["test_accuracy"])
  if not isinstance(metrics, list) or not metrics or not all(isinstance(m, str) for m in metrics):
    raise StudyError(f"metrics must be a non-empty list of eval-record keys, got {metrics!r}")
  for m in metrics:
    if ":" in m and m.split(":", 1)[0] not in ("max", "min"):
      raise StudyError(f"metric {m!r}: the prefix must be 'max:' or 'min:' (the peak over epochs)")
  analyze = _parse_analyze(raw.get("analyze", False))
  workdirs_of = raw.get("workdirs_of")
  if workdirs_of is not None:
    if not isinstance(workdirs_of, str) or not NAME_RE.match(workdirs_of):
      raise StudyError(
        f"workdirs_of must be the name of another study (letters, digits, ._-), got {workdirs_of!r}"
      )
    if workdirs_of == name:
      raise StudyError(f"workdirs_of names this study itself ({name!r}); leave it out")
    if analyze is None:
      raise StudyError(
        "workdirs_of needs 'analyze' (True or a dict): a study over another study's workdirs "
        "trains nothing and only analyses them"
      )
  shares = _parse_shares(raw.get("shares_cells_with", []), name, workdirs_of)
  target = raw.get("target_accuracy")
  if target is not None and (
    isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target)
  ):
    raise StudyError(f"target_accuracy must be a number, got {target!r}")
  target_metric = raw.get("target_metric", "test_accuracy")
  if not isinstance(target_metric, str):
    raise StudyError(f"target_metric must be a string, got {target_metric!r}")
  description = raw.get("description", "")
  if not isinstance(description, str):
    raise StudyError("description must be a string")

  study = Study(
    name=name,
    base_config=raw["base_config"],
    fixed=dict(fixed),
    grid={k: list(v) for k, v in grid.items()},
    cells=[dict(c) for c in cells],
    seeds=list(seeds),
    seed_field=seed_field,
    group_by=list(group_by),
    metrics=list(metrics),
    paper=None,
    analyze=analyze,
    target_accuracy=None if target is None else float(target),
    target_metric=target_metric,
    description=description,
    path=path,
    workdirs_of=workdirs_of,
    shares_cells_with=shares,
  )
  if raw.get("paper") is not None:
    study.paper = _parse_paper(raw["paper"], study)
  study.expand("")  # Raises on duplicate cells.
  return study


def _parse_shares(shares: Any, name: str, workdirs_of: str | None) -> list[str]:
  """``shares_cells_with``: a study name or a list of them, not this study's own."""
  names = [shares] if isinstance(shares, str) else shares
  if not isinstance(names, list) or not all(isinstance(n, str) and NAME_RE.match(n) for n in names):
    raise StudyError(
      f"shares_cells_with must be a list of other studies' names (letters, digits, ._-), "
      f"got {shares!r}"
    )
  if name in names:
    raise StudyError(f"shares_cells_with names this study itself ({name!r}); leave it out")
  if names and workdirs_of:
    raise StudyError(
      "shares_cells_with and workdirs_of exclude each other (workdirs_of trains nothing)"
    )
  return list(dict.fromkeys(names))


def _parse_analyze(analyze: Any) -> AnalysisSpec | None:
  """``analyze``: False -> None, True -> the final checkpoint with no flags, or a dict of
  ``ANALYZE_KEYS``."""
  if analyze is False:
    return None
  if analyze is True:
    return AnalysisSpec()
  if not isinstance(analyze, dict):
    raise StudyError(
      f"analyze must be True, False or a dict with keys {', '.join(ANALYZE_KEYS)}; got {analyze!r}"
    )
  unknown = sorted(str(k) for k in analyze if k not in ANALYZE_KEYS)
  if unknown:
    raise StudyError(
      f"analyze: unknown key(s) {', '.join(unknown)}; valid: {', '.join(ANALYZE_KEYS)}"
    )
  args = analyze.get("args", [])
  if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
    raise StudyError(
      f"analyze['args'] must be a list of strings (flags of experiments.analyze, e.g. "
      f"['--skip', 'spectrum,landscape']), got {args!r}"
    )
  _check_analyze_args(args)
  steps = analyze.get("steps", [FINAL])
  allowed = "a non-empty list of checkpoint steps (integers >= 0) and/or 'final'"
  if not isinstance(steps, list) or not steps:
    raise StudyError(f"analyze['steps'] must be {allowed}, got {steps!r}")
  for step in steps:
    if step != FINAL and (isinstance(step, bool) or not isinstance(step, int) or step < 0):
      raise StudyError(f"analyze['steps']: {step!r} is not allowed; give {allowed}")
  if len(set(map(step_label, steps))) != len(steps):
    raise StudyError(f"analyze['steps'] repeats a step: {steps!r}")
  metrics = analyze.get("metrics", {})
  if not isinstance(metrics, dict):
    raise StudyError(
      f"analyze['metrics'] must be a dict {{column: dotted path in analysis.json}}, got "
      f"{type(metrics).__name__}"
    )
  for column, where in metrics.items():
    if not isinstance(column, str) or not IDENT_RE.match(column):
      raise StudyError(
        f"analyze['metrics']: {column!r} is not a column name (letters, digits and _, not "
        "starting with a digit)"
      )
    if not isinstance(where, str) or not where or "" in where.split("."):
      raise StudyError(
        f"analyze['metrics'][{column!r}] must be a dotted path in analysis.json such as "
        f"'hessian.eigenvalues.0', got {where!r}"
      )
  return AnalysisSpec(
    args=tuple(args), steps=tuple(steps), metrics=tuple(metrics.items()), summarized=True
  )


def _check_analyze_args(args: Sequence[str]) -> None:
  """Refuses flags ``experiments.analyze`` does not take, and those the runner sets."""
  if not args or not analyze_available():
    return
  from experiments import analyze as analyze_lib

  try:
    workdirs, settings, out = analyze_lib.parse_args(["WORKDIR", *args])
  except analyze_lib.UsageError as e:
    raise StudyError(f"analyze['args'] {list(args)!r}: {e}") from None
  except SystemExit:  # --help: argparse prints and exits.
    raise StudyError(f"analyze['args'] {list(args)!r}: give only analysis flags") from None
  if len(workdirs) > 1:
    raise StudyError(
      f"analyze['args'] {list(args)!r} holds a workdir ({workdirs[1]!r}): the runner passes "
      "each cell's; give only flags"
    )
  if settings.step is not None or out is not None:
    raise StudyError(
      f"analyze['args'] {list(args)!r} sets --step or --out: the runner sets them (give the "
      "steps in analyze['steps'])"
    )


def _parse_paper(paper: Any, study: Study) -> dict[str, Any]:
  if not isinstance(paper, dict):
    raise StudyError(f"paper must be a dict, got {type(paper).__name__}")
  if "values" not in paper:
    paper = {"values": paper}
  unknown = sorted(str(k) for k in paper if k not in PAPER_KEYS)
  if unknown:
    raise StudyError(f"paper: unknown key(s) {', '.join(unknown)}; valid: {', '.join(PAPER_KEYS)}")
  source = paper.get("source", "")
  metric = paper.get("metric", study.metrics[0])
  scale = paper.get("scale", 1.0)
  comparable = paper.get("comparable", True)
  effect = paper.get("effect")
  if effect is not None and effect not in stats.EFFECT_MODES:
    raise StudyError(
      f"paper['effect'] must be one of {', '.join(stats.EFFECT_MODES)}, got {effect!r}"
    )
  if not isinstance(comparable, bool):
    raise StudyError(f"paper['comparable'] must be True or False, got {comparable!r}")
  if not isinstance(source, str):
    raise StudyError("paper['source'] must be a string")
  if metric not in study.metrics:
    raise StudyError(f"paper['metric'] {metric!r} is not one of metrics {study.metrics}")
  if isinstance(scale, bool) or not isinstance(scale, (int, float)):
    raise StudyError(f"paper['scale'] must be a number, got {scale!r}")
  if not isinstance(paper["values"], dict):
    raise StudyError("paper['values'] must map group tuples to numbers")
  values = {}
  for key, number in paper["values"].items():
    key = key if isinstance(key, tuple) else (key,)
    if len(key) != len(study.group_by):
      raise StudyError(
        f"paper key {key!r} has {len(key)} value(s); group_by has {len(study.group_by)}: "
        f"{study.group_by}"
      )
    if isinstance(number, bool) or not isinstance(number, (int, float)):
      raise StudyError(f"paper value for {key!r} must be a number, got {number!r}")
    values[_norm_key(key)] = float(number)
  return {
    "source": source,
    "metric": metric,
    "scale": float(scale),
    "values": values,
    "comparable": comparable,
    "effect": effect,
  }


def _norm_key(key: tuple) -> tuple[str, ...]:
  return tuple("" if v is None else format_value(v) for v in key)


# ----------------------------------------------------------------------------- cell state


def _read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _write_json(path: str, data: dict[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def _attempts(workdir: str) -> list[dict[str, Any]]:
  """The recorded attempts; one left open by a killed runner gets its wall time estimated from
  the last write to ``log.txt``."""
  state = _read_json(os.path.join(workdir, STATE_FILE)) or {}
  attempts = state.get("attempts", [])
  for a in attempts:
    if a.get("wall_s") is None:
      log = os.path.join(workdir, LOG_FILE)
      end = os.path.getmtime(log) if os.path.exists(log) else a["started"]
      a["wall_s"] = max(0.0, end - a["started"])
      a["status"] = "lost"
  return attempts


def cell_status(cell: Cell) -> str:
  """``done`` | ``failed`` (the last attempt exited non-zero) | ``incomplete`` | ``missing``."""
  if os.path.exists(os.path.join(cell.workdir, DONE_FILE)):
    return "done"
  if not os.path.isdir(cell.workdir):
    return "missing"
  attempts = _attempts(cell.workdir)
  if attempts and attempts[-1].get("status") == "failed":
    return "failed"
  return "incomplete"


def finished_by_hash(folder: str) -> dict[str, str]:
  """``{config hash: workdir}`` of the finished cells under a study's workdirs folder."""
  found: dict[str, str] = {}
  for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    done = _read_json(os.path.join(folder, entry, DONE_FILE))
    if done and isinstance(done.get("config_hash"), str):
      found.setdefault(done["config_hash"], os.path.join(folder, entry))
  return found


def shared_source(study: Study, cell: Cell) -> str | None:
  """The finished workdir of a ``shares_cells_with`` study with ``cell``'s config hash, if any."""
  root = os.path.dirname(os.path.dirname(cell.workdir))
  for other in study.shares_cells_with:
    source = finished_by_hash(os.path.join(root, other)).get(cell.config_hash)
    if source is not None:
      return source
  return None


def link_shared_cell(study: Study, cell: Cell) -> str | None:
  """Makes a missing ``cell`` a relative symbolic link to its shared source; returns the source."""
  if os.path.lexists(cell.workdir):
    return None
  source = shared_source(study, cell)
  if source is not None:
    os.makedirs(os.path.dirname(cell.workdir), exist_ok=True)
    os.symlink(os.path.relpath(source, os.path.dirname(cell.workdir)), cell.workdir)
  return source


def shared_from(cell: Cell) -> str:
  """The study a linked cell's run belongs to (``''`` for a cell trained here)."""
  if not os.path.islink(cell.workdir):
    return ""
  return os.path.basename(os.path.dirname(os.path.realpath(cell.workdir)))


def _has_previous_run(workdir: str) -> bool:
  return bool(_attempts(workdir)) or any(
    os.path.exists(os.path.join(workdir, name)) for name in ("config.json", "checkpoints")
  )


def _begin_attempt(cell: Cell, resume: bool) -> dict[str, Any]:
  attempt = {"kind": "train", "started": time.time(), "resume": resume, "wall_s": None}
  path = os.path.join(cell.workdir, STATE_FILE)
  state = _read_json(path) or {
    "cell_id": cell.cell_id,
    "config_hash": cell.config_hash,
    "overrides": [f"{k}={format_value(v)}" for k, v in cell.overrides],
    "attempts": [],
  }
  state["attempts"] = _attempts(cell.workdir) + [attempt]
  _write_json(path, state)
  return attempt


def _finish_attempt(path: str, attempt: dict[str, Any], returncode: int | None) -> None:
  """Records how ``attempt`` (the last one of the state file ``path``) ended: its wall time, its
  return code and ``ok`` / ``interrupted`` (no return code) / ``failed``."""
  attempt["wall_s"] = time.time() - attempt["started"]
  attempt["returncode"] = returncode
  attempt["status"] = "ok" if returncode == 0 else "interrupted" if returncode is None else "failed"
  state = _read_json(path) or {"attempts": [attempt]}
  state["attempts"] = state.get("attempts", [])[:-1] + [attempt]
  _write_json(path, state)


def _end_attempt(cell: Cell, attempt: dict[str, Any], returncode: int | None) -> None:
  _finish_attempt(os.path.join(cell.workdir, STATE_FILE), attempt, returncode)
  if returncode == 0:
    attempts = _attempts(cell.workdir)
    _write_json(
      os.path.join(cell.workdir, DONE_FILE),
      {
        "cell_id": cell.cell_id,
        "config_hash": cell.config_hash,
        "wall_time_s": sum(a["wall_s"] for a in attempts),
        "attempts": len(attempts),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
      },
    )


# ----------------------------------------------------------------------------- analysis state


def checkpoint_problem(job: AnalysisJob) -> str | None:
  """Why ``job``'s checkpoint cannot be analysed (``no checkpoint at step N``), else None."""
  from experiments import workdir as workdir_lib

  saved = workdir_lib.checkpoint_steps(job.cell.workdir)
  if job.step is None:
    return None if saved else "no checkpoint"
  if job.step in saved:
    return None
  return f"no checkpoint at step {job.step}"


def analysis_status(job: AnalysisJob) -> str:
  """``done`` | ``stale`` (done with other ``args``; run again) | ``waiting`` (the cell is not
  finished) | ``no checkpoint`` | ``failed`` | ``incomplete`` (interrupted) | ``pending``."""
  marker = _read_json(os.path.join(job.out_dir, ANALYZED_FILE))
  if marker is not None:
    return "done" if marker.get("args", []) == list(job.args) else "stale"
  if cell_status(job.cell) != "done":
    return "waiting"
  if checkpoint_problem(job):
    return "no checkpoint"
  state = _read_json(os.path.join(job.out_dir, ANALYZE_STATE_FILE)) or {}
  attempts = state.get("attempts", [])
  if not attempts:
    return "pending"
  return "failed" if attempts[-1].get("status") == "failed" else "incomplete"


def _begin_analysis(job: AnalysisJob) -> dict[str, Any]:
  os.makedirs(job.out_dir, exist_ok=True)
  attempt = {"kind": "analyze", "started": time.time(), "wall_s": None}
  path = os.path.join(job.out_dir, ANALYZE_STATE_FILE)
  state = _read_json(path) or {"attempts": []}
  state["attempts"] = [a for a in state["attempts"] if a.get("wall_s") is not None] + [attempt]
  _write_json(path, state)
  return attempt


def _end_analysis(job: AnalysisJob, attempt: dict[str, Any], returncode: int | None) -> None:
  """Records the attempt; exit 0 writes ``ANALYZED.json`` (the marker that it is done)."""
  _finish_attempt(os.path.join(job.out_dir, ANALYZE_STATE_FILE), attempt, returncode)
  if returncode == 0:
    _write_json(
      os.path.join(job.out_dir, ANALYZED_FILE),
      {
        "cell_id": job.cell.cell_id,
        "step": FINAL if job.step is None else job.step,
        "args": list(job.args),
        "wall_s": attempt["wall_s"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
      },
    )


def _last_error(path: str) -> str:
  """The last ``error:`` line (else the last non-empty line) of a log."""
  try:
    with open(path, errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ""
  errors = [line for line in lines if line.startswith("error:")]
  return (errors or lines or [""])[-1][:300]


# ----------------------------------------------------------------------------- running

CommandFactory = Callable[[Cell, bool, Sequence[str]], list[str]]


def main_command(
  cell: Cell, resume: bool, extra: Sequence[str], base_config: str, module: str = "experiments.main"
) -> list[str]:
  """``python -m experiments.main --config=... --workdir=... [--resume] --config.K=V ...``."""
  workdir = os.path.abspath(cell.workdir)
  cmd = [sys.executable, "-m", module, f"--config={base_config}", f"--workdir={workdir}"]
  return cmd + (["--resume"] if resume else []) + cell.override_args() + list(extra)


def analyze_command(job: AnalysisJob, module: str = ANALYZE_MODULE) -> list[str]:
  """``python -m experiments.analyze WORKDIR [--step N] --out OUT ARGS``."""
  cmd = [sys.executable, "-m", module, os.path.abspath(job.cell.workdir)]
  cmd += [] if job.step is None else [f"--step={job.step}"]
  return cmd + [f"--out={os.path.abspath(job.out_dir)}", *job.args]


AnalyzeFactory = Callable[[AnalysisJob], list[str]]


def analyze_available() -> bool:
  try:
    return importlib.util.find_spec(ANALYZE_MODULE) is not None
  except ImportError:
    return False


class Interrupted(KeyboardInterrupt):
  """SIGTERM while cells were running (Ctrl-C raises a plain KeyboardInterrupt)."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


@dataclasses.dataclass
class RunReport:
  launched: list[str] = dataclasses.field(default_factory=list)  # "cell_id" or "cell_id (resume)"
  skipped: list[str] = dataclasses.field(default_factory=list)
  failed: dict[str, str] = dataclasses.field(default_factory=dict)  # cell_id -> last error
  waiting: list[str] = dataclasses.field(default_factory=list)  # workdirs_of: not finished there
  analyzed: list[str] = dataclasses.field(default_factory=list)  # "cell_id@label"
  analyze_failed: dict[str, str] = dataclasses.field(default_factory=dict)  # "cell_id@label" ->
  no_checkpoint: dict[str, str] = dataclasses.field(default_factory=dict)  # "cell_id@label" ->
  notes: list[str] = dataclasses.field(default_factory=list)


def run_cells(
  study: Study,
  cells: Sequence[Cell],
  *,
  jobs: int = 1,
  command: CommandFactory | None = None,
  analyze: AnalyzeFactory | None = None,
  extra: Sequence[str] = (),
  cwd: str | None = None,
  log: Callable[[str], None] | None = None,
  poll_s: float = 0.05,
  kill_grace_s: float = 10.0,
) -> RunReport:
  """Runs the cells that are not done, then their analyses, ``jobs`` processes at a time.

  A study with ``workdirs_of`` trains nothing: its unfinished cells are reported as waiting.

  Args:
    command: ``(cell, resume, extra) -> argv`` (default: ``python -m experiments.main ...``).
    analyze: ``AnalysisJob -> argv``, run for each requested step of a finished cell when the
      study has ``analyze`` (default: :func:`analyze_command`; skipped with a note when
      ``experiments.analyze`` is absent).
    extra: ``--config.FIELD=VALUE`` arguments appended to every cell's command.

  Raises:
    Interrupted: on SIGTERM/Ctrl-C, after the children have been stopped.
  """
  if command is None:
    base = _resolve(study.base_config) or study.base_config
    base = os.path.abspath(base)

    def command(cell, resume, extra):
      return main_command(cell, resume, extra, base)

  log = log or _print
  report = RunReport()
  do_analyze = study.analyze is not None
  if do_analyze and analyze is None:
    if analyze_available():
      analyze = analyze_command
    else:
      do_analyze = False
      report.notes.append(f"analyze: {ANALYZE_MODULE} not found; analysis skipped")
      log(f"note: {report.notes[-1]}")

  def analyses_to_run(cell: Cell) -> list[AnalysisJob]:
    """The finished cell's analyses not done yet; notes the steps without a checkpoint."""
    todo = []
    for job in study.analysis_jobs(cell) if do_analyze else []:
      status = analysis_status(job)
      if status == "done":
        continue
      problem = checkpoint_problem(job)
      if problem:
        report.no_checkpoint[job.name] = problem
        log(f"note: {cell.cell_id}: {problem}; analysis {job.label} not run")
        continue
      if status == "stale":
        log(f"note: {job.name} was analysed with other args; analysing it again")
      todo.append(job)
    return todo

  pending: collections.deque[tuple[str, Cell, AnalysisJob | None]] = collections.deque()
  for cell in cells:
    status = cell_status(cell)
    if status == "missing" and link_shared_cell(study, cell):  # Never with workdirs_of.
      status = cell_status(cell)
      log(f"shared {cell.cell_id}: the finished run of {shared_from(cell)}")
    if status == "done":
      report.skipped.append(cell.cell_id)
      pending.extend(("analyze", cell, job) for job in analyses_to_run(cell))
    elif study.workdirs_of:
      report.waiting.append(cell.cell_id)
      log(f"waiting for {study.workdirs_of}: {cell.cell_id} ({status})")
    else:
      pending.append(("train", cell, None))
  total = sum(kind == "train" for kind, _, _ in pending)
  if study.workdirs_of:
    log(
      f"{len(report.skipped)} cell(s) of {study.workdirs_of} done, {len(report.waiting)} waiting "
      f"for {study.workdirs_of}, {len(pending)} analysis(es) to run"
    )
  elif report.skipped:
    log(f"{len(report.skipped)} cell(s) already done, {total} to run")

  running: dict[subprocess.Popen, tuple[str, Cell, AnalysisJob | None, dict[str, Any], Any]] = {}
  started = 0
  try:
    while pending or running:
      while pending and len(running) < max(1, jobs):
        kind, cell, job = pending.popleft()
        if kind == "train":
          os.makedirs(cell.workdir, exist_ok=True)
          resume = _has_previous_run(cell.workdir)
          argv = command(cell, resume, extra)
          log_path = os.path.join(cell.workdir, LOG_FILE)
          started += 1
          what = f"[{started}/{total}] {cell.cell_id}" + (" (resume)" if resume else "")
          report.launched.append(cell.cell_id + (" (resume)" if resume else ""))
          attempt = _begin_attempt(cell, resume)
        else:
          resume = False
          argv = analyze(job)
          attempt = _begin_analysis(job)
          log_path = os.path.join(job.out_dir, ANALYZE_LOG_FILE)
          what = f"analyze {job.name}"
        logf = open(log_path, "a")  # noqa: SIM115 - closed when the process ends.
        logf.write(
          f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {kind}"
          f"{' (resume)' if resume else ''}: {' '.join(argv)}\n"
        )
        logf.flush()
        proc = subprocess.Popen(
          argv,
          stdout=logf,
          stderr=subprocess.STDOUT,
          cwd=cwd,
          env=_child_env(jobs),
          start_new_session=True,  # Ctrl-C reaches only us; we stop the children ourselves.
          preexec_fn=_die_with_parent,
        )
        running[proc] = (kind, cell, job, attempt, logf)
        log(f"start {what}")
      time.sleep(poll_s)
      for proc in [p for p in running if p.poll() is not None]:
        kind, cell, job, attempt, logf = running.pop(proc)
        logf.close()
        if kind == "train":
          _end_attempt(cell, attempt, proc.returncode)
        else:
          _end_analysis(job, attempt, proc.returncode)
        if kind == "train" and proc.returncode == 0:
          log(f"done  {cell.cell_id} in {attempt['wall_s']:.1f}s")
          pending.extendleft(("analyze", cell, j) for j in reversed(analyses_to_run(cell)))
        elif kind == "train":
          error = _last_error(os.path.join(cell.workdir, LOG_FILE))
          report.failed[cell.cell_id] = f"exit {proc.returncode}: {error}"
          log(f"FAILED {cell.cell_id} (exit {proc.returncode}): {error}")
        elif proc.returncode == 0:
          report.analyzed.append(job.name)
          log(f"analysed {job.name} in {attempt['wall_s']:.1f}s")
        else:
          error = _last_error(os.path.join(job.out_dir, ANALYZE_LOG_FILE))
          report.analyze_failed[job.name] = f"exit {proc.returncode}: {error}"
          log(f"ANALYZE FAILED {job.name} (exit {proc.returncode}): {error}")
  except BaseException:  # Ctrl-C, SIGTERM, or a bug here: leave no child behind.
    _stop(running, kill_grace_s, log)
    raise
  return report


def _child_env(jobs: int) -> dict[str, str]:
  """The environment, with the repository on PYTHONPATH (so ``-m experiments.main`` works from
  any directory) and, with several jobs, JAX's GPU memory preallocation off unless set (else the
  first process takes 75% of an accelerator's memory)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  if jobs > 1:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


def _die_with_parent() -> None:
  """In the child, before exec: SIGTERM it when the runner dies, even by SIGKILL (Linux)."""
  if sys.platform.startswith("linux"):
    import ctypes

    try:
      ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass


def _stop(running: dict, grace_s: float, log: Callable[[str], None]) -> None:
  """SIGTERM to every child's process group, SIGKILL after ``grace_s``; records the attempts."""
  if _main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # A second Ctrl-C must not cut this short.
  for proc in running:
    _signal_group(proc, signal.SIGTERM)
  deadline = time.time() + grace_s
  for proc in running:
    try:
      proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      _signal_group(proc, signal.SIGKILL)
      proc.wait()
  for kind, cell, job, attempt, logf in running.values():
    logf.write("=== interrupted: stopped by the study runner\n")
    logf.close()
    if kind == "train":
      _end_attempt(cell, attempt, None)
      log(f"stopped {cell.cell_id} (resumes next time)")
    else:
      _end_analysis(job, attempt, None)
      log(f"stopped analysis {job.name} (runs again next time)")
  running.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


# ----------------------------------------------------------------------------- aggregation


def read_evals(workdir: str) -> list[dict[str, Any]]:
  """The ``eval`` records of ``workdir/metrics.jsonl``, one per epoch (the last one wins)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  by_epoch: dict[Any, dict[str, Any]] = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except ValueError:
        continue  # A line cut short by a kill.
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
    attempts = _attempts(cell.workdir) if os.path.isdir(cell.workdir) else []
    done = _read_json(os.path.join(cell.workdir, DONE_FILE)) if status == "done" else None
    train_attempts = [a for a in attempts if a.get("kind", "train") == "train"]
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
    row["error"] = _last_error(os.path.join(cell.workdir, LOG_FILE)) if status == "failed" else ""
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
    info["why"] = _last_error(os.path.join(job.out_dir, ANALYZE_LOG_FILE))
  elif status == "done":
    data = _read_json(os.path.join(job.out_dir, "analysis.json"))
    for column, path in metrics:
      value, problem = (None, "no readable analysis.json") if data is None else lookup(data, path)
      info["values"][column] = value
      if problem:
        info["problems"][column] = problem
  return info


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None, int]:
  """(mean, sample std with ddof=1 (None for n < 2), n)."""
  values = [float(v) for v in values if v is not None]
  if not values:
    return None, None, 0
  std = statistics.stdev(values) if len(values) > 1 else None
  return statistics.fmean(values), std, len(values)


def _fmt(x: float | None, digits: int = 4) -> str:
  return "-" if x is None else f"{x:.{digits}f}"


def _fmt_g(mean: float | None, std: float | None) -> str:
  """4 significant digits (analysis metrics span many orders of magnitude), std 2."""
  if mean is None:
    return "-"
  return f"{mean:.4g}" + ("" if std is None else f" ± {std:.2g}")


def _fmt_ms(mean: float | None, std: float | None, digits: int = 4) -> str:
  if mean is None:
    return "-"
  return _fmt(mean, digits) + ("" if std is None else f" ± {_fmt(std, digits)}")


def _group_label(study: Study, key: tuple) -> str:
  return ", ".join(
    f"{f}={'(base)' if v is None else format_value(v)}"
    for f, v in zip(study.group_by, key, strict=True)
  )


def summarize(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """One dict per group: counts, mean/std of each metric, wall time, time to target.

  Ordered by the group_by fields, each field's values in the order the study lists them.
  """
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for row in rows:
    groups.setdefault(row["_group"], []).append(row)
  orders = [
    list(dict.fromkeys(_norm_key((k[i],))[0] for k in groups)) for i in range(len(study.group_by))
  ]

  def rank(key: tuple) -> tuple[int, ...]:
    return tuple(orders[i].index(_norm_key((v,))[0]) for i, v in enumerate(key))

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
      paper = study.paper["values"].get(_norm_key(key))
      ours = g[f"{study.paper['metric']}_mean"]
      g["paper"] = paper
      g["ours_minus_paper"] = (
        None
        if paper is None or ours is None or not study.paper["comparable"]
        else ours * study.paper["scale"] - paper
      )
    out.append(g)
  return out


def _md_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> list[str]:
  out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  return out + ["| " + " | ".join(cells) + " |" for cells in lines]


def render_summary(
  study: Study, rows: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], plots: list[str]
) -> str:
  counts = collections.Counter(r["status"] for r in rows)
  md = [f"# Study `{study.name}`", ""]
  if study.description:
    md += [study.description, ""]
  md += [
    f"Generated by `python -m experiments.study {os.path.relpath(study.path, REPO)}` "
    "(`--only-aggregate` re-reads the workdirs).",
    "",
    f"* Base config: `{study.base_config}`",
    "* Fixed: "
    + (", ".join(f"`{k}={format_value(v)}`" for k, v in study.fixed.items()) or "(none)"),
    "* Grid: "
    + (
      "; ".join(f"`{k}` in {{{', '.join(map(format_value, vs))}}}" for k, vs in study.grid.items())
      or "(none)"
    ),
  ]
  if study.cells:
    md.append(f"* Extra cells: {len(study.cells)}")
  if study.workdirs_of:
    md.append(
      f"* Workdirs: those of study `{study.workdirs_of}` (same cells); this study trains "
      "nothing, it analyses them"
    )
  md += [
    f"* Seeds (`{study.seed_field}`): {', '.join(map(str, study.seeds))}",
    f"* Cells: {len(rows)} ("
    + ", ".join(
      f"{counts[s]} {s}" for s in ("done", "failed", "incomplete", "missing") if counts[s]
    )
    + ")",
  ]
  finished = [r for r in rows if r["status"] == "done" and r["wall_time_s"] is not None]
  walls = [r["wall_time_s"] for r in finished if not r.get("shared_from")]
  shared = collections.Counter(r["shared_from"] for r in finished if r.get("shared_from"))
  if walls and not study.workdirs_of:  # An analysis study's rows carry the other study's time.
    md.append(
      f"* Machine time: {sum(walls) / 3600:.2f} h of wall time over {len(walls)} finished runs "
      "(their wall times summed; each run uses the whole machine it ran on)"
    )
  for other, n in sorted(shared.items()):
    md.append(
      f"* Shared runs: {n} finished run(s) are study `{other}`'s (the same config hash, linked "
      "rather than trained again; `shared_from` in runs.csv); their time is counted there"
    )
  md += [
    "",
    "Mean ± sample standard deviation (ddof=1) over the finished seeds of each group, at the "
    "final epoch (no ± when n=1); `n` counts finished runs (`2 of 3` when some are not "
    "finished). Wall time is "
    "per run, summed over resumed attempts (compilation and evaluation included).",
    "",
  ]
  header = list(study.group_by) + ["n"] + list(study.metrics)
  diff = bool(study.paper) and study.paper["comparable"]
  if study.paper:
    header += [f"paper ({study.paper['metric']})"] + (["ours − paper"] if diff else [])
  header += ["wall s"]
  table = []
  for g in groups:
    cells = ["(base)" if g[f] is None else format_value(g[f]) for f in study.group_by]
    cells.append(str(g["n"]) if g["n"] == g["n_asked"] else f"{g['n']} of {g['n_asked']}")
    cells += [_fmt_ms(g[f"{m}_mean"], g[f"{m}_std"]) for m in study.metrics]
    if study.paper:
      cells += [_fmt(g["paper"], 2)] + ([_fmt(g["ours_minus_paper"], 2)] if diff else [])
    cells.append(_fmt_ms(g["wall_time_s_mean"], g["wall_time_s_std"], 1))
    table.append(cells)
  md += _md_table(header, table) + [""]
  if study.paper:
    scale = study.paper["scale"]
    if diff:
      md += [
        f"Paper: {study.paper['source'] or '(no source given)'}. `ours − paper` compares our "
        f"mean {study.paper['metric']}" + (f" × {scale:g}" if scale != 1 else "") + " with it.",
        "",
      ]
    else:
      md += [
        f"Paper: {study.paper['source'] or '(no source given)'}, another dataset and scale: "
        "shown beside ours for the direction of the effect only, not subtracted.",
        "",
      ]
    known = {_norm_key(g["_key"]) for g in groups}
    orphan = [k for k in study.paper["values"] if k not in known]
    if orphan:
      md += [f"Paper rows without a group here: {', '.join(map(str, orphan))}.", ""]
    ours = [g[f"{study.paper['metric']}_mean"] for g in groups]
    ours = [abs(x) * scale for x in ours if x is not None]
    papers = [abs(x) for x in study.paper["values"].values()]
    if ours and papers and max(papers) > 10 * max(ours):
      md += [
        "**The paper's numbers look 100x ours: percent? Set `paper['scale'] = 100`.**",
        "",
      ]
  md += _paired_section(study, rows)
  if study.target_accuracy is not None:
    md += [
      f"## Time to reach {study.target_metric} ≥ {study.target_accuracy:g}",
      "",
      "First epoch whose evaluation reaches the target, and the training seconds up to it (sum "
      "of `train_epoch_time_s`: compilation and evaluation excluded); mean ± std over the "
      "finished runs that reached it.",
      "",
    ]
    table = []
    for g in groups:
      cells = ["(base)" if g[f] is None else format_value(g[f]) for f in study.group_by]
      cells += [
        f"{g['reached']} of {g['n']}",
        _fmt_ms(g["epochs_to_target_mean"], g["epochs_to_target_std"], 2),
        _fmt_ms(g["seconds_to_target_mean"], g["seconds_to_target_std"], 1),
      ]
      table.append(cells)
    md += _md_table(list(study.group_by) + ["reached", "epochs", "train s"], table) + [""]
  if study.analyze is not None and study.analyze.summarized:
    md += _render_analysis(study, groups)
  notes = []
  for g in groups:
    if g["n"] < g["n_asked"]:
      notes.append(f"{_group_label(study, g['_key'])}: n={g['n']} of {g['n_asked']}")
  for r in rows:
    if r["status"] == "failed":
      notes.append(f"`{r['cell_id']}` failed: {r['error']}")
  if study.analyze is not None and study.analyze.summarized:
    notes += _analysis_notes(study, rows)
  if notes:
    md += ["## Notes", ""] + [f"* {n}" for n in notes] + [""]
  if plots:
    md += ["## Curves", ""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in plots] + [""]
  return "\n".join(md)


def _paired(study: Study, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Each arm minus SGD and SAM of its cell group, per seed, on the first metric."""
  return stats.compare(rows, study.group_by, study.metrics[0], paper=study.paper)


def _paired_section(study: Study, rows: Sequence[dict[str, Any]]) -> list[str]:
  arms = stats.default_arm_fields(study.group_by)
  metric = study.metrics[0]
  return stats.render_section(
    _paired(study, rows),
    [f for f in study.group_by if f not in arms],
    metric,
    unit=stats.default_unit(metric, study.paper),
    mode=stats.effect_mode(study.paper) if study.paper else None,
  )


def _render_analysis(study: Study, groups: Sequence[dict[str, Any]]) -> list[str]:
  """``## Analysis``: one table per analysed checkpoint (step label)."""
  spec = study.analyze
  flags = " ".join(spec.args)
  md = [
    "## Analysis",
    "",
    "`python -m experiments.analyze` on each finished cell"
    + (f" with `{flags}`" if flags else "")
    + f", at checkpoint(s) {', '.join(spec.labels)}"
    + (" (`final`: the last one saved)" if FINAL in spec.labels else "")
    + f"; outputs in `WORKDIR/{ANALYSIS_DIR}/{study.name}/<checkpoint>/`. "
    "Mean ± sample std (ddof=1, no ± when n=1; 4 significant digits) over the analysed runs "
    "of each group; `n` counts them (`2 of 3`: the others are not finished, have no "
    "checkpoint there or failed; see Notes).",
    "",
  ]
  if spec.metrics:
    md += [
      "Columns (paths in `analysis.json`): "
      + ", ".join(f"{column} = `{path}`" for column, path in spec.metrics)
      + ".",
      "",
    ]
  columns = [column for column, _ in spec.metrics]
  for step, label in zip(spec.steps, spec.labels, strict=True):
    md += [f"### {label}: " + ("the final checkpoint" if step == FINAL else f"step {step}"), ""]
    table = []
    for g in groups:
      cells = ["(base)" if g[f] is None else format_value(g[f]) for f in study.group_by]
      n, asked = g[f"analyzed@{label}"], g["n_asked"]
      cells.append(str(n) if n == asked else f"{n} of {asked}")
      cells += [_fmt_g(g[f"{c}@{label}_mean"], g[f"{c}@{label}_std"]) for c in columns]
      table.append(cells)
    md += _md_table(list(study.group_by) + ["n", *columns], table) + [""]
  return md


def _analysis_notes(study: Study, rows: Sequence[dict[str, Any]]) -> list[str]:
  """Unanalysed finished cells (by reason) and metrics missing from analysis.json files."""
  notes = []
  for label in study.analyze.labels:
    infos = [(r["cell_id"], r["_analysis"][label]) for r in rows if r["status"] == "done"]
    by_status = collections.defaultdict(list)
    for cell_id, info in infos:
      by_status[info["status"]].append((cell_id, info))
    for why, count in sorted(
      collections.Counter(i["why"] for _, i in by_status["no checkpoint"]).items()
    ):
      notes.append(f"analysis {label}: {why} in {count} finished cell(s) (not analysed)")
    for cell_id, info in by_status["failed"]:
      notes.append(f"analysis {label} of `{cell_id}` failed: {info['why']}")
    if by_status["stale"]:
      notes.append(
        f"analysis {label}: {len(by_status['stale'])} cell(s) were analysed with other args "
        "(not counted; running the study again analyses them again)"
      )
    waiting = len(by_status["pending"]) + len(by_status["incomplete"])
    if waiting:
      notes.append(f"analysis {label}: {waiting} finished cell(s) not analysed yet")
    problems = collections.Counter(
      (column, problem)
      for _, info in by_status["done"]
      for column, problem in info["problems"].items()
    )
    paths = dict(study.analyze.metrics)
    for (column, problem), count in sorted(problems.items()):
      notes.append(
        f"{column}@{label}: `{paths[column]}` missing in {count} analysis.json: {problem}"
      )
  return notes


def plot_curves(
  study: Study, rows: Sequence[dict[str, Any]], groups: Sequence[dict[str, Any]], out_dir: str
) -> list[str]:
  """``curves_<metric>.png``: each group's mean over its finished seeds against epoch, with a
  +-1 std band. More than 6 groups and 2+ group_by fields: one panel per value of all but the
  last group_by field. Returns the file names written."""
  done = [r for r in rows if r["status"] == "done" and r["_evals"]]
  if not done:
    return []
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np
  from matplotlib.ticker import MaxNLocator

  split = len(study.group_by) >= 2 and len(groups) > 6
  panel_of = (lambda key: key[:-1]) if split else (lambda key: ())
  panels = list(dict.fromkeys(panel_of(g["_key"]) for g in groups))
  written = []
  for metric in study.metrics:
    if not any(metric in e for r in done for e in r["_evals"]):
      continue
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
      for g in groups:
        if panel_of(g["_key"]) != panel:
          continue
        curves: dict[Any, list[float]] = {}
        for r in done:
          if r["_group"] == g["_key"]:
            for e in r["_evals"]:
              if isinstance(e.get(metric), (int, float)):
                curves.setdefault(e["epoch"], []).append(float(e[metric]))
        if not curves:
          continue
        epochs = sorted(curves)
        mean = np.array([np.mean(curves[e]) for e in epochs])
        std = np.array([np.std(curves[e], ddof=1) if len(curves[e]) > 1 else 0.0 for e in epochs])
        key = g["_key"][-1:] if split else g["_key"]
        label = ", ".join("(base)" if v is None else format_value(v) for v in key) or study.name
        label += f" (n={g['n']})"
        (line,) = ax.plot(epochs, mean, "o-" if len(epochs) < 30 else "-", ms=3, label=label)
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
      title = ", ".join(
        f"{f}={'(base)' if v is None else format_value(v)}"
        for f, v in zip(study.group_by[:-1], panel, strict=False)
      )
      ax.set_title(title, fontsize=9)
      ax.set_xlabel("epoch")
      ax.xaxis.set_major_locator(MaxNLocator(integer=True))
      ax.set_ylabel(metric)
      ax.grid(alpha=0.3)
      legend_title = study.group_by[-1] if split else ", ".join(study.group_by)
      ax.legend(fontsize=7, title=legend_title, title_fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
      ax.axis("off")
    fig.suptitle(f"{study.name}: {metric} (mean ± 1 std over seeds)", fontsize=10)
    fig.tight_layout()
    name = f"curves_{_slug(metric)}.png"
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    written.append(name)
  return written


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
  to ``out_dir``."""
  os.makedirs(out_dir, exist_ok=True)
  rows = collect_runs(study, cells)
  groups = summarize(study, rows)
  _write_csv(os.path.join(out_dir, "runs.csv"), rows)
  _write_csv(os.path.join(out_dir, "summary.csv"), groups)
  stats.write_csv(os.path.join(out_dir, stats.PAIRED_CSV), _paired(study, rows))
  plots = plot_curves(study, rows, groups, out_dir)
  with open(os.path.join(out_dir, "summary.md"), "w") as f:
    f.write(render_summary(study, rows, groups, plots))
  return {"rows": rows, "groups": groups, "plots": plots, "out_dir": out_dir}


# ----------------------------------------------------------------------------- command line


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):
    raise StudyError(message)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = _Parser(
    prog="python -m experiments.study",
    description="Run a study (a grid of experiments.main runs) and summarise it.",
    epilog="Extra --config.FIELD=VALUE arguments go to every cell, outside the config hash "
    "(machine-local settings such as dataset.data_dir). See docs/studies.md.",
  )
  parser.add_argument("study", help="study config file (get_study())")
  parser.add_argument("--jobs", type=int, default=1, help="cells run side by side (default 1)")
  parser.add_argument("--workdirs", default="workdirs", help="root of the cells' workdirs")
  parser.add_argument("--results", default=os.path.join("docs", "results"), help="results root")
  parser.add_argument("--only-aggregate", action="store_true", help="aggregate; run nothing")
  parser.add_argument("--dry-run", action="store_true", help="list cells and commands; run nothing")
  parser.add_argument("--cells", default="", help="run only cells whose id matches (globs, a,b)")
  args, rest = parser.parse_known_args(argv)
  for item in rest:
    if not item.startswith("--config.") or "=" not in item:
      raise StudyError(f"unrecognised argument {item}; see --help")
  if args.jobs < 1:
    raise StudyError(f"--jobs must be >= 1, got {args.jobs}")
  if args.only_aggregate and args.dry_run:
    raise StudyError("--only-aggregate and --dry-run exclude each other")
  return args, list(rest)


def select_cells(cells: Sequence[Cell], patterns: str) -> list[Cell]:
  if not patterns:
    return list(cells)
  globs = [p.strip() for p in patterns.split(",") if p.strip()]
  chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.cell_id, g) for g in globs)]
  if not chosen:
    raise StudyError(f"--cells {patterns} matches no cell (ids look like {cells[0].cell_id})")
  return chosen


def run(
  argv: Sequence[str] | None = None,
  *,
  command: CommandFactory | None = None,
  analyze: AnalyzeFactory | None = None,
  log: Callable[[str], None] | None = None,
) -> int:
  """Entry point; returns the exit status (0 ok, 1 some cell failed, 2 bad input, 130/143
  interrupted). ``command``/``analyze`` replace the commands run (tests)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  log = log or _print
  try:
    args, extra = parse_args(argv)
    study = load_study(args.study)
    cells = study.expand(args.workdirs)
    chosen = select_cells(cells, args.cells)
  except StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out_dir = os.path.join(args.results, study.name)

  if args.dry_run:
    base = os.path.abspath(_resolve(study.base_config) or study.base_config)
    for cell in chosen:
      status = cell_status(cell)
      source = shared_source(study, cell) if status == "missing" else None
      log(f"{status:10s} {cell.cell_id}")
      if source is not None:
        log(f"           would share {source}")
      elif status != "done" and study.workdirs_of:
        log(f"           waiting for {study.workdirs_of}")
      elif status != "done":
        resume = os.path.isdir(cell.workdir) and _has_previous_run(cell.workdir)
        argv_c = (command or (lambda c, r, e: main_command(c, r, e, base)))(cell, resume, extra)
        log("           " + " ".join(argv_c))
      for job in study.analysis_jobs(cell) if status == "done" else []:
        job_status = analysis_status(job)
        if job_status == "no checkpoint":
          log(f"           analysis {job.label}: {checkpoint_problem(job)}")
        elif job_status != "done":
          log(f"           analyze {job.label}: " + " ".join((analyze or analyze_command)(job)))
    log(f"{len(chosen)} cell(s); results would go to {out_dir}")
    return 0

  report = RunReport()
  if not args.only_aggregate:
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
      raise Interrupted(signum)

    in_main_thread = _main_thread()
    if in_main_thread:
      signal.signal(signal.SIGTERM, on_term)
    try:
      where = os.path.join(args.workdirs, study.workdirs_name)
      log(f"study {study.name}: {len(chosen)} cell(s) in {where}")
      report = run_cells(
        study, chosen, jobs=args.jobs, command=command, analyze=analyze, extra=extra, log=log
      )
    except KeyboardInterrupt as e:
      signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
      log("interrupted: the running cells were stopped; run the same command again to resume")
      return 128 + int(signum)
    finally:
      if in_main_thread:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)

  result = aggregate(study, cells, out_dir)
  counts = collections.Counter(r["status"] for r in result["rows"])
  log(
    f"results in {out_dir}: "
    + ", ".join(
      f"{counts[s]} {s}" for s in ("done", "failed", "incomplete", "missing") if counts[s]
    )
  )
  if study.analyze is not None and study.analyze.summarized:
    log(
      "analysed: "
      + ", ".join(
        f"{label} {sum(r['_analysis'][label]['status'] == 'done' for r in result['rows'])} "
        f"of {len(result['rows'])}"
        for label in study.analyze.labels
      )
    )
  failed = dict(report.failed)
  if args.only_aggregate and not study.workdirs_of:  # Those are the other study's to report.
    failed = {r["cell_id"]: r["error"] for r in result["rows"] if r["status"] == "failed"}
  for cell_id, error in failed.items():
    log(f"failed: {cell_id}: {error}")
  for name, error in report.analyze_failed.items():
    log(f"analysis failed: {name}: {error}")
  return 1 if failed or report.analyze_failed else 0


def _print(text: str) -> None:
  print(text, flush=True)


def _main_thread() -> bool:
  import threading

  return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
  raise SystemExit(run())
