"""Every field a run reads, with defaults; the other configs start from this one.

Override any field from the command line, e.g. ``--config.optimizer.name=sam``.
"""

from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Base configuration (Fashion-MNIST, small CNN, dense, plain SGD)."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "fashion_mnist"  # fashion_mnist | mnist | cifar10 | cifar100 | imagenet2012
  config.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  # Folder of the four idx .gz files for fashion_mnist/mnist ("" = Debian package's folder).
  config.dataset.source_dir = ""
  config.dataset.train_subset = 0  # Use only the first N training examples (0 = all).
  config.dataset.test_subset = 0  # Evaluate on the first N test examples (0 = all).
  config.dataset.random_crop = False  # Zero-pad by crop_padding and crop back.
  config.dataset.crop_padding = 4
  config.dataset.flip = False
  config.dataset.cutout = 0  # Side of the cutout square (0 = off).
  # After training on cifar10, evaluate on CIFAR-10-C: these corruptions x severities.
  config.dataset.eval_corrupted = False
  config.dataset.corruptions = "all"  # "all" or comma-separated names.
  config.dataset.severities = "1,2,3,4,5"

  config.model = ml_collections.ConfigDict()
  config.model.name = "cnn"
  config.model.patch_size = 16  # ViT/DeiT only.

  config.optimizer = ml_collections.ConfigDict()
  # sgd | sam | zo_sam | sparse_sam | looksam | zo_looksam | gsam | esam | zo_esam |
  # adaptive_zo_sam
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = "cosine"  # cosine | constant
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-4
  config.optimizer.rho = 0.05  # SAM family: perturbation radius.
  config.optimizer.adaptive = False  # ASAM-style element-wise scaling.
  config.optimizer.num_directions = 1  # ZO-SAM: m random directions per step.
  config.optimizer.smoothing = 1e-3  # ZO-SAM: finite-difference step delta.
  config.optimizer.distribution = "gaussian"  # ZO-SAM: gaussian | rademacher (core's choices).
  config.optimizer.scheme = "central"  # ZO-SAM: central | forward.
  config.optimizer.probe_batch_size = 1  # ZO-SAM: directions probed at once.
  config.optimizer.ssam_sparsity = 0.5  # Sparse SAM: fraction of weights NOT perturbed.
  config.optimizer.max_directions = 8  # adaptive_zo_sam: m grows from num_directions to this.
  config.optimizer.looksam_reuse_period = 5  # LookSAM: k, steps between exact ascents.
  config.optimizer.looksam_alpha = 0.7  # LookSAM: weight of the reused component.
  config.optimizer.gsam_alpha = 0.1  # GSAM: weight of the orthogonal ascent.
  config.optimizer.gsam_rho_min = -1.0  # GSAM: rho at LR 0 (< 0: constant rho).
  config.optimizer.esam_beta = 0.6  # ESAM: fraction of parameter leaves perturbed.
  config.optimizer.esam_gamma = 0.5  # ESAM: fraction of examples kept for the update.
  config.optimizer.ssam_mask_method = "fisher"  # Sparse SAM: fisher | dynamic | random.
  config.optimizer.ssam_update_interval = 100  # Sparse SAM: steps between mask refreshes.
  config.optimizer.ssam_num_fisher_samples = 128  # SSAM-F: examples (capped at the batch).
  config.optimizer.ssam_ascent = "exact"  # Sparse SAM: exact | zeroth_order (Sparse ZO-SAM).

  config.sparse = ml_collections.ConfigDict()
  config.sparse.method = "dense"  # dense | snip | grasp | set | dsr | rigl | mest
  config.sparse.sparsity = 0.9
  config.sparse.distribution = "erk"  # erk | uniform | global
  config.sparse.update_every = 100  # Dynamic methods: steps between mask updates.
  config.sparse.end_fraction = 0.75  # Dynamic methods: masks stop changing after this fraction.
  config.sparse.drop_fraction = 0.3  # Dynamic methods: fraction dropped at the first update.
  config.sparse.grasp_samples_per_class = 10  # GraSP: scoring examples per class.

  config.batch_size = 128  # Global batch, split over all devices.
  config.eval_batch_size = 500
  config.num_epochs = 3
  config.log_every_steps = 50
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.progress_bar = True
  config.distributed = False  # Call jax.distributed.initialize() (multi-host).
  return config
