"""ResNet-50 on ImageNet-1K with Sparse SAM (Mi et al. 2022, Table 3; not offline)."""

from __future__ import annotations

import ml_collections

from experiments.configs import imagenet_deit_small


def get_config() -> ml_collections.ConfigDict:
  """Dense ResNet-50, SSAM-F 50%, 90 epochs, batch 256, LR 0.1 cosine, wd 1e-4, rho 0.07."""
  config = imagenet_deit_small.get_config()
  config.model.name = "resnet50"
  config.optimizer.name = "sparse_sam"
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.sparse_sam.sparsity = 0.5
  config.sparse.method = "dense"
  config.num_epochs = 90
  return config
