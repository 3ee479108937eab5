"""Sparse SAM (SSAM-F, 50%) on CIFAR-10 with ResNet-18 (Mi et al. 2022, Table 1; not offline)."""

from __future__ import annotations

import ml_collections

from experiments.configs import cifar10_resnet32


def get_config() -> ml_collections.ConfigDict:
  """Dense ResNet-18 (CIFAR stem), Sparse SAM with a Fisher mask, 200 epochs."""
  config = cifar10_resnet32.get_config()
  config.model.name = "resnet18"
  config.optimizer.name = "sparse_sam"
  config.optimizer.sparse_sam.sparsity = 0.5
  config.optimizer.sparse_sam.mask_method = "fisher"
  config.optimizer.sparse_sam.update_every = 100
  config.sparse.method = "dense"
  return config
