"""ResNet-32 on CIFAR-100 (as ``cifar10_resnet32`` with rho 0.2, Mi et al. 2022 section 5.1)."""

from __future__ import annotations

import ml_collections

from experiments.configs import cifar10_resnet32


def get_config() -> ml_collections.ConfigDict:
  """RigL 90% + ZO-SAM, ResNet-32, CIFAR-100, 200 epochs."""
  config = cifar10_resnet32.get_config()
  config.dataset.name = "cifar100"
  config.optimizer.rho = 0.2
  return config
