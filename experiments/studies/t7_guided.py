"""T7: does aiming ZO-SAM's directions at the previous exact gradient change its accuracy?

RigL 90% (ERK), the shared protocol (``protocol.py``) and rho tuned for SAM (``rho_tuning.py``):
ZO-SAM with one direction guided by the previous step's exact gradient
(``optimizer.guidance=previous_gradient``: 2 forwards, the direction of a one-step-stale gradient,
whose cosine to the current gradient is 0.05-0.7 on this CNN, against sqrt(1/d) ~ 0.007 for a
random direction; ``benchmarks/guided_ascent.py``), beside plain ZO-SAM with four random
directions (8 forwards). T1's RigL 90% rows (SGD, SAM, ZO-SAM m=1, the random-perturbation
control; same protocol, same seeds) are the baselines; the two studies' cells differ only in the
optimizer fields.
"""

from experiments.studies import protocol


def get_study():
  return {
    "name": "t7_guided",
    "description": (
      "Test accuracy on real Fashion-MNIST (small CNN, RigL 90%, "
      f"{protocol.NUM_EPOCHS} epochs), rho = {protocol.tuned_rho()} from rho_tuning: "
      "prior-guided ZO-SAM (m=1) against plain ZO-SAM (m=4). Baselines: T1's RigL 90% rows."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {
      **protocol.FIXED,
      "optimizer.rho": protocol.tuned_rho(),
      "optimizer.name": "zo_sam",
      "sparse.method": "rigl",
      "sparse.sparsity": 0.9,
    },
    # Unguided cells leave optimizer.guidance unset (None: the summary shows an empty value).
    "cells": [
      {"optimizer.zeroth_order.num_directions": 1, "optimizer.guidance": "previous_gradient"},
      {"optimizer.zeroth_order.num_directions": 4},
    ],
    "seeds": protocol.SEEDS,
    "group_by": ["optimizer.zeroth_order.num_directions", "optimizer.guidance"],
    "metrics": ["test_accuracy", "test_loss"],
    "target_accuracy": 0.88,
  }
