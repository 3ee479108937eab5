"""Paired per-seed differences between a study's arms, their t-interval, and the verdict rule.

Pure functions over rows (dicts such as the lines of a study's ``runs.csv``, text or typed
values). The study runner puts their result into ``summary.md`` (section ``Paired differences``)
and ``paired.csv``; the command line re-renders both from a committed ``runs.csv`` alone, since
the workdirs are not kept::

  python -m experiments.stats docs/results/t1_accuracy/runs.csv \
    --study experiments/studies/t1_accuracy.py --write

The rule is written down in docs/studies.md ("Paired differences and verdicts").
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The values of a study's paper['effect'], and its reader for --study (the spec is below this).
from experiments.runner.spec import EFFECT_MODES
from experiments.runner.validate import load_study

NAME_FIELD = "optimizer.name"
REFERENCES = ("sgd", "sam")
LEVEL = 0.95
SECTION = "## Paired differences"
PAIRED_CSV = "paired.csv"

REPRODUCED = "reproduced"
SMALLER = "reproduced (smaller than the paper's effect)"
NOT_REPRODUCED = "not reproduced"
OPPOSITE = "not reproduced (opposite effect)"
INCONCLUSIVE = "inconclusive"


# ----------------------------------------------------------------------------- values


def norm(value: Any) -> Any:
  """One form for a value read from ``runs.csv`` (text) or from a study (typed), so they match:
  numbers as floats, bools as ``true``/``false``, missing as ``""``, other text as it is."""
  if value is None:
    return ""
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (int, float)):
    return float(value)
  text = str(value)
  try:
    return float(text)
  except ValueError:
    return text


def label(value: Any) -> str:
  """Display text of a normalised value (``0.9``, ``1``, ``rigl``; ``(base)`` when unset)."""
  if value == "":
    return "(base)"
  if isinstance(value, float):
    return f"{value:g}"
  return str(value)


def number(value: Any) -> float | None:
  """A finite metric value, else None (empty cell, unreached target, nan)."""
  if value is None or value == "" or isinstance(value, bool):
    return None
  try:
    x = float(value)
  except (TypeError, ValueError):
    return None
  return x if math.isfinite(x) else None


def _matches(row: Mapping[str, Any], selector: Mapping[str, Any]) -> bool:
  return all(norm(row.get(f)) == norm(v) for f, v in selector.items())


def by_seed(
  rows: Iterable[Mapping[str, Any]],
  selector: Mapping[str, Any],
  metric: str,
  pair_by: str = "seed",
) -> dict[Any, float]:
  """``{seed: metric}`` of the finished rows whose fields equal ``selector``'s values.

  Rows without a ``status`` column count as finished; rows without the metric are left out.
  Two finished rows with one seed make the pairing ambiguous: ValueError.
  """
  out: dict[Any, float | None] = {}
  for row in rows:
    if row.get("status", "done") != "done" or not _matches(row, selector):
      continue
    key = norm(row.get(pair_by))
    if key in out:
      raise ValueError(f"two finished runs of {dict(selector)} with {pair_by}={label(key)}")
    out[key] = number(row.get(metric))
  return {k: v for k, v in out.items() if v is not None}


def _seed_order(key: Any) -> tuple:
  return (isinstance(key, str), key)


def paired_differences(
  rows: Iterable[Mapping[str, Any]],
  arm: Mapping[str, Any],
  reference: Mapping[str, Any],
  metric: str,
  pair_by: str = "seed",
) -> list[tuple[Any, float]]:
  """``[(seed, arm's metric - reference's metric)]`` over the seeds present in both, in seed
  order. ``arm`` and ``reference`` are ``{field: value}`` selectors, each picking one run per
  seed: the arm's fields and those of its cell group (e.g. the sparse method and sparsity)."""
  rows = list(rows)
  a = by_seed(rows, arm, metric, pair_by)
  r = by_seed(rows, reference, metric, pair_by)
  return [(s, a[s] - r[s]) for s in sorted(set(a) & set(r), key=_seed_order)]


# ----------------------------------------------------------------------------- interval, rule


