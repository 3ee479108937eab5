"""P0, the positive control: a regime where SAM's gain over SGD is real at this scale.

In the 5-epoch protocol (``protocol.py``) SAM gains nothing over SGD, so a null for a cheaper SAM
there says nothing. Label noise is where SAM's gain is large (Foret et al. 2021, Table 4:
ResNet-32 CIFAR-10 at 40% symmetric noise, SGD 68.8 against SAM 93.4 at the end of training).
This study looks for that regime here, on held-out data only (the test set is never read):

* the first 10,000 Fashion-MNIST training examples with ``dataset.label_noise`` of them flipped
  (symmetric: to one of the other 9 classes, the same flips for every arm of a seed), validated on
  the next 10,000 training examples with their true labels;
* the small CNN, 40 epochs, batch 128, SGD momentum 0.9, cosine LR from 0.05, weight decay 5e-4;
  RigL updates every 100 steps until 75% of training, ERK (the shared protocol otherwise);
* noise {0.4, 0.2} x {dense, RigL 90%, RigL 98%} x {SGD, SAM at rho 0.02, 0.05, 0.1}; seed 0.

Decision rule, written before the runs: the gain is SAM (its best rho on validation, per
sparsity) minus SGD in final validation accuracy (the last epoch's, not the peak). The regime for
the frontier study (F1, dense and RigL 90%) is the noise level at which both the dense and the
RigL 90% gains are at least 2 points, the one whose smaller gain is larger (0.4 on a tie); it is
then confirmed with seeds 0-2 before F1 starts. If no noise level gives RigL 90% that gain, the
dense regime goes forward with the sparsity whose gain is largest, and the README says so. A
full-data (50k train) check of the chosen noise level follows as its own study.
"""

from experiments.studies import protocol

NUM_EPOCHS = 40
NOISE = [0.4, 0.2]
RHOS = [0.02, 0.05, 0.1]
SPARSITY = [("dense", None), ("rigl", 0.9), ("rigl", 0.98)]

FIXED = {
  **protocol.FIXED,
  "num_epochs": NUM_EPOCHS,
  "log_every_steps": 78,  # One train record per epoch (78 steps of 128 examples).
  "dataset.train_subset": 20000,
  "dataset.validation_size": 10000,
  "dataset.label_noise_kind": "symmetric",
}


def regime_cells(noise: float, method: str, sparsity: float | None) -> list[dict]:
  base = {"dataset.label_noise": noise, "sparse.method": method}
  if sparsity is not None:
    base["sparse.sparsity"] = sparsity
  arms = [{"optimizer.name": "sgd"}]
  arms += [{"optimizer.name": "sam", "optimizer.rho": rho} for rho in RHOS]
  return [{**base, **arm} for arm in arms]


def get_study():
  return {
    "name": "p0_label_noise",
    "description": (
      "Positive control: SGD against SAM (rho 0.02 / 0.05 / 0.1) under symmetric label noise, "
      f"dense and RigL 90% / 98%, small CNN, {NUM_EPOCHS} epochs on 10k noisy Fashion-MNIST "
      "training examples, validated on 10k clean held-out training examples (the test set is "
      "not read). One seed per cell; the regime is chosen by the rule in the study's docstring."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": FIXED,
    "cells": [
      cell
      for noise in NOISE
      for method, sparsity in SPARSITY
      for cell in regime_cells(noise, method, sparsity)
    ],
    "seeds": [0],
    "group_by": [
      "dataset.label_noise",
      "sparse.method",
      "sparse.sparsity",
      "optimizer.name",
      "optimizer.rho",
    ],
    # The final epoch's accuracy decides; the peak over epochs is shown, labelled optimistic.
    "metrics": ["validation_accuracy", "max:validation_accuracy", "validation_loss"],
  }
