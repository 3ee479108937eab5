"""Every field a run reads, with defaults; the other configs start from this one.

Override any field from the command line, e.g. ``--config.optimizer.name=sam`` or
``--config.optimizer.zeroth_order.num_directions=4``. Fields of a group (``optimizer.esam``,
``optimizer.looksam``, ...) are read only by the method that owns them; the library checks their
values when the run builds its optimizer, before anything is compiled.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  """Base configuration (Fashion-MNIST, small CNN, dense, plain SGD)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # Free text naming the run, e.g. a study's arm (the frontier study F1 names its arms with it);
  # read by nothing else, kept in config.json.
  config.label = ""

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "fashion_mnist"  # fashion_mnist | mnist | cifar10 | cifar100 | imagenet2012
  config.dataset.data_dir = ""  # "" = $TFDS_DATA_DIR or ~/tensorflow_datasets
  # Folder of the four idx .gz files for fashion_mnist/mnist ("" = Debian package's folder).
  config.dataset.source_dir = ""
  config.dataset.train_subset = 0  # Use only the first N training examples (0 = all).
  config.dataset.test_subset = 0  # Evaluate on the first N test examples (0 = all).
  # Hold out the last N training examples and evaluate on them instead of the test set (0 = off;
  # metrics are then named validation_accuracy/validation_loss). For tuning.
  config.dataset.validation_size = 0
  # Flip this fraction of the training labels (after validation_size is held out; the evaluation
  # split stays clean), drawn from the seed alone so every arm of a seed sees the same flips
  # (experiments/label_noise.py; WORKDIR/label_noise.json lists them). 0 = off.
  config.dataset.label_noise = 0.0
  config.dataset.label_noise_kind = "symmetric"  # symmetric | pairs (Fashion-MNIST's class pairs)
  config.dataset.random_crop = False  # Zero-pad by crop_padding and crop back.
  config.dataset.crop_padding = 4
  config.dataset.flip = False
  config.dataset.cutout = 0  # Side of the cutout square (0 = off).
  # Worker processes preparing training batches (grain): 0 = threads of the training process,
  # enough for the in-memory datasets; ImageNet's decoding and crops want several. The batches
  # are the same with any number, so it may change when a run is resumed.
  config.dataset.workers = 0
  # After training, evaluate on the corrupted test sets (CIFAR-10-C, Fashion-MNIST-C).
  config.dataset.eval_corrupted = False
  config.dataset.corruptions = "all"  # "all" or comma-separated names.
  config.dataset.severities = "1,2,3,4,5"

  config.model = ml_collections.ConfigDict()
  config.model.name = "cnn"
  config.model.patch_size = 16  # ViT/DeiT only.
  # Computation dtype: float32 | bfloat16 (mixed precision: bfloat16 activations, float32
  # parameters, optimizer state, perturbations and directions; logits and loss in float32).
  config.model.dtype = "float32"

  config.optimizer = ml_collections.ConfigDict()
  # A head of experiments.optimizers.HEADS: sgd | sam | zo_sam | random_perturbation |
  # sparse_sam | looksam | zo_looksam | gsam | esam | zo_esam | adaptive_zo_sam | zosa | zo_sgd |
  # mezo. The chain is head -> weight decay -> SGD(schedule, momentum).
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = 0.05
  config.optimizer.schedule = "cosine"  # cosine | constant
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 5e-4
  config.optimizer.rho = 0.05  # SAM family and ZOSA: perturbation radius.
  config.optimizer.adaptive = False  # SAM / ZO-SAM / Sparse SAM: ASAM-style element-wise scaling.
  # Zeroth-order ascents (zo_sam, sparse_sam with ascent zeroth_order, zo_looksam, zo_esam,
  # adaptive_zo_sam): None (random directions) | previous_gradient (probe along the last exact
  # gradient first, the other m-1 directions random and orthogonal to it; docs/methods.md).
  config.optimizer.guidance = config_dict.placeholder(str)
  # Heads with a zeroth-order ascent (zo_sam, zo_looksam, zo_esam, adaptive_zo_sam, sparse_sam
  # with ascent=zeroth_order): the probes see only the first round(fraction * batch) examples of
  # each batch (BatchNorm with that sub-batch's statistics); sam, exact sparse_sam and looksam:
  # their ascent gradient does (looksam's on its refresh steps). The exact pass at theta + eps
  # sees the whole batch.
  # In (0, 1]; 1 = full-batch ascent; must be 1 for every other head.
  config.optimizer.probe_fraction = 1.0

  # zosam_jax.ZerothOrderOptions of every zeroth-order ascent and optimizer.
  zo = config.optimizer.zeroth_order = ml_collections.ConfigDict()
  zo.num_directions = 1  # m random directions per estimate.
  zo.smoothing = 1e-3  # finite-difference step delta.
  zo.distribution = "gaussian"  # gaussian | rademacher | sphere
  zo.scheme = "central"  # central | forward | jvp
  zo.probe_batch_size = 1  # directions probed at once (vmapped).

  ssam = config.optimizer.sparse_sam = ml_collections.ConfigDict()
  ssam.sparsity = 0.5  # fraction of weights NOT perturbed.
  ssam.mask_method = "fisher"  # fisher | dynamic | random
  ssam.update_every = 100  # steps between mask refreshes.
  ssam.num_fisher_samples = 128  # SSAM-F: examples (capped at the batch).
  ssam.ascent = "exact"  # exact | zeroth_order (Sparse ZO-SAM).
  # Which coordinates go together in the mask (docs/methods.md): unstructured | channel (whole
  # output channels) | n:m (N of every M consecutive weights along a kernel's input axis; sparsity
  # is then 1 - N/M and ssam.sparsity is ignored; only kernels are perturbed).
  ssam.pattern = "unstructured"
  ssam.n_m = (2, 4)  # (N, M) of the n:m pattern.
  # explicit (dense ascent gradient, mask on the perturbation) | implicit (the mask inside the
  # ascent's backward pass; ||eps|| = rho, the explicit form's direction; needs ascent exact).
  ssam.form = "explicit"
  # Top-level modules never perturbed, comma-separated (e.g. "conv0"). n:m needs the stem when the
  # images have fewer than M channels (Fashion-MNIST: "conv0" of the cnn).
  ssam.unperturbed_layers = ""

  config.optimizer.looksam = ml_collections.ConfigDict()
  config.optimizer.looksam.update_every = 5  # k, steps between ascents.
  config.optimizer.looksam.alpha = 0.7  # weight of the reused component.

  config.optimizer.gsam = ml_collections.ConfigDict()
  config.optimizer.gsam.alpha = 0.1  # weight of the orthogonal ascent.
  config.optimizer.gsam.rho_min = config_dict.placeholder(float)  # rho at LR 0 (None: constant).

  config.optimizer.esam = ml_collections.ConfigDict()
  config.optimizer.esam.beta = 0.6  # fraction of parameter leaves perturbed.
  config.optimizer.esam.gamma = 0.5  # fraction of examples kept for the update.

  config.optimizer.adaptive_zo_sam = ml_collections.ConfigDict()
  config.optimizer.adaptive_zo_sam.max_directions = 8  # m grows from num_directions to this.
  config.optimizer.adaptive_zo_sam.noise_decay = 0.8

  config.optimizer.zosa = ml_collections.ConfigDict()  # zosa only (zo_sgd: sam off).
  config.optimizer.zosa.sigma_normalize = True
  config.optimizer.zosa.adaptive_lr = True

  config.sparse = ml_collections.ConfigDict()
  config.sparse.method = "dense"  # dense | lth | snip | grasp | set | dsr | rigl | mest
  config.sparse.sparsity = 0.9
  config.sparse.sparsity_distribution = "erk"  # erk | uniform | global (channels, for "channel")
  # Which weights go together (docs/sparse_training.md): unstructured | channel (whole output
  # channels, the last axis of a Dense/Conv kernel) | n:m (N of every M consecutive weights along
  # the input axis; sparsity must then be 1 - N/M, e.g. 0.5 for 2:4).
  config.sparse.pattern = "unstructured"
  config.sparse.n_m = (2, 4)  # (N, M) of the n:m pattern.
  # Top-level modules whose kernels stay dense, comma-separated (e.g. "conv0,head"; every model's
  # classifier is "head"). The channel pattern needs "head" here (else it prunes classes); n:m
  # needs the stem when the images have fewer than M channels (Fashion-MNIST: "conv0" of the cnn).
  config.sparse.dense_layers = ""
  config.sparse.update_every = 100  # Dynamic methods: steps between mask updates.
  config.sparse.end_fraction = 0.75  # Dynamic methods: masks stop changing after this fraction.
  config.sparse.drop_fraction = 0.3  # Dynamic methods: fraction dropped at the first update.
  config.sparse.grasp_samples_per_class = 10  # GraSP: scoring examples per class.
  # LTH (experiments/lottery.py): round 0 trains dense, then `rounds` rounds each prune the same
  # fraction of survivors by magnitude (90%: 54% a round) and retrain from the survivors' values
  # at `rewind_step`. 3 rounds cost 4 runs; the papers' 20% a round needs ~10 at 90%. Layout over
  # layers: sparsity_distribution above (the papers prune globally: set it to global).
  config.sparse.lth = ml_collections.ConfigDict()
  config.sparse.lth.rounds = 3
  # Step k whose weights survivors rewind to; 0 is the initialisation (Frankle & Carbin 2019).
  # None: 1% of the run's steps, early in training as in Frankle et al. 2020.
  config.sparse.lth.rewind_step = config_dict.placeholder(int)

  config.batch_size = 128  # Global batch, split over all devices.
  # Gradient accumulation: each step splits batch_size into this many micro-batches, runs the
  # head on each (its own perturbation / directions, as in m-sharpness) and applies their mean
  # once. Steps, schedules, sparse-mask updates and logs still count optimizer steps (see
  # docs/flax.md); 1 = no accumulation.
  config.accumulation_steps = 1
  config.eval_batch_size = 500
  config.num_epochs = 3
  config.log_every_steps = 50
  # Also evaluate every N steps inside an epoch (0: at epoch ends only). Those eval records have
  # a fractional epoch (step / steps per epoch) and the epoch's training seconds so far: time
  # to a target accuracy at a finer grain than an epoch (experiments.study's target_accuracy).
  config.eval_every_steps = 0
  config.checkpoint_every_steps = 500
  config.keep_checkpoints = 2
  config.progress_bar = True
  # Also write the metrics as TensorBoard events in WORKDIR/tensorboard/ (tensorboardX;
  # metrics.jsonl stays the record): tensorboard --logdir WORKDIR.
  config.tensorboard = True
  # Multi-host: jax.distributed.initialize() with what the cluster environment gives (Slurm, Open
  # MPI, Cloud TPU); --coordinator_address/--num_processes/--process_id also start it.
  config.distributed = False
  return config
