"""A study's data model: the ``Study`` a config file describes, its ``Cell``s and analyses.

What each study key means (``STUDY_KEYS``), how a cell's id, config hash and workdir follow from
the study (``Study.expand``), and the few names shared by every other module of the runner.
Reading and checking a config file is ``validate``'s job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
from collections.abc import Sequence
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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
  "slurm": "{'partition': str, 'time_min': int, 'gpus_per_job': int, 'cpus_per_task': int, "
  "'mem_gb': number, 'extra': {sbatch flag: value}}: each job's resources with --launcher slurm "
  "(SLURM_KEYS; the --slurm-* flags override them); not part of the cells' hash",
  "target_accuracy": "number: report epochs and training seconds to reach it",
  "target_metric": "the eval key compared with target_accuracy (default test_accuracy)",
  "description": "free text, shown at the top of summary.md",
  "frontier": "{'cost': path of a cost table (JSON whose 'cost' maps each arm to its step time "
  "relative to SGD's: `python -m benchmarks.step_cost --study STUDY --json PATH`), 'arm_field': "
  "the group_by field whose value names an arm (default: the optimizer fields)}: frontier.png, "
  "frontier.csv and a '## Frontier' section (each arm's paired gain over SGD against its cost)",
}
PAPER_KEYS = {"source", "metric", "scale", "values", "comparable", "effect"}
# How the paper's own difference becomes the effect tested (``paper['effect']``; see
# ``stats.paper_effect``, which reads it from here).
EFFECT_MODES = ("difference", "relative_error", "none")
FRONTIER_KEYS = {
  "cost": "path of the cost table (relative to the repository root, or absolute)",
  "arm_field": "a group_by field whose value names the arm, e.g. 'label' (default: the optimizer "
  "fields of group_by, as in the paired differences)",
}
ANALYZE_KEYS = {
  "args": "[str]: extra flags of experiments.analyze (not --step/--out; default [])",
  "steps": "[int >= 0 or 'final']: checkpoint steps to analyse (default ['final'])",
  "metrics": "{column: dotted path in analysis.json, e.g. 'hessian.eigenvalues.0'} (default {})",
}
SLURM_KEYS = {
  "partition": "the partition (sbatch --partition)",
  "time_min": "each job's time limit in minutes (default 240); a longer cell is requeued and "
  "resumes from its checkpoint",
  "gpus_per_job": "GPUs per job (sbatch --gpus-per-node; default: none asked for)",
  "cpus_per_task": "CPUs per job (sbatch --cpus-per-task)",
  "mem_gb": "memory per job in GB (sbatch --mem)",
  "extra": "{flag: value}: more sbatch flags, e.g. {'account': 'abc', 'qos': 'high'}",
}
# How cells run (``--launcher``): subprocesses here (``pool``), or cluster jobs (``cluster``).
LAUNCHERS = ("local", "slurm", "submitit-local")
SLURM_FLAG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
FINAL = "final"
# A cell's status (``state.cell_status``), in the order reports count them.
STATUSES = ("done", "failed", "running", "queued", "incomplete", "missing")
IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
ANALYSIS_DIR = "analysis"
ANALYZE_MODULE = "experiments.analyze"


class StudyError(ValueError):
  """Bad study config or command line."""


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
class SlurmResources:
  """What each cluster job asks for (``SLURM_KEYS``); None: the cluster's default."""

  partition: str | None = None
  time_min: int = 240
  gpus_per_job: int | None = None
  cpus_per_task: int | None = None
  mem_gb: float | None = None
  extra: tuple[tuple[str, Any], ...] = ()  # (flag, value; True: the flag alone)

  def describe(self) -> str:
    parts = [f"partition {self.partition}"] if self.partition else []
    parts.append(f"{self.time_min} min")
    if self.gpus_per_job is not None:
      parts.append(f"{self.gpus_per_job} GPU(s)")
    if self.cpus_per_task is not None:
      parts.append(f"{self.cpus_per_task} CPU(s)")
    if self.mem_gb is not None:
      parts.append(f"{self.mem_gb:g} GB")
    parts += [f"--{k}" if v is True else f"--{k}={v}" for k, v in self.extra]
    return ", ".join(parts)


