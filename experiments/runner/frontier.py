"""A study's cost-accuracy frontier: each arm's paired gain over SGD against its step cost.

For a study with the key ``frontier`` (``spec.FrontierSpec``), one row per (cell group, arm):
the arm's step cost relative to SGD from the cost table the study names (the JSON of
``python -m benchmarks.step_cost --study STUDY --json PATH``, whose ``cost`` maps each arm's
label to its step time over SGD's, measured in one process), its paired gain over SGD in the
study's first metric (the comparison against SGD of ``stats.compare``, the numbers of
``paired.csv``: nothing is recomputed here), and the fraction of SAM's gain it keeps, given only
where SAM's own 95% interval lies above 0 (a ratio of two noisy means, without an interval of its
own). Written as ``frontier.csv``, ``frontier.png`` (one panel per cell group) and the section
``## Frontier`` of ``summary.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from experiments import stats
from experiments.runner.spec import Study, resolve_config

SECTION = "## Frontier"
CSV = "frontier.csv"
FIGURE = "frontier.png"
SGD, SAM = stats.REFERENCES
REFERENCE = "reference"  # SGD's verdict: the point every gain is measured from.


def read_cost(path: str) -> tuple[dict[str, float], str, str | None]:
  """``(cost per arm label, the device it was measured on, problem)``; a missing or unreadable
  table gives no costs and the problem in words (the frontier is then drawn without them)."""
  found = resolve_config(path)
  if found is None:
    return (
      {},
      "",
      (
        f"the cost table `{path}` does not exist yet (write it with `python -m "
        f"benchmarks.step_cost --study STUDY --json {path}` on a quiet machine)"
      ),
    )
  try:
    with open(found) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    return {}, "", f"the cost table `{path}` is unreadable: {e}"
  table = data.get("cost") if isinstance(data, dict) else None
  if not isinstance(table, dict):
    return {}, "", f"the cost table `{path}` has no 'cost' mapping of arm to step time / SGD's"
  cost, bad = {}, []
  for arm, value in table.items():
    number = stats.number(value)
    if number is None or number <= 0:
      bad.append(str(arm))
    else:
      cost[str(arm)] = number
  problem = None
  if bad:
    problem = f"the cost table `{path}` has no positive number for {', '.join(bad)} (left out)"
  return cost, str(data.get("device", "")), problem


def _arm_label(arm: tuple) -> str:
  return ", ".join(map(stats.label, arm))


def _cell_text(cell_fields: Sequence[str], cell: tuple) -> str:
  return ", ".join(f"{f}={stats.label(v)}" for f, v in zip(cell_fields, cell, strict=True)) or (
    "all runs"
  )


def _comparison(
  comparisons: Sequence[Mapping[str, Any]],
  cell_fields: Sequence[str],
  cell: tuple,
  arm: tuple,
  reference: tuple,
) -> Mapping[str, Any] | None:
  """The comparison of ``arm`` against ``reference`` in cell group ``cell`` (None: none made)."""
  where = {f: stats.label(v) for f, v in zip(cell_fields, cell, strict=True)}
  for c in comparisons:
    if (
      c["arm"] == _arm_label(arm)
      and c["reference"] == _arm_label(reference)
      and all(c.get(f) == v for f, v in where.items())
    ):
      return c
  return None


def build(
  study: Study, rows: Sequence[Mapping[str, Any]], comparisons: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
  """The frontier of ``study`` from its runs and their paired comparisons (``summary.paired``,
  whose comparisons against SGD are the gains): ``{"rows", "notes", "cost_path", "device",
  "cell_fields", "metric", "unit"}``. One row per (cell group, arm), every arm of the study's
  rows whether finished or not, SGD's with gain 0 and verdict ``reference``."""
  if study.frontier is None:
    raise ValueError(f"study {study.name} has no 'frontier'")
  metric = study.metrics[0]
  arm_fields = stats.study_arm_fields(study)
  cell_fields = [f for f in study.group_by if f not in arm_fields]
  name_at = arm_fields.index(stats.NAME_FIELD) if stats.NAME_FIELD in arm_fields else None
  cost, device, problem = read_cost(study.frontier.cost)
  notes = [problem] if problem else []

  # Every arm of every cell group in the order of the study's cells, with its finished values.
  cells: dict[tuple, dict[tuple, list[float]]] = {}
  for row in rows:
    cell = tuple(stats.norm(row.get(f)) for f in cell_fields)
    arm = tuple(stats.norm(row.get(f)) for f in arm_fields)
    values = cells.setdefault(cell, {}).setdefault(arm, [])
    value = stats.number(row.get(metric))
    if row.get("status", "done") == "done" and value is not None:
      values.append(value)

  out = []
  for cell, arms in cells.items():
    sgds = stats.reference_arms(list(arms), SGD, name_at)
    sams = stats.reference_arms(list(arms), SAM, name_at)
    sgd = sgds[0] if len(sgds) == 1 else None
    sam = None
    if sgd is not None and len(sams) == 1 and sams[0] != sgd:
      sam = _comparison(comparisons, cell_fields, cell, sams[0], sgd)
    sam_gain = None
    if sam is not None and sam["ci_low"] is not None and sam["ci_low"] > 0:
      sam_gain = sam["mean"]
    for arm, values in arms.items():
      label = _arm_label(arm)
      row: dict[str, Any] = {f: stats.label(v) for f, v in zip(cell_fields, cell, strict=True)}
      row |= {
        "arm": label,
        "cost": cost.get(label),
        f"{metric}_mean": sum(values) / len(values) if values else None,
        "runs": len(values),
      }
      if arm == sgd:
        row |= {"n": len(values), "gain": 0.0, "ci_low": None, "ci_high": None}
        row |= {"half_width": None, "verdict": REFERENCE}
      else:
        c = None if sgd is None else _comparison(comparisons, cell_fields, cell, arm, sgd)
        row |= {
          "n": c["n"] if c else 0,
          "gain": c["mean"] if c else None,
          "ci_low": c["ci_low"] if c else None,
          "ci_high": c["ci_high"] if c else None,
          "half_width": c["half_width"] if c else None,
          "verdict": c["verdict"] if c else stats.INCONCLUSIVE,
        }
      row["sam_gain"] = sam_gain
      row["fraction_of_sam"] = (
        None if sam_gain is None or row["gain"] is None else row["gain"] / sam_gain
      )
      out.append(row)
    where = _cell_text(cell_fields, cell)
    if sgd is None:
      notes.append(f"{where}: {len(sgds)} SGD arms, so no gain over SGD")
    elif sam_gain is None:
      why = (
        f"{len(sams)} SAM arms"
        if len(sams) != 1
        else "SAM's gain over SGD has no 95% interval above 0"
      )
      notes.append(f"{where}: no fraction of SAM's gain ({why})")
  uncosted = list(dict.fromkeys(r["arm"] for r in out if r["cost"] is None))
  if uncosted and cost:
    notes.append(
      f"left off the figure, no cost in `{study.frontier.cost}`: {', '.join(uncosted)} "
      "(listed with an empty cost)"
    )
  return {
    "rows": out,
    "notes": notes,
    "cost_path": study.frontier.cost,
    "device": device,
    "cell_fields": cell_fields,
    "metric": metric,
    "unit": stats.default_unit(metric, study.paper),
  }


