"""The PNGs of one analysis, and the comparison figures (and ``comparison.json``) of several."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.analyze.settings import NUM_EIGENVALUES


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)
  return path


def _density(spectrum: dict[str, Any]):
  import zosam_jax.diagnostics as zd

  nodes = np.asarray([np.nan if v is None else v for v in spectrum["nodes"]], np.float32)
  weights = np.asarray([0.0 if v is None else v for v in spectrum["weights"]], np.float32)
  ok = np.isfinite(nodes)
  grid, density = zd.spectral_density(nodes[ok], weights[ok])
  return np.asarray(grid), np.asarray(density)


def plot_spectrum(ax, spectrum: dict[str, Any], label: str | None = None) -> None:
  grid, density = _density(spectrum)
  ax.semilogy(grid, density + 1e-7, label=label)  # PyHessian's plot: density + 1e-7, log y.
  ax.set_xlabel("eigenvalue")
  ax.set_ylabel("density (log scale)")


def plot_landscape_1d(ax, land: dict[str, Any], label: str | None = None) -> None:
  one = land["one_dimensional"]
  ax.plot(one["alphas"], one["losses"], "o-", markersize=3, label=label)
  ax.set_xlabel("alpha (filter-normalised direction)")
  ax.set_ylabel("training loss")
  ax.grid(alpha=0.3)


def plot_landscape_2d(ax, land: dict[str, Any]) -> Any:
  two = land["two_dimensional"]
  losses = np.asarray(
    [[np.nan if v is None else v for v in row] for row in two["losses"]], np.float64
  )
  finite = losses[np.isfinite(losses)]
  lo, hi = float(finite.min()), float(finite.max())
  if lo > 0 and hi > lo * 1.01:  # Log-spaced levels resolve the basin and the walls.
    levels = np.geomspace(lo, hi, 20)
  else:
    levels = np.linspace(lo, hi + 1e-6, 20)
  a, b = np.meshgrid(two["alphas"], two["betas"], indexing="ij")
  filled = ax.contourf(a, b, losses, levels=levels, cmap="viridis")
  ax.contour(a, b, losses, levels=levels, colors="k", linewidths=0.3)
  ax.plot([0.0], [0.0], "r+", markersize=10)
  ax.set_xlabel("alpha")
  ax.set_ylabel("beta")
  ax.set_aspect("equal")
  return filled


def write_run_figures(result: dict[str, Any], out_dir: str) -> list[str]:
  """The PNGs of one analysis; returns their file names."""
  plt = _pyplot()
  title = f"{result['label']} (step {result['step']})"
  files = []
  if "nodes" in result["spectrum"]:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    plot_spectrum(ax, result["spectrum"])
    ax.set_title(f"Hessian eigenvalue density\n{title}", fontsize=9)
    files.append(_save(fig, os.path.join(out_dir, "spectral_density.png")))
  land = result["landscape"]
  if "one_dimensional" in land:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    plot_landscape_1d(ax, land)
    ax.set_title(f"1-D loss landscape ({land['examples']} training examples)\n{title}", fontsize=9)
    files.append(_save(fig, os.path.join(out_dir, "landscape_1d.png")))
    fig, ax = plt.subplots(figsize=(5, 4.2))
    filled = plot_landscape_2d(ax, land)
    fig.colorbar(filled, ax=ax, label="training loss")
    ax.set_title(f"2-D loss landscape\n{title}", fontsize=9)
    files.append(_save(fig, os.path.join(out_dir, "landscape_2d.png")))
  return [os.path.basename(f) for f in files]


def _bars(ax, groups: Sequence[str], series: dict[str, Sequence[float | None]], errors=None):
  """Grouped bars: one group per entry of ``groups``, one bar per series (run)."""
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(groups))
  for i, (label, values) in enumerate(series.items()):
    vals = [np.nan if v is None else v for v in values]
    err = None
    if errors is not None:
      err = [0.0 if e is None else e for e in errors[label]]
    ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=err, label=label, capsize=3)
  ax.set_xticks(x)
  ax.set_xticklabels(groups)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(fontsize=8)


def write_comparison(results: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
  """One figure per quantity over several analyses, and ``comparison.json``; returns the file
  names."""
  plt = _pyplot()
  os.makedirs(out_dir, exist_ok=True)
  labels = [r["label"] for r in results]
  if len(set(labels)) < len(labels):  # Same optimizer and sparse method: add the folder.
    labels = [f"{r['label']} ({os.path.basename(os.path.normpath(r['workdir']))})" for r in results]
  files = []

  def having(key, field):
    return [(lab, r[key]) for lab, r in zip(labels, results, strict=True) if field in r[key]]

  hess = having("hessian", "eigenvalues")
  if hess:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = [f"lambda_{i + 1}" for i in range(NUM_EIGENVALUES)]
    _bars(ax, names, {lab: h["eigenvalues"] for lab, h in hess})
    ax.set_title("top Hessian eigenvalues")
    files.append(_save(fig, os.path.join(out_dir, "eigenvalues.png")))
    fig, ax = plt.subplots(figsize=(5, 3.8))
    _bars(
      ax,
      ["trace"],
      {lab: [h["trace"]] for lab, h in hess},
      errors={lab: [h["trace_standard_error"]] for lab, h in hess},
    )
    ax.set_title("Hessian trace (Hutchinson, +- standard error)")
    files.append(_save(fig, os.path.join(out_dir, "trace.png")))
  for key, field, draw, title, name in (
    ("spectrum", "nodes", plot_spectrum, "Hessian eigenvalue density (SLQ)", "spectral_density"),
    (
      "landscape",
      "one_dimensional",
      plot_landscape_1d,
      "1-D filter-normalised loss landscapes",
      "landscape_1d",
    ),
  ):
    curves = having(key, field)
    if curves:  # One curve per run on one axis.
      fig, ax = plt.subplots(figsize=(6, 3.8))
      for lab, data in curves:
        draw(ax, data, lab)
      ax.legend(fontsize=8)
      ax.set_title(title)
      files.append(_save(fig, os.path.join(out_dir, f"{name}.png")))
  var = having("gradient_variance", "heads")
  if var:
    heads = list(var[0][1]["heads"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _bars(axes[0], heads, {lab: [v["heads"][h]["variance"] for h in heads] for lab, v in var})
    axes[0].set_title("update-direction variance across batches")
    _bars(axes[1], heads, {lab: [v["heads"][h]["relative"] for h in heads] for lab, v in var})
    axes[1].set_title("relative variance (variance / |mean|^2)")
    files.append(_save(fig, os.path.join(out_dir, "gradient_variance.png")))
  asc = having("ascent", "directions")
  if asc:
    names = [n for n in asc[0][1]["directions"] if n != "sam"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _bars(
      axes[0],
      names,
      {lab: [a["directions"][n]["cosine_mean"] for n in names] for lab, a in asc},
      errors={lab: [a["directions"][n]["cosine_std"] for n in names] for lab, a in asc},
    )
    axes[0].set_title("ascent cosine to the gradient (+- std over keys)")
    _bars(
      axes[1],
      names,
      {lab: [a["directions"][n]["increase_ratio"] for n in names] for lab, a in asc},
    )
    axes[1].set_title("loss increase / SAM's")
    files.append(_save(fig, os.path.join(out_dir, "ascent.png")))
  cor = having("corrupted", "mean_accuracy")
  if cor:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    _bars(
      ax,
      ["clean", "corrupted (mean)"],
      {lab: [c["clean_accuracy"], c["mean_accuracy"]] for lab, c in cor},
    )
    ax.set_title("accuracy: clean and Fashion-MNIST-C")
    files.append(_save(fig, os.path.join(out_dir, "corrupted.png")))
  summary = [
    {
      "label": lab,
      "workdir": r["workdir"],
      "step": r["step"],
      "active_coordinates": r["active_coordinates"],
      "eigenvalues": r["hessian"].get("eigenvalues"),
      "trace": r["hessian"].get("trace"),
      "trace_standard_error": r["hessian"].get("trace_standard_error"),
      "relative_variance": {
        h: v["relative"] for h, v in r["gradient_variance"].get("heads", {}).items()
      },
      "ascent_cosine": {n: d["cosine_mean"] for n, d in r["ascent"].get("directions", {}).items()},
      "corrupted_mean_accuracy": r["corrupted"].get("mean_accuracy"),
    }
    for lab, r in zip(labels, results, strict=True)
  ]
  path = os.path.join(out_dir, "comparison.json")
  with open(path, "w") as f:
    json.dump(summary, f, indent=2, allow_nan=False)
  files.append(path)
  return [os.path.basename(f) for f in files]
