"""T9: does ZO-SAM help sparse training beyond unstructured sparsity (the ZO-SAM paper's limit)?

RigL at 90% channel sparsity (whole output channels pruned) and at 2:4 (50%, the layout sparse
tensor cores run) on the small CNN, SGD vs ZO-SAM (m = 1), 3 seeds, the shared protocol
(``protocol.py``) with rho tuned once for SAM (``rho_tuning.py``). The stem conv (one input
channel: no block of 4 along its input axis) and the classifier (its output channels are the
classes) stay dense in every cell, so both patterns prune the same two kernels (conv1, fc0); ERK
spreads the channels (90%: 4 of conv1's 32 filters, 13 of fc0's 128 units). No paper number
exists to compare with: the ZO-SAM paper evaluates unstructured sparsity only.
"""

from experiments.studies import protocol


def get_study():
  return {
    "name": "t9_patterns",
    "description": (
      "RigL with structured sparsity on real Fashion-MNIST (small CNN, "
      f"{protocol.NUM_EPOCHS} epochs), rho = {protocol.tuned_rho()} from rho_tuning: 90% "
      "channel sparsity and 2:4, stem and classifier dense, SGD vs ZO-SAM."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {
      **protocol.FIXED,
      "optimizer.rho": protocol.tuned_rho(),
      "sparse.method": "rigl",
      "sparse.dense_layers": "conv0,head",  # sparse.n_m stays at the config's (2, 4)
    },
    # Explicit cells: each pattern with its own sparsity (n:m fixes it at 1 - N/M).
    "cells": [
      {"sparse.pattern": pattern, "sparse.sparsity": sparsity, "optimizer.name": name}
      for pattern, sparsity in (("channel", 0.9), ("n:m", 0.5))
      for name in ("sgd", "zo_sam")
    ],
    "seeds": protocol.SEEDS,
    "group_by": ["sparse.pattern", "sparse.sparsity", "optimizer.name"],
    "metrics": ["test_accuracy", "test_loss"],
    "target_accuracy": 0.88,
  }
