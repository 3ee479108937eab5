"""The offline default: a 90%-sparse small CNN (RigL) trained with ZO-SAM on Fashion-MNIST.

Runs on a laptop CPU in a few minutes, with the data from Debian's
``dataset-fashion-mnist`` package. Without ``zosam_jax.sparse`` installed it is dense.
"""

from __future__ import annotations

import importlib.util

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """ZO-SAM (m=1), RigL 90% (when available), small CNN, Fashion-MNIST, 3 epochs."""
  config = default.get_config()
  config.dataset.name = "fashion_mnist"
  config.model.name = "cnn"
  config.optimizer.name = "zo_sam"
  config.optimizer.learning_rate = 0.05
  config.optimizer.rho = 0.05
  config.optimizer.num_directions = 1
  config.optimizer.weight_decay = 5e-4
  has_sparse = importlib.util.find_spec("zosam_jax.sparse") is not None
  config.sparse.method = "rigl" if has_sparse else "dense"
  config.sparse.sparsity = 0.9
  config.sparse.update_every = 100
  config.num_epochs = 3
  return config
