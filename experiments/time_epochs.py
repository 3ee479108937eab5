"""Per-epoch wall time of models x optimizers on Fashion-MNIST (a markdown table).

    python -m experiments.time_epochs [--models=cnn,resnet20] [--optimizers=sgd,sam,zo_sam]
                                      [--steps=40] [--workdir=workdirs/timing]

Each combination trains two short "epochs" of ``--steps`` steps (batch 128) on the first
``steps * 128`` training images and times the second (compilation and warm-up excluded),
then extrapolates to a full 60,000-image epoch (468 steps). ZO-SAM uses m=1 direction.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Sequence

from experiments import train
from experiments.configs import default

FULL_EPOCH_STEPS = 60_000 // 128


def time_one(model: str, optimizer: str, steps: int, workdir: str) -> dict[str, float]:
  """Seconds per step (second epoch) and the extrapolated full-epoch time."""
  config = default.get_config()
  config.model.name = model
  config.optimizer.name = optimizer
  config.optimizer.zeroth_order.num_directions = 1
  config.batch_size = 128
  config.dataset.train_subset = steps * 128
  config.dataset.test_subset = 500
  config.num_epochs = 2
  config.log_every_steps = steps
  config.checkpoint_every_steps = 10**9
  config.progress_bar = False
  if os.path.exists(workdir):
    shutil.rmtree(workdir)
  train.train_and_evaluate(config, workdir)
  evals = [r for r in train.read_metrics(workdir) if r["kind"] == "eval"]
  per_step = evals[1]["train_epoch_time_s"] / steps
  return {"per_step_s": per_step, "epoch_s": per_step * FULL_EPOCH_STEPS}


def run(argv: Sequence[str] | None = None) -> int:
  """Prints the table; returns the exit status."""
  parser = argparse.ArgumentParser(prog="python -m experiments.time_epochs", description=__doc__)
  parser.add_argument("--models", default="cnn,resnet20")
  parser.add_argument("--optimizers", default="sgd,sam,zo_sam")
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--workdir", default=os.path.join("workdirs", "timing"))
  args = parser.parse_args(argv)
  rows = []
  for model in args.models.split(","):
    for opt in args.optimizers.split(","):
      t0 = time.perf_counter()
      out = time_one(model, opt, args.steps, os.path.join(args.workdir, f"{model}_{opt}"))
      rows.append((model, opt, out))
      print(f"[{model}/{opt}: {time.perf_counter() - t0:.0f}s incl. compile]", flush=True)
  print(f"\n| model | optimizer | s/step | epoch (468 steps, extrapolated from {args.steps}) |")
  print("|---|---|---|---|")
  for model, opt, out in rows:
    print(f"| {model} | {opt} | {out['per_step_s']:.3f} | {out['epoch_s']:.0f} s |")
  return 0


if __name__ == "__main__":
  raise SystemExit(run())