def t_interval(diffs: Sequence[float], level: float = LEVEL) -> tuple[float | None, float | None]:
  """(mean, half-width) of the Student-t interval at ``level`` over ``diffs`` (n - 1 degrees of
  freedom); the half-width is None for n < 2, and both are None for n = 0."""
  if not 0 < level < 1:
    raise ValueError(f"level must be in (0, 1), got {level}")
  n = len(diffs)
  if n == 0:
    return None, None
  mean = statistics.fmean(diffs)
  if n < 2:
    return mean, None
  from scipy.stats import t  # Here, so that importing the study runner does not load scipy.

  return mean, float(t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(diffs) / math.sqrt(n)


def verdict(
  ci_low: float | None,
  ci_high: float | None,
  paper_effect: float | None = None,
  direction: int = +1,
) -> str:
  """The verdict on the claim "the arm moves the metric in ``direction`` over the reference".

  ``[ci_low, ci_high]`` is the interval of (arm - reference); ``paper_effect`` the size of the
  claimed change (in the same units, counted in ``direction``; None or <= 0: no size claimed):

  * reproduced: the interval excludes 0 on the claimed side (labelled "smaller than the
    paper's effect" when it also lies entirely short of that effect);
  * not reproduced: the interval excludes 0 on the other side ("opposite effect"), or it
    includes 0 and lies entirely short of the paper's effect;
  * inconclusive: otherwise (it includes 0 and reaches the effect, or no effect is given),
    and when there is no interval (fewer than 2 seeds).
  """
  if direction not in (1, -1):
    raise ValueError(f"direction must be +1 or -1, got {direction}")
  if ci_low is None or ci_high is None:
    return INCONCLUSIVE
  lo, hi = sorted((direction * ci_low, direction * ci_high))
  effect = paper_effect if paper_effect is not None and paper_effect > 0 else None
  if lo > 0:
    return SMALLER if effect is not None and hi < effect else REPRODUCED
  if hi < 0:
    return OPPOSITE
  if effect is not None and hi < effect:
    return NOT_REPRODUCED
  return INCONCLUSIVE


def paper_effect(
  paper_arm: float | None,
  paper_reference: float | None,
  mode: str,
  scale: float,
  reference_mean: float | None,
) -> float | None:
  """The paper's gain of the arm over the reference, in our metric's units, or None.

  ``difference``: the paper's difference as it is (divided by ``scale``: paper percent, ours a
  fraction). ``relative_error``: for an accuracy (best value 1, ``scale`` in the paper's
  units), the share of the reference's error that the arm removes in the paper, applied to our
  reference's error (``reference_mean``): the paper's gain carried to our dataset's error level.
  ``none``, a missing number, or no gain in the paper: None.
  """
  if mode not in EFFECT_MODES:
    raise ValueError(f"effect mode must be one of {', '.join(EFFECT_MODES)}, got {mode!r}")
  if mode == "none" or paper_arm is None or paper_reference is None:
    return None
  gain = paper_arm - paper_reference
  if gain <= 0:
    return None
  if mode == "difference":
    return gain / scale
  if reference_mean is None or paper_reference >= scale:
    return None
  return gain / (scale - paper_reference) * (1 - reference_mean)


# ----------------------------------------------------------------------------- comparisons


def default_arm_fields(group_by: Sequence[str]) -> list[str]:
  """The ``group_by`` fields that make an arm: the optimiser's (``optimizer.*``) when the
  optimiser's name is one of them, else none (no arms to pair: a study of one optimiser)."""
  if NAME_FIELD not in group_by:
    return []
  return [f for f in group_by if f.startswith("optimizer.")]


def study_arm_fields(study: Any) -> list[str]:
  """The fields that make an arm in a study's paired differences: its frontier's ``arm_field``
  (a field naming each arm, such as ``label``) when it gives one, else
  :func:`default_arm_fields` of its ``group_by``."""
  frontier = getattr(study, "frontier", None)
  if frontier is not None and frontier.arm_field:
    return [frontier.arm_field]
  return default_arm_fields(study.group_by)


def default_unit(metric: str, paper: Mapping[str, Any] | None = None) -> float:
  """Factor from the metric's units to the displayed ones: the paper's scale for its metric,
  points (x 100) for another accuracy, else 1."""
  if paper and paper.get("metric") == metric:
    return float(paper.get("scale", 1.0))
  return 100.0 if metric.endswith("accuracy") else 1.0


def effect_mode(paper: Mapping[str, Any]) -> str:
  """``paper['effect']``, by default ``difference`` for a comparable paper (same dataset and
  scale) and ``relative_error`` for one from another dataset."""
  mode = paper.get("effect")
  if mode is None:
    return "difference" if paper.get("comparable", True) else "relative_error"
  return mode


def reference_arms(arms: Sequence[tuple], reference: str, name_at: int | None) -> list[tuple]:
  """The arms (tuples of normalised arm-field values) a reference names: its optimiser name (the
  value at ``name_at``, when the arm fields hold the name), or its whole label
  (``"zo_sam, 1"``)."""
  return [
    a
    for a in arms
    if (name_at is not None and a[name_at] == reference) or ", ".join(map(label, a)) == reference
  ]


def compare(
  rows: Iterable[Mapping[str, Any]],
  group_by: Sequence[str],
  metric: str,
  *,
  arm_fields: Sequence[str] | None = None,
  references: Sequence[str] = REFERENCES,
  paper: Mapping[str, Any] | None = None,
  direction: int = +1,
  level: float = LEVEL,
  pair_by: str = "seed",
) -> list[dict[str, Any]]:
  """Every arm minus each reference arm of its cell group, paired by seed.

  A cell group is a combination of the ``group_by`` fields that are not ``arm_fields``
  (default: ``default_arm_fields``). A reference is an optimiser name or an arm's label; a cell
  group with none, or several such arms (SAM at two radii), has no comparison against it. An
  arm that is an earlier reference is not compared with a later one (no SGD - SAM after
  SAM - SGD). ``paper`` (a study's, values keyed by ``group_by`` tuples) gives the effect
  sizes, for its own metric and the claimed direction +1 only. One dict per comparison: the cell
  fields, ``arm``, ``reference``, ``metric``, ``n``, ``seeds``, ``diffs``, ``mean``,
  ``half_width``, ``ci_low``, ``ci_high``, ``level``, ``effect`` and ``verdict``.
  """
  rows = [r for r in rows if r.get("status", "done") == "done"]
  arm_fields = list(default_arm_fields(group_by) if arm_fields is None else arm_fields)
  if not arm_fields:
    return []
  cell_fields = [f for f in group_by if f not in arm_fields]
  name_at = arm_fields.index(NAME_FIELD) if NAME_FIELD in arm_fields else None
  cells: dict[tuple, dict[tuple, None]] = {}  # Dicts as ordered sets: first appearance.
  for row in rows:
    cell = tuple(norm(row.get(f)) for f in cell_fields)
    cells.setdefault(cell, {})[tuple(norm(row.get(f)) for f in arm_fields)] = None
  values = {}
  if paper and paper.get("metric") == metric and direction == 1:
    values = {tuple(norm(v) for v in k): float(x) for k, x in paper.get("values", {}).items()}
  mode = effect_mode(paper) if values else "none"
  scale = float(paper.get("scale", 1.0)) if values else 1.0

  def paper_value(cell: tuple, arm: tuple) -> float | None:
    fields = dict(zip(cell_fields, cell, strict=True)) | dict(zip(arm_fields, arm, strict=True))
    return values.get(tuple(fields[f] for f in group_by))

  out = []
  for i, reference in enumerate(references):
    for cell, arms in cells.items():
      refs = reference_arms(list(arms), reference, name_at)
      if len(refs) != 1:
        continue
      (ref,) = refs
      earlier = {a for r in references[:i] for a in reference_arms(list(arms), r, name_at)}
      where = dict(zip(cell_fields, cell, strict=True))
      for arm in arms:
        if arm == ref or arm in earlier:
          continue
        sel_arm = where | dict(zip(arm_fields, arm, strict=True))
        sel_ref = where | dict(zip(arm_fields, ref, strict=True))
        pairs = paired_differences(rows, sel_arm, sel_ref, metric, pair_by)
        diffs = [d for _, d in pairs]
        mean, half = t_interval(diffs, level)
        ref_values = by_seed(rows, sel_ref, metric, pair_by)
        ref_mean = (
          statistics.fmean(ref_values[s] for s, _ in pairs) if pairs else None
        )  # Over the paired seeds: the reference's level that the paired runs share.
        effect = paper_effect(paper_value(cell, arm), paper_value(cell, ref), mode, scale, ref_mean)
        low = None if half is None else mean - half
        high = None if half is None else mean + half
        out.append(
          {
            **{f: label(v) for f, v in where.items()},
            "arm": ", ".join(map(label, arm)),
            "reference": ", ".join(map(label, ref)),
            "metric": metric,
            "n": len(pairs),
            "seeds": [s for s, _ in pairs],
            "diffs": diffs,
            "mean": mean,
            "half_width": half,
            "ci_low": low,
            "ci_high": high,
            "level": level,
            "effect": effect,
            "verdict": verdict(low, high, effect, direction),
          }
        )
  return out


# ----------------------------------------------------------------------------- output


def _signed(x: float | None, digits: int) -> str:
  return "-" if x is None else f"{x:+.{digits}f}"


def _digits(unit: float) -> int:
  return 2 if unit != 1 else 4  # Points: 2 decimals, like the papers; raw units need more.


def _unit_text(unit: float) -> str:
  return "in points (× 100)" if unit == 100 else f"× {unit:g}" if unit != 1 else "in its units"


def render_section(
  comparisons: Sequence[dict[str, Any]],
  cell_fields: Sequence[str],
  metric: str,
  *,
  unit: float = 1.0,
  mode: str | None = None,
  direction: int = +1,
  level: float = LEVEL,
) -> list[str]:
  """``## Paired differences`` of ``summary.md`` (markdown lines; none without comparisons)."""
  if not comparisons:
    return []
  digits = _digits(unit)
  seeds = sorted({s for c in comparisons for s in c["seeds"]}, key=_seed_order)
  show_effect = any(c["effect"] is not None for c in comparisons)
  pct = f"{level * 100:g}%"
  claim = "raises" if direction == 1 else "lowers"
  md = [
    SECTION,
    "",
    f"Final `{metric}` of each arm minus that of the reference arm of its cell group (the same "
    "values of every other `group_by` field), run by run with the same seed, "
    f"{_unit_text(unit)}; only seeds finished in both arms. Mean and {pct} confidence interval: "
    f"Student t over the n paired seeds (n − 1 degrees of freedom; no interval for n = 1). "
    f"The verdict is on the claim that the arm {claim} `{metric}` (the rule in docs/studies.md, "
    f'"Paired differences and verdicts"): reproduced when the interval excludes 0 on that '
    "side; not reproduced when it excludes 0 on the other side (opposite effect) or lies "
    "entirely short of the paper's effect; inconclusive otherwise.",
    "",
  ]
  if show_effect:
    how = {
      "difference": "the paper's own difference",
      "relative_error": "the share of the reference's error that the arm removes in the paper "
      "(another dataset), applied to our reference's error",
    }.get(mode or "", "from the paper")
    md += [f"`paper's effect`: the gain tested against, {how} (`paper['effect']`).", ""]
  header = [*cell_fields, "arm", *(f"s{label(s)}" for s in seeds), f"mean [{pct} CI]"]
  header += ["paper's effect"] if show_effect else []
  header += ["verdict"]
  for reference in dict.fromkeys(c["reference"] for c in comparisons):
    md += [f"Against `{reference}`:", ""]
    md += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for c in comparisons:
      if c["reference"] != reference:
        continue
      per_seed = dict(zip(c["seeds"], c["diffs"], strict=True))
      cells = [c[f] for f in cell_fields] + [c["arm"]]
      cells += [_signed(None if s not in per_seed else per_seed[s] * unit, digits) for s in seeds]
      cells.append(_mean_ci(c, unit, digits))
      if show_effect:
        cells.append(_signed(None if c["effect"] is None else c["effect"] * unit, digits))
      cells.append(c["verdict"])
      md.append("| " + " | ".join(cells) + " |")
    md.append("")
  md += [f"The numbers, in the metric's own units: `{PAIRED_CSV}`.", ""]
  return md


def _mean_ci(c: dict[str, Any], unit: float, digits: int) -> str:
  if c["mean"] is None:
    return "- (no paired seed)"
  if c["half_width"] is None:
    return f"{_signed(c['mean'] * unit, digits)} (n = {c['n']})"
  low, high = _signed(c["ci_low"] * unit, digits), _signed(c["ci_high"] * unit, digits)
  return f"{_signed(c['mean'] * unit, digits)} [{low}, {high}]"


def csv_rows(comparisons: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """``paired.csv``: one row per comparison, the per-seed differences as ``diff_s<seed>``."""
  seeds = sorted({s for c in comparisons for s in c["seeds"]}, key=_seed_order)
  out = []
  for c in comparisons:
    per_seed = dict(zip(c["seeds"], c["diffs"], strict=True))
    row = {k: v for k, v in c.items() if k not in ("seeds", "diffs")}
    row.update({f"diff_s{label(s)}": per_seed.get(s) for s in seeds})
    out.append(row)
  return out


def write_csv(path: str, comparisons: Sequence[dict[str, Any]]) -> None:
  """Writes ``paired.csv``, or removes a stale one when there is nothing to pair."""
  if not comparisons:
    if os.path.exists(path):
      os.remove(path)
    return
  write_rows(path, csv_rows(comparisons))


def write_rows(path: str, rows: Sequence[dict[str, Any]]) -> None:
  """A CSV of ``rows`` (the union of their keys, in order of appearance), floats to 12
  significant digits, ``None`` empty: ``paired.csv`` and the frontier's ``frontier.csv``."""
  fields = list(dict.fromkeys(k for r in rows for k in r))
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: _csv_value(r.get(k)) for k in fields})


