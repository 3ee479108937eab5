"""The offline default: a 90%-sparse small CNN (RigL) trained with ZO-SAM on Fashion-MNIST.

Runs on a laptop CPU in a few minutes, with the data from Debian's
``dataset-fashion-mnist`` package.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """ZO-SAM (m=1), RigL 90%, small CNN, Fashion-MNIST, 3 epochs."""
  config = default.get_config()
  config.optimizer.name = "zo_sam"
  config.sparse.method = "rigl"
  return config
