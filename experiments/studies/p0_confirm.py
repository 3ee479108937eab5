"""P0, confirmed: SGD against SAM with seeds 0-2 in the regime P0's rule chose (``regime.py``).

The chosen noise level, dense and its sparse cell (RigL 90% unless the rule fell back), SAM at its
best rho on validation in each; everything else as in ``p0_label_noise.py`` (held-out validation,
the test set unread). Seed 0's cells are P0's own runs (same config hashes: shared, not
retrained). The regime is confirmed when SAM - SGD's paired 95% interval excludes 0 in both the
dense and the sparse cell (``summary.md``'s paired differences).
"""

from experiments.studies import p0_label_noise, regime


def get_study():
  chosen = regime.chosen()
  cells = []
  for method, sparsity, rho in (
    ("dense", None, chosen.rho["dense"]),
    (chosen.sparse_method, chosen.sparsity, chosen.rho["sparse"]),
  ):
    for cell in p0_label_noise.regime_cells(chosen.label_noise, method, sparsity):
      if cell["optimizer.name"] == "sgd" or cell["optimizer.rho"] == rho:
        cells.append(cell)
  return {
    **p0_label_noise.get_study(),
    "name": "p0_confirm",
    "description": (
      f"P0's regime confirmed with 3 seeds: label noise {chosen.label_noise}, dense and "
      f"{chosen.sparse_method} {chosen.sparsity}, SGD against SAM (rho {chosen.rho['dense']} "
      f"dense, {chosen.rho['sparse']} sparse, P0's best on validation)."
    ),
    "cells": cells,
    "seeds": [0, 1, 2],
    "shares_cells_with": ["p0_label_noise"],
  }