def write_csv(path: str, frontier: Mapping[str, Any]) -> None:
  """``frontier.csv``: one line per (cell group, arm), numbers in the metric's own units (as
  ``paired.csv`` writes them)."""
  stats.write_rows(path, frontier["rows"])


def _signed(x: float | None, unit: float) -> str:
  return "-" if x is None else f"{x * unit:+.2f}"


def render_section(frontier: Mapping[str, Any]) -> list[str]:
  """``## Frontier`` of ``summary.md``: the table and the notes (markdown lines)."""
  metric, unit, path = frontier["metric"], frontier["unit"], frontier["cost_path"]
  cell_fields = frontier["cell_fields"]
  units = "points (× 100)" if unit == 100 else f"× {unit:g}" if unit != 1 else "its units"
  md = [
    SECTION,
    "",
    f"Each arm's step cost relative to SGD (from `{path}`"
    + (f", {frontier['device']}" if frontier["device"] else "")
    + f") against its paired gain over SGD in final `{metric}`, in {units}: the mean over the "
    "paired seeds and its 95% t-interval, the numbers of the paired differences above "
    f"(`{stats.PAIRED_CSV}`). `fraction of SAM's gain` is gain(arm) / gain(SAM), a ratio of two "
    "noisy means with no interval of its own: given only where SAM's gain over SGD has a 95% "
    "interval above 0, and to be read as a rough share. The verdict is the rule's on the claim "
    f"that the arm raises `{metric}` over SGD. Figure: `{FIGURE}` (one panel per cell group, "
    f"error bars the 95% intervals); numbers: `{CSV}`.",
    "",
  ]
  header = [*cell_fields, "arm", "cost vs SGD", "gain over SGD [95% CI]"]
  header += ["fraction of SAM's gain", "verdict"]
  md += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  for r in frontier["rows"]:
    if r["verdict"] == REFERENCE:
      gain = "0 (reference)"
    elif r["gain"] is None:
      gain = "- (no paired seed)"
    elif r["ci_low"] is None:
      gain = f"{_signed(r['gain'], unit)} (n = {r['n']})"
    else:
      gain = (
        f"{_signed(r['gain'], unit)} [{_signed(r['ci_low'], unit)}, {_signed(r['ci_high'], unit)}]"
      )
    cells = [r[f] for f in cell_fields] + [r["arm"]]
    cells.append("-" if r["cost"] is None else f"{r['cost']:.2f}")
    cells.append(gain)
    cells.append("-" if r["fraction_of_sam"] is None else f"{r['fraction_of_sam']:.2f}")
    cells.append(r["verdict"])
    md.append("| " + " | ".join(str(c) for c in cells) + " |")
  md.append("")
  if frontier["notes"]:
    md += [f"* {n}" for n in frontier["notes"]] + [""]
  return md


