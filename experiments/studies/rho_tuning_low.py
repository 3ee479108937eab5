"""The rho grid's lower edge: SAM at rho 0.005 and 0.01, and SGD, on the same held-out split.

``rho_tuning`` chose rho = 0.02, the smallest value of its grid {0.02, 0.05, 0.1, 0.2}, with
validation accuracy falling as rho grows: a best value at the edge of a grid is not a tuned one.
This study extends the grid downwards and adds the SGD arm (rho = 0) on the same split, to say
whether any radius helps at this scale. It does not change the rho the other studies use (they
read ``rho_tuning``'s runs, and T1 was already running with 0.02); the comparison is in
``docs/studies.md``.
"""

from experiments.studies import protocol, rho_tuning


def get_study():
  base = rho_tuning.get_study()
  return {
    **base,
    "name": "rho_tuning_low",
    "description": (
      "The lower edge of the rho grid (SAM at 0.005 and 0.01) and SGD, on rho_tuning's held-out "
      f"split: RigL 90%, small CNN, Fashion-MNIST (50k train / 10k held out), "
      f"{protocol.NUM_EPOCHS} epochs, seed 0 as in rho_tuning."
    ),
    "fixed": {k: v for k, v in base["fixed"].items() if k != "optimizer.name"},
    "grid": {},
    "cells": [
      {"optimizer.name": "sam", "optimizer.rho": 0.005},
      {"optimizer.name": "sam", "optimizer.rho": 0.01},
      {"optimizer.name": "sgd", "optimizer.rho": 0.0},
    ],
    "group_by": ["optimizer.name", "optimizer.rho"],
  }
