"""Runs every requested part on one restored run and writes ``analysis.json`` and its PNGs."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from experiments.analyze import ascent, corrupted, hessian, landscape, spectrum, variance
from experiments.analyze.convolution import convolution_note
from experiments.analyze.figures import write_run_figures
from experiments.analyze.restored import Restored
from experiments.analyze.settings import BATCH_NORM, PARTS, Run, Settings
from experiments.analyze.workdirs import corrupted_skip_reason

# Each part's ``measure(restored, model)``, in the order of PARTS.
MEASUREMENTS = {
  "hessian": hessian.measure,
  "spectrum": spectrum.measure,
  "landscape": landscape.measure,
  "variance": variance.measure,
  "ascent": ascent.measure,
  "corrupted": corrupted.measure,
}


def analyze_run(run: Run, settings: Settings, out_dir: str) -> dict[str, Any]:
  """Every requested part on ``run``; writes ``out_dir/analysis.json`` and the PNGs."""
  from tqdm.auto import tqdm

  os.makedirs(out_dir, exist_ok=True)
  corrupted_skip = corrupted_skip_reason(run, settings)
  todo = [p for p in PARTS if p not in settings.skip and not (p == "corrupted" and corrupted_skip)]
  bar = tqdm(
    total=len(todo) + 2, desc=run.label, disable=not settings.progress_bar, file=sys.stderr
  )
  timings: dict[str, float] = {}
  start = t0 = time.perf_counter()
  bar.set_postfix_str("restore")
  restored = Restored(run, settings)
  timings["restore"] = time.perf_counter() - t0
  bar.update(1)
  opt, sp = run.config.optimizer, run.config.sparse
  result: dict[str, Any] = {
    "workdir": os.path.abspath(run.workdir),
    "label": run.label,
    "step": run.step,
    "run": {
      "dataset": run.config.dataset.name,
      "model": run.config.model.name,
      "optimizer": opt.name,
      "rho": opt.rho,
      "num_directions": opt.zeroth_order.num_directions,
      "sparse_method": sp.method,
      "sparsity": None if sp.method == "dense" else sp.sparsity,
      "batch_size": run.config.batch_size,
      "seed": run.config.seed,
    },
    "settings": settings.to_json(),
    "num_params": restored.num_params,
    "active_coordinates": restored.active,
    "weight_mask": "dense (no mask)" if restored.weight_mask is None else "opt_state weight_mask",
    "batch_norm": dict(BATCH_NORM),
    "convolution": convolution_note(restored.conv, restored.mesh.devices.flat[0].platform),
  }
  keys = {"hessian": "hessian", "variance": "gradient_variance"}
  for part in PARTS:
    key = keys.get(part, part)
    if part not in todo:
      result[key] = {
        "skipped": corrupted_skip if part == "corrupted" else f"skipped (--skip {part})"
      }
      continue
    bar.set_postfix_str(part)
    t0 = time.perf_counter()
    result[key] = MEASUREMENTS[part](restored, restored.model_for(part))
    timings[part] = time.perf_counter() - t0
    bar.update(1)
  bar.set_postfix_str("figures")
  t0 = time.perf_counter()
  result["files"] = ["analysis.json", *write_run_figures(result, out_dir)]
  timings["figures"] = time.perf_counter() - t0
  timings["total"] = time.perf_counter() - start
  result["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
  with open(os.path.join(out_dir, "analysis.json"), "w") as f:
    json.dump(result, f, indent=2, allow_nan=False)
  bar.update(1)
  bar.close()
  return result
