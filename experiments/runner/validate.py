"""Reads a study config file and checks it: ``load_study`` and ``parse_study``.

Every problem is one ``StudyError`` naming the key and what is allowed, raised before anything
runs (the command line prints it as one ``error:`` line and exits with status 2).
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from typing import Any

from experiments.runner import spec
from experiments.runner.spec import (
  ANALYZE_KEYS,
  EFFECT_MODES,
  FIELD_RE,
  FINAL,
  FRONTIER_KEYS,
  IDENT_RE,
  NAME_RE,
  PAPER_KEYS,
  SLURM_KEYS,
  STUDY_KEYS,
  AnalysisSpec,
  FrontierSpec,
  Study,
  StudyError,
  format_value,
  norm_key,
  resolve_config,
  slurm_resources,
  step_label,
)


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


def load_study(path: str) -> Study:
  """Runs ``get_study()`` of ``path`` and validates it."""
  if not os.path.isfile(path):
    raise StudyError(f"study config {path} does not exist")
  module_spec = importlib.util.spec_from_file_location(f"_study_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 - any error in the file is bad input.
    raise StudyError(f"study config {path} failed to load: {type(e).__name__}: {e}") from None
  if not hasattr(module, "get_study"):
    raise StudyError(f"study config {path} has no get_study()")
  try:
    raw = module.get_study()
  except Exception as e:  # noqa: BLE001
    raise StudyError(f"{path}: get_study() raised {type(e).__name__}: {e}") from None
  return parse_study(raw, path)


def check_keys(where: str, mapping: dict, valid: Any) -> None:
  """Raises ``StudyError`` naming the keys of ``mapping`` outside ``valid`` (``where: unknown
  key(s) ...; valid: ...``)."""
  unknown = sorted(str(k) for k in mapping if k not in valid)
  if unknown:
    raise StudyError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(valid)}")


def parse_study(raw: Any, path: str = "<study>") -> Study:
  """Validates a study dict (see ``STUDY_KEYS``)."""
  if not isinstance(raw, dict):
    raise StudyError(f"{path}: get_study() must return a dict, got {type(raw).__name__}")
  check_keys(path, raw, STUDY_KEYS)
  for key in ("name", "base_config"):
    if not isinstance(raw.get(key), str) or not raw[key]:
      raise StudyError(f"{path}: '{key}' (a non-empty string) is required")
  name = raw["name"]
  if not NAME_RE.match(name):
    raise StudyError(f"{path}: name {name!r} may only hold letters, digits, '.', '_' and '-'")
  if resolve_config(raw["base_config"]) is None:
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
  slurm = raw.get("slurm") or {}
  if not isinstance(slurm, dict):
    raise StudyError(f"slurm must be a dict of {', '.join(SLURM_KEYS)}, got {slurm!r}")
  slurm_resources(slurm)  # Checked now; the command line's --slurm-* may override it.

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
    slurm=dict(slurm),
  )
  if raw.get("paper") is not None:
    study.paper = _parse_paper(raw["paper"], study)
  cells = study.expand("")  # Raises on duplicate cells.
  if raw.get("frontier") is not None:
    study.frontier = _parse_frontier(raw["frontier"], study, cells)
  return study


def _parse_frontier(frontier: Any, study: Study, cells: Sequence[spec.Cell]) -> FrontierSpec:
  """``frontier``: a dict of ``FRONTIER_KEYS``; the cost table's path is checked when the study
  is aggregated (the benchmark that writes it may run after the study starts)."""
  if not isinstance(frontier, dict):
    raise StudyError(
      f"frontier must be a dict with keys {', '.join(FRONTIER_KEYS)}, got {frontier!r}"
    )
  check_keys("frontier", frontier, FRONTIER_KEYS)
  cost = frontier.get("cost")
  if not isinstance(cost, str) or not cost:
    raise StudyError(
      "frontier['cost'] (required) must be the path of a cost table, the JSON that "
      f"`python -m benchmarks.step_cost --study STUDY --json PATH` writes; got {cost!r}"
    )
  arm_field = frontier.get("arm_field")
  if arm_field is not None and (not isinstance(arm_field, str) or arm_field not in study.group_by):
    raise StudyError(
      f"frontier['arm_field'] must be one of group_by ({', '.join(study.group_by)}), got "
      f"{arm_field!r}"
    )
  if arm_field is None and "optimizer.name" not in study.group_by:
    raise StudyError(
      "frontier needs arms: give frontier['arm_field'] (a group_by field naming each arm) or put "
      "optimizer.name in group_by"
    )
  name_field = arm_field or "optimizer.name"
  if not any(format_value(c.value(name_field)) == "sgd" for c in cells):
    raise StudyError(
      f"frontier: no cell has {name_field}='sgd', the arm every gain is measured from"
    )
  return FrontierSpec(cost=cost, arm_field=arm_field)


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
  check_keys("analyze", analyze, ANALYZE_KEYS)
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
  if not args or not spec.analyze_available():
    return
  from experiments import analyze as analyze_lib  # Optional (analyze_available), so here.

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
  check_keys("paper", paper, PAPER_KEYS)
  source = paper.get("source", "")
  metric = paper.get("metric", study.metrics[0])
  scale = paper.get("scale", 1.0)
  comparable = paper.get("comparable", True)
  effect = paper.get("effect")
  if effect is not None and effect not in EFFECT_MODES:
    raise StudyError(f"paper['effect'] must be one of {', '.join(EFFECT_MODES)}, got {effect!r}")
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
    values[norm_key(key)] = float(number)
  return {
    "source": source,
    "metric": metric,
    "scale": float(scale),
    "values": values,
    "comparable": comparable,
    "effect": effect,
  }