def _csv_value(value: Any) -> Any:
  if value is None:
    return ""
  if isinstance(value, float):
    return f"{value:.12g}"  # Drops the float noise of a difference (0.0029, not 0.00290000...137).
  return value


def replace_section(markdown: str, section: Sequence[str]) -> str:
  """``markdown`` with its ``## Paired differences`` section replaced by ``section`` (removed
  when empty); a new one goes before the first other ``## `` section, where the runner puts it."""
  lines = markdown.split("\n")
  if SECTION in lines:
    start = lines.index(SECTION)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    del lines[start:end]
  else:
    start = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
  lines[start:start] = list(section)
  return "\n".join(lines)


# ----------------------------------------------------------------------------- command line


def read_runs(paths: Sequence[str]) -> list[dict[str, str]]:
  rows: list[dict[str, str]] = []
  for path in paths:
    with open(path, newline="") as f:
      rows += list(csv.DictReader(f))
  return rows


def _fields(text: str | None) -> list[str] | None:
  return None if text is None else [f.strip() for f in text.split(",") if f.strip()]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m experiments.stats",
    description="Paired per-seed differences against SGD and SAM, with t-intervals and "
    "verdicts, from runs.csv files alone (docs/studies.md).",
  )
  parser.add_argument("runs", nargs="+", help="runs.csv file(s); several are pooled")
  parser.add_argument("--study", help="study config: its group_by, first metric and paper")
  parser.add_argument("--group-by", help="FIELD,FIELD (default: the study's)")
  parser.add_argument("--arm", help="FIELD,FIELD: the group_by fields that make an arm")
  parser.add_argument("--metric", help="column compared (default: the study's first metric)")
  parser.add_argument(
    "--reference",
    action="append",
    help="an optimiser name or an arm label such as 'zo_sam, 1' (repeatable; default sgd, sam)",
  )
  parser.add_argument("--direction", type=int, choices=(1, -1), default=1, help="claimed sign")
  parser.add_argument("--effect", type=float, help="an effect size for every comparison (units)")
  parser.add_argument("--unit", type=float, help="display factor (default: points for accuracy)")
  parser.add_argument("--level", type=float, default=LEVEL)
  parser.add_argument(
    "--write",
    action="store_true",
    help="write paired.csv and the summary.md section beside the (single) runs.csv",
  )
  args = parser.parse_args(argv)
  group_by, metric, paper, study_arms = _fields(args.group_by), args.metric, None, None
  if args.study:
    spec = load_study(args.study)
    group_by = group_by or spec.group_by
    metric = metric or spec.metrics[0]
    paper = spec.paper
    study_arms = study_arm_fields(spec) if spec.frontier else None
  if not group_by or not metric:
    parser.error("give --study, or --group-by and --metric")
  if args.write and (len(args.runs) != 1 or args.effect is not None):
    parser.error("--write takes one runs.csv and no --effect (it writes the study's own)")
  arm_fields = _fields(args.arm) or study_arms
  comparisons = compare(
    read_runs(args.runs),
    group_by,
    metric,
    arm_fields=arm_fields,
    references=args.reference or REFERENCES,
    paper=paper,
    direction=args.direction,
    level=args.level,
  )
  if args.effect is not None:
    for c in comparisons:
      c["effect"] = args.effect
      c["verdict"] = verdict(c["ci_low"], c["ci_high"], args.effect, args.direction)
  arm_fields = arm_fields or default_arm_fields(group_by)
  section = render_section(
    comparisons,
    [f for f in group_by if f not in arm_fields],
    metric,
    unit=args.unit or default_unit(metric, paper),
    mode=effect_mode(paper) if paper else None,
    direction=args.direction,
    level=args.level,
  )
  print("\n".join(section) if section else "no comparison: no reference arm in any cell group")
  if args.write:
    folder = os.path.dirname(os.path.abspath(args.runs[0]))
    write_csv(os.path.join(folder, PAIRED_CSV), comparisons)
    summary = os.path.join(folder, "summary.md")
    if os.path.exists(summary):
      with open(summary) as f:
        text = f.read()
      with open(summary, "w") as f:
        f.write(replace_section(text, section))
  return 0


if __name__ == "__main__":
  sys.exit(main())
