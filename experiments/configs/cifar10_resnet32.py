"""ResNet-32 on CIFAR-10 as in the ZO-SAM paper's main table (needs CIFAR-10 prepared; not offline).

Hyperparameters from Mi et al. (2022), section 5.1: batch 128, 200 epochs, SGD momentum 0.9,
initial LR 0.05 with cosine decay, weight decay 5e-4 (1e-3 for SAM-family optimizers),
random crop + flip + cutout, per-channel normalisation, rho 0.1 on CIFAR-10. Sparse training:
RigL at 90% sparsity (ERK) when ``zosam_jax.sparse`` is installed.
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """RigL 90% + ZO-SAM, ResNet-32, CIFAR-10, 200 epochs."""
  config = default.get_config()
  config.dataset.name = "cifar10"
  config.dataset.random_crop = True
  config.dataset.crop_padding = 4
  config.dataset.flip = True
  config.dataset.cutout = 16
  config.model.name = "resnet32"
  config.optimizer.name = "zo_sam"
  config.optimizer.learning_rate = 0.05
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-3
  config.optimizer.rho = 0.1
  config.optimizer.zeroth_order.num_directions = 1
  config.optimizer.zeroth_order.smoothing = 1e-3
  config.sparse.method = "rigl"
  config.sparse.sparsity = 0.9
  config.sparse.sparsity_distribution = "erk"
  config.sparse.update_every = 100
  config.batch_size = 128
  config.num_epochs = 200
  config.log_every_steps = 100
  config.checkpoint_every_steps = 2000
  return config
