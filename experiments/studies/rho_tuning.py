"""Tune SAM's radius once, on held-out training data, for every SAM-family arm of the studies.

SAM with RigL at 90% sparsity, the shared protocol (``protocol.py``), the last 10,000 training
examples held out (trained on the first 50,000), the test set untouched. The chosen rho (best
mean validation accuracy) is read by the other studies through ``protocol.tuned_rho()``.
"""

from experiments.studies import protocol


def get_study():
  return {
    "name": "rho_tuning",
    "description": (
      "SAM radius on a held-out split: RigL 90%, small CNN, Fashion-MNIST (50k train / 10k "
      f"held out), {protocol.NUM_EPOCHS} epochs. The best rho is shared by every SAM-family arm."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {
      **protocol.FIXED,
      "dataset.validation_size": 10000,
      "optimizer.name": "sam",
      "sparse.method": "rigl",
      "sparse.sparsity": 0.9,
    },
    "grid": {"optimizer.rho": [0.02, 0.05, 0.1, 0.2]},
    "seeds": [0],
    "group_by": ["optimizer.rho"],
    "metrics": ["validation_accuracy", "validation_loss"],
  }