def plot(frontier: Mapping[str, Any], out_dir: str, title: str) -> str | None:
  """``frontier.png``: per cell group, each costed arm's gain over SGD (error bars: the 95%
  interval) against its cost relative to SGD; None when no arm has both."""
  points = [r for r in frontier["rows"] if r["cost"] is not None and r["gain"] is not None]
  if not points:
    return None
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  cell_fields, unit = frontier["cell_fields"], frontier["unit"]
  panels = list(dict.fromkeys(tuple(r[f] for f in cell_fields) for r in points))
  fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
  costs = [r["cost"] for r in points]
  arms = list(dict.fromkeys(r["arm"] for r in points))
  colors = plt.get_cmap("tab20")  # One colour per arm, the same in every panel.
  for ax, panel in zip(axes.flat, panels, strict=True):
    mine = [r for r in points if tuple(r[f] for f in cell_fields) == panel]
    for r in mine:
      y = r["gain"] * unit
      err = None
      if r["ci_low"] is not None:
        err = [[y - r["ci_low"] * unit], [r["ci_high"] * unit - y]]
      color = colors(arms.index(r["arm"]) % 20)
      ax.errorbar(r["cost"], y, yerr=err, fmt="o", ms=4, capsize=3, color=color)
      ax.annotate(r["arm"], (r["cost"], y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.0, color="grey", lw=0.8)
    sam = next((r["sam_gain"] for r in mine if r["sam_gain"] is not None), None)
    if sam is not None:
      ax.axhline(sam * unit, color="grey", lw=0.8, ls="--", label="SAM's gain")
      ax.legend(fontsize=7)
    if max(costs) / min(costs) > 4:
      ax.set_xscale("log")
    ax.set_xlabel("step time relative to SGD")
    points_text = " (points)" if unit == 100 else ""
    ax.set_ylabel(f"gain over SGD, final {frontier['metric']}{points_text}")
    ax.set_title(", ".join(f"{f}={v}" for f, v in zip(cell_fields, panel, strict=True)), fontsize=9)
    ax.grid(alpha=0.3)
  fig.suptitle(f"{title}: paired gain over SGD (95% CI) against step cost", fontsize=10)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, FIGURE), dpi=110)
  plt.close(fig)
  return FIGURE


def write(study: Study, rows: Sequence[Mapping[str, Any]], comparisons, out_dir: str) -> dict:
  """Writes ``frontier.csv`` and ``frontier.png`` (when an arm has a cost and a gain) to
  ``out_dir``, removing stale ones; returns the frontier (:func:`build`)."""
  frontier = build(study, rows, comparisons)
  write_csv(os.path.join(out_dir, CSV), frontier)
  figure = os.path.join(out_dir, FIGURE)
  if plot(frontier, out_dir, study.name) is None and os.path.exists(figure):
    os.remove(figure)
  return frontier


def remove_stale(out_dir: str) -> None:
  """Removes ``frontier.csv``/``frontier.png`` of a study that no longer has a frontier."""
  for name in (CSV, FIGURE):
    path = os.path.join(out_dir, name)
    if os.path.exists(path):
      os.remove(path)
