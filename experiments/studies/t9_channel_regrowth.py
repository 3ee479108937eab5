"""T9's channel cells again, after the regrowth fix (0.3.0): do T9's channel numbers move?

Until 0.3.0 a weight (under ``pattern="channel"``, a whole channel) that a RigL update dropped and
grew back restarted at 0 with fresh moments; now it keeps its values, as in the RigL reference.
Same cells, seeds and config hashes as T9's channel rows (``t9_patterns.py``), in their own
workdirs and results folder, so the two can be compared seed by seed.
"""

from experiments.studies import t9_patterns


def get_study():
  base = t9_patterns.get_study()
  return {
    **base,
    "name": "t9_channel_regrowth",
    "description": (
      "T9's channel cells (RigL 90% channel sparsity, stem and classifier dense, SGD vs ZO-SAM) "
      "re-run with the reference regrowth rule (dropped-and-regrown channels keep their "
      "weights); compare with docs/results/t9_patterns seed by seed."
    ),
    "cells": [c for c in base["cells"] if c["sparse.pattern"] == "channel"],
  }