def slurm_resources(
  values: dict[str, Any], label: Any = lambda key: f"slurm.{key}"
) -> SlurmResources:
  """Checks ``values`` (``SLURM_KEYS``; numbers may be given as text, from the command line).

  Args:
    label: ``key -> name`` in error messages (``slurm.mem_gb``, ``--slurm-mem-gb``).

  Raises:
    StudyError: naming the key and what it allows.
  """
  unknown = sorted(set(values) - set(SLURM_KEYS))
  if unknown:
    raise StudyError(
      f"unknown key(s) in slurm: {', '.join(unknown)}; valid: {', '.join(SLURM_KEYS)}"
    )
  out: dict[str, Any] = {}

  def number(key: str, kind: type, minimum: float, strict: bool = False) -> None:
    value = values.get(key)
    if value is None:
      return
    try:
      parsed = None if isinstance(value, bool) else kind(value)
      if parsed is not None and float(value) != parsed:  # 2.5 or "2.5" for an integer.
        parsed = None
    except (TypeError, ValueError):
      parsed = None
    if parsed is None or not (parsed > minimum if strict else parsed >= minimum):  # nan too.
      what = "an integer" if kind is int else "a number"
      raise StudyError(f"{label(key)} must be {what} {'>' if strict else '>='} {minimum:g}, "
                       f"got {value!r}")  # fmt: skip
    out[key] = parsed

  number("time_min", int, 1)
  number("gpus_per_job", int, 0)
  number("cpus_per_task", int, 1)
  number("mem_gb", float, 0, strict=True)
  partition = values.get("partition")
  if partition is not None:
    if (
      not isinstance(partition, str) or not partition.strip() or any(c.isspace() for c in partition)
    ):
      raise StudyError(f"{label('partition')} must be a partition name, got {partition!r}")
    out["partition"] = partition
  extra = values.get("extra") or {}
  if not isinstance(extra, dict) or not all(
    isinstance(k, str) and SLURM_FLAG_RE.match(k) and isinstance(v, str | int | float | bool)
    for k, v in extra.items()
  ):
    raise StudyError(
      f"{label('extra')} must map sbatch flag names (letters, digits, -_) to values, e.g. "
      f"account=abc; got {extra!r}"
    )
  out["extra"] = tuple((k, v if v is True else str(v)) for k, v in sorted(extra.items()))
  return SlurmResources(**out)


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
class FrontierSpec:
  """The study's ``frontier``: where the cost table is, and which field names an arm (``None``:
  the optimizer fields of ``group_by``, as in the paired differences)."""

  cost: str
  arm_field: str | None = None


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
  frontier: FrontierSpec | None = None
  slurm: dict[str, Any] = dataclasses.field(default_factory=dict)  # Checked: slurm_resources.

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
        readable = [slug(format_value(v)) for v in combo.values()] + [f"s{slug(str(seed))}"]
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


def slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text)[:40] or "_"


def config_hash(base_config: str, overrides: Sequence[tuple[str, Any]]) -> str:
  """8 hex digits of sha256 over the base config path and the sorted override texts."""
  texts = sorted(f"{k}={format_value(v)}" for k, v in overrides)
  blob = json.dumps({"base_config": os.path.normpath(base_config), "overrides": texts})
  return hashlib.sha256(blob.encode()).hexdigest()[:8]


def norm_key(key: tuple) -> tuple[str, ...]:
  return tuple("" if v is None else format_value(v) for v in key)


def resolve_config(path: str) -> str | None:
  for candidate in (path, os.path.join(REPO, path)):
    if os.path.isfile(candidate):
      return candidate
  return None


def analyze_available() -> bool:
  """Whether ``experiments.analyze`` is there to run (without it, analyses are skipped with a
  note and its flags are not checked)."""
  try:
    return importlib.util.find_spec(ANALYZE_MODULE) is not None
  except ImportError:
    return False
