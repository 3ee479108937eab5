"""The reduced-scale protocol every Fashion-MNIST study shares (one place, so arms cannot drift).

Real Fashion-MNIST (60k train / 10k test), the small CNN (0.21M parameters), batch 128, SGD with
momentum 0.9, weight decay 5e-4, cosine decay from 0.05 over 5 epochs (2,340 steps), RigL/MEST
updates every 100 steps until 75% of training, ERK layout. Every arm gets exactly these settings;
the SAM-family radius is the one tuned once for SAM on a held-out split (``rho_tuning.py``).
"""

from __future__ import annotations

import csv
import os

BASE_CONFIG = "experiments/configs/fashion_mnist_default.py"
NUM_EPOCHS = 5
SEEDS = [0, 1, 2]
RESULTS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "results")

FIXED = {
  "num_epochs": NUM_EPOCHS,
  "batch_size": 128,
  "optimizer.learning_rate": 0.05,
  "optimizer.momentum": 0.9,
  "optimizer.weight_decay": 5e-4,
  "optimizer.schedule": "cosine",
  "sparse.sparsity_distribution": "erk",
  "sparse.update_every": 100,
  "sparse.end_fraction": 0.75,
  "progress_bar": False,
  "log_every_steps": 117,
}

# The ZO-SAM paper's numbers (seed 000, CIFAR-10 ResNet-32; a different dataset and scale, shown
# for the direction of the effect only).
PAPER_SOURCE = "ZO-SAM (Ji et al., CVPR 2026), CIFAR-10 ResNet-32, Table 1"


def tuned_rho() -> float:
  """The rho with the best mean validation accuracy in ``docs/results/rho_tuning/runs.csv``."""
  path = os.path.join(RESULTS, "rho_tuning", "runs.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} is missing: run `python -m experiments.study experiments/studies/rho_tuning.py` "
      "first (the shared rho is tuned for SAM on held-out training data)"
    )
  scores: dict[float, list[float]] = {}
  with open(path) as f:
    for row in csv.DictReader(f):
      if row.get("status") == "done" and row.get("validation_accuracy"):
        rho = float(row["optimizer.rho"])
        scores.setdefault(rho, []).append(float(row["validation_accuracy"]))
  if not scores:
    raise ValueError(f"{path} has no finished run")
  return max(scores, key=lambda r: sum(scores[r]) / len(scores[r]))
