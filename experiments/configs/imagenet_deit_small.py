"""DeiT-Small on ImageNet-1K with RigL 70% + ZO-SAM (ZO-SAM paper's transformer table; not offline).

ImageNet settings of Mi et al. (2022), section 5.1: random-resized-crop 224 + flip for training,
resize 256 / center-crop 224 for evaluation, batch 256, cosine LR from 0.1, momentum 0.9,
weight decay 1e-4, rho 0.07. (The DeiT recipe itself uses AdamW and heavy augmentation; this
config keeps the paper's SGD setting so that only the optimizer head changes between runs.)
"""

from __future__ import annotations

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
  """RigL 70% + ZO-SAM, DeiT-Small (patch 16), ImageNet-1K, 300 epochs."""
  config = default.get_config()
  config.dataset.name = "imagenet2012"
  config.dataset.flip = True
  # JPEG decoding and random-resized crops in worker processes (grain), not the training one.
  config.dataset.workers = 8
  config.model.name = "deit_small"
  config.model.patch_size = 16
  config.optimizer.name = "zo_sam"
  config.optimizer.learning_rate = 0.1
  config.optimizer.warmup_epochs = 5.0
  config.optimizer.weight_decay = 1e-4
  config.optimizer.rho = 0.07
  config.sparse.method = "rigl"
  config.sparse.sparsity = 0.7
  config.batch_size = 256
  config.eval_batch_size = 250
  config.num_epochs = 300
  config.log_every_steps = 200
  config.checkpoint_every_steps = 5000
  return config
