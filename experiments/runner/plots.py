"""``curves_<metric>.png``: each group's mean curve over its finished seeds, with a std band."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from experiments.runner.spec import Study, format_value, slug


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
    name = f"curves_{slug(metric)}.png"
    fig.savefig(os.path.join(out_dir, name), dpi=110)
    plt.close(fig)
    written.append(name)
  return written
