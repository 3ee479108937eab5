"""T8: Sparse SAM (SSAM-F, SSAM-D) at 50% perturbation sparsity against SAM and SGD, dense CNN.

The SSAM paper (seed 002, ResNet-18 CIFAR-10): SGD 96.07, SAM 96.83, SSAM-F 96.81, SSAM-D 96.87.
Shared protocol, dense network, rho from ``rho_tuning`` (tuned for SAM with RigL 90%: the same
radius for every arm here; SSAM's paper uses SAM's rho for its masks too).
"""

from experiments.studies import protocol

PAPER = {
  ("sgd", "fisher"): 96.07,
  ("sam", "fisher"): 96.83,
  ("sparse_sam", "fisher"): 96.81,
  ("sparse_sam", "dynamic"): 96.87,
}


def get_study():
  rho = protocol.tuned_rho()
  return {
    "name": "t8_sparse_sam",
    "description": (
      "Dense small CNN on real Fashion-MNIST, "
      f"{protocol.NUM_EPOCHS} epochs, rho = {rho}; Sparse SAM keeps 50% of the perturbation "
      "(mask refreshed every 100 steps). The paper's CIFAR-10 ResNet-18 numbers beside ours."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {
      **protocol.FIXED,
      "optimizer.rho": rho,
      "sparse.method": "dense",
      "optimizer.sparse_sam.sparsity": 0.5,
      "optimizer.sparse_sam.update_every": 100,
    },
    # sgd and sam ignore the mask method; it is set only so every cell has the same group key.
    "cells": [
      {"optimizer.name": "sgd", "optimizer.sparse_sam.mask_method": "fisher"},
      {"optimizer.name": "sam", "optimizer.sparse_sam.mask_method": "fisher"},
      {"optimizer.name": "sparse_sam", "optimizer.sparse_sam.mask_method": "fisher"},
      {"optimizer.name": "sparse_sam", "optimizer.sparse_sam.mask_method": "dynamic"},
    ],
    "seeds": protocol.SEEDS,
    "group_by": ["optimizer.name", "optimizer.sparse_sam.mask_method"],
    "metrics": ["test_accuracy", "test_loss"],
    "paper": {
      "source": "SSAM (Mi et al., NeurIPS 2022), ResNet-18 CIFAR-10, Table 1",
      "metric": "test_accuracy",
      "scale": 100,
      "comparable": False,
      "values": PAPER,
    },
  }
