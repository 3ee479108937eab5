"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

One jit-compiled step per batch. The optimizer chain's head (``zosam_jax``) receives
``loss_fn`` and returns the update direction; ``loss_fn(params)`` returns
``(loss, {"correct": ..., "batch_stats": ...})``. The head stores the aux of its
exact-gradient pass (at ``theta`` for SGD, at ``theta + eps`` for the SAM family) in its state,
and the step reads it back with ``optax.tree_utils.tree_get(opt_state, "aux")``:

BatchNorm convention: running statistics are updated once per step, by the exact-gradient
pass of the head, i.e. with the batch statistics seen by the gradient that is applied.
Zeroth-order probes and SAM's ascent pass never update them. Training loss/accuracy are
those of that same pass (so, for SAM-family optimizers, measured at the perturbed point).

Workdir layout: ``config.json`` (the run's config; resuming checks it), ``metrics.jsonl`` (one
JSON record per line: ``kind`` is ``train``, ``eval`` or ``corrupted``) and
``checkpoints/`` (orbax). Every random choice derives from ``(config.seed, step)``: the data
order and augmentation (see ``input_pipeline``), the optimizer's PRNG key (in its state,
checkpointed), and dropout. So a resumed run reproduces an uninterrupted one bit for bit on
CPU, and the same seed gives the same metrics.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import input_pipeline, models, optimizers

# Config fields that may differ between a run and its resumption (they do not change results).
RESUMABLE_CHANGES = frozenset(
  {
    "progress_bar",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "distributed",
    "dataset.data_dir",
    "dataset.source_dir",
  }
)
TIMING_KEYS = frozenset({"images_per_sec", "train_epoch_time_s", "eval_time_s", "compile_time_s"})


class ConfigError(ValueError):
  """The config or the workdir cannot be used; raised before anything is compiled or written."""


# ----------------------------------------------------------------------------- validation


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
  if value not in valid:
    raise ConfigError(f"unknown {name} '{value}'; valid: {', '.join(valid)}")


def _number(name: str, value: Any, ok: Callable[[float], bool], what: str) -> None:
  if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
    raise ConfigError(f"{name} must be {what}, got {value!r}")
  if not ok(value):
    raise ConfigError(f"{name} must be {what}, got {value!r}")


def _parse_list(text: str, valid: tuple[str, ...], name: str) -> list[str]:
  items = list(valid) if text == "all" else [s.strip() for s in str(text).split(",") if s.strip()]
  for item in items:
    _choice(name, item, valid)
  return items


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Checks names and ranges; raises ``ConfigError`` with a one-line message.

  Args:
    config: the run's config.
    device_count: devices the global batch is split over (default: ``jax.device_count()``).
  """
  device_count = jax.device_count() if device_count is None else device_count
  _choice("dataset", config.dataset.name, input_pipeline.DATASETS)
  _choice("model", config.model.name, models.MODELS)
  opt = config.optimizer
  _choice("optimizer", opt.name, optimizers.OPTIMIZERS)
  _choice("sparse method", config.sparse.method, optimizers.sparse_methods())
  if config.sparse.method != "dense" and not optimizers.sparse_available():
    raise ConfigError("sparse methods need zosam_jax.sparse, which is not installed")
  _choice("learning-rate schedule", opt.schedule, optimizers.SCHEDULES)
  _choice("direction distribution", opt.distribution, optimizers.DISTRIBUTIONS)
  _choice("finite-difference scheme", opt.scheme, optimizers.SCHEMES)
  _choice("sparse_sam mask method", opt.ssam_mask_method, optimizers.SSAM_MASK_METHODS)
  _choice("sparse_sam ascent", opt.ssam_ascent, ("exact", "zeroth_order"))
  positive = "a positive finite number"
  _number("optimizer.learning_rate", opt.learning_rate, lambda v: 0 < v < math.inf, positive)
  _number("optimizer.momentum", opt.momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  _number("optimizer.weight_decay", opt.weight_decay, lambda v: 0 <= v < math.inf, ">= 0")
  _number(
    "optimizer.warmup_epochs",
    opt.warmup_epochs,
    lambda v: 0 <= v <= config.num_epochs,
    "in [0, num_epochs]",
  )
  if opt.name != "sgd":
    _number("optimizer.rho", opt.rho, lambda v: 0 < v < math.inf, positive)
  zeroth_order = opt.name in optimizers.ZEROTH_ORDER_HEADS + ("adaptive_zo_sam",)
  if zeroth_order or (opt.name == "sparse_sam" and opt.ssam_ascent == "zeroth_order"):
    _number(
      "optimizer.num_directions",
      opt.num_directions,
      lambda v: isinstance(v, int) and v >= 1,
      "an integer >= 1",
    )
    _number("optimizer.smoothing", opt.smoothing, lambda v: 0 < v < math.inf, positive)
    _number(
      "optimizer.probe_batch_size",
      opt.probe_batch_size,
      lambda v: isinstance(v, int) and v >= 1,
      "an integer >= 1",
    )
  if opt.name == "adaptive_zo_sam":
    _number(
      "optimizer.max_directions",
      opt.max_directions,
      lambda v: isinstance(v, int) and v >= opt.num_directions,
      "an integer >= num_directions",
    )
  if opt.name in ("looksam", "zo_looksam"):
    _number(
      "optimizer.looksam_reuse_period",
      opt.looksam_reuse_period,
      lambda v: isinstance(v, int) and v >= 1,
      "an integer >= 1",
    )
  if opt.name in ("esam", "zo_esam"):
    for name in ("esam_beta", "esam_gamma"):
      _number(f"optimizer.{name}", opt[name], lambda v: 0 < v <= 1, "in (0, 1]")
  if opt.name == "sparse_sam":
    _number("optimizer.ssam_sparsity", opt.ssam_sparsity, lambda v: 0 <= v < 1, "in [0, 1)")
  if config.sparse.method != "dense":
    _number("sparse.sparsity", config.sparse.sparsity, lambda v: 0 <= v < 1, "in [0, 1)")
    _choice("sparsity distribution", config.sparse.distribution, ("erk", "uniform", "global"))
    _number("sparse.end_fraction", config.sparse.end_fraction, lambda v: 0 < v <= 1, "in (0, 1]")
    _number("sparse.drop_fraction", config.sparse.drop_fraction, lambda v: 0 < v < 1, "in (0, 1)")
    _number(
      "sparse.update_every",
      config.sparse.update_every,
      lambda v: isinstance(v, int) and v >= 1,
      "an integer >= 1",
    )
  for name in (
    "batch_size",
    "eval_batch_size",
    "num_epochs",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
  ):
    _number(name, config[name], lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
  for name in ("train_subset", "test_subset"):
    _number(
      f"dataset.{name}",
      config.dataset[name],
      lambda v: isinstance(v, int) and v >= 0,
      "an integer >= 0",
    )
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % device_count:
      raise ConfigError(
        f"{name} {config[name]} is not divisible by the {device_count} devices; use a multiple "
        f"of {device_count}"
      )
  if config.dataset.eval_corrupted:
    if config.dataset.name != "cifar10":
      raise ConfigError("dataset.eval_corrupted needs dataset.name=cifar10 (CIFAR-10-C)")
    _parse_list(config.dataset.corruptions, input_pipeline.CIFAR10_CORRUPTIONS, "corruption")
    _parse_list(config.dataset.severities, ("1", "2", "3", "4", "5"), "severity")
  if config.model.name.startswith("deit"):
    size = input_pipeline.SPECS[config.dataset.name].image_shape[0]
    if size % config.model.patch_size:
      raise ConfigError(f"model.patch_size {config.model.patch_size} does not divide {size}")


# ----------------------------------------------------------------------------- workdir


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def _config_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def check_workdir(config: ml_collections.ConfigDict, workdir: str, resume: bool) -> bool:
  """Read-only checks of ``workdir``; returns whether there is a checkpoint to resume from.

  Raises:
    ConfigError: checkpoints exist but ``resume`` is false, or the stored config differs.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  has_ckpt = os.path.isdir(ckpt_dir) and any(name.isdigit() for name in os.listdir(ckpt_dir))
  config_path = os.path.join(workdir, "config.json")
  if (has_ckpt or os.path.exists(config_path)) and not resume:
    raise ConfigError(
      f"workdir {workdir} already holds a run; pass --resume to continue it or choose a new "
      "--workdir"
    )
  if resume and os.path.exists(config_path):
    with open(config_path) as f:
      stored = _flatten(json.load(f))
    current = _flatten(json.loads(_config_json(config)))
    diffs = sorted(
      k
      for k in set(stored) | set(current)
      if k not in RESUMABLE_CHANGES and stored.get(k, "<absent>") != current.get(k, "<absent>")
    )
    if diffs:
      shown = "; ".join(
        f"{k}: {stored.get(k, '<absent>')!r} there vs {current.get(k, '<absent>')!r} now"
        for k in diffs[:3]
      )
      raise ConfigError(
        f"workdir {workdir} holds a run with a different config ({shown}); use a new --workdir"
      )
  return has_ckpt


class MetricWriter:
  """Appends JSON records to ``metrics.jsonl`` (process 0 only)."""

  def __init__(self, workdir: str, enabled: bool):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled

  def truncate_after(self, step: int) -> None:
    """Drops records of steps after ``step`` (those a killed run wrote past its checkpoint)."""
    if not (self.enabled and os.path.exists(self.path)):
      return
    with open(self.path) as f:
      kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(kept)

  def write(self, record: dict[str, Any]) -> None:
    if self.enabled:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of ``workdir/metrics.jsonl``."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


# ----------------------------------------------------------------------------- steps


def _zero_acc() -> dict[str, jax.Array]:
  return {
    "loss_sum": jnp.zeros([], jnp.float32),
    "correct": jnp.zeros([], jnp.int32),
    "count": jnp.zeros([], jnp.int32),
    "steps": jnp.zeros([], jnp.int32),
  }


def make_train_step(
  model: Any, tx: optax.GradientTransformationExtraArgs, config: ml_collections.ConfigDict
) -> Callable:
  """``train_step(state, batch) -> state``; metrics accumulate in ``state["acc"]``."""
  use_fisher = config.optimizer.name == "sparse_sam" and config.optimizer.ssam_mask_method == (
    "fisher"
  )
  per_example = config.optimizer.name in optimizers.PER_EXAMPLE_HEADS
  seed = config.seed

  def train_step(state: dict, batch: dict) -> dict:
    images, labels = batch["image"], batch["label"]
    dropout_rng = jax.random.fold_in(jax.random.key(seed), state["step"])

    def loss_fn(params):
      logits, new_vars = model.apply(
        {"params": params, "batch_stats": state["batch_stats"]},
        images,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": dropout_rng},
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      correct = jnp.sum(jnp.argmax(logits, -1) == labels).astype(jnp.int32)
      count = jnp.asarray(labels.shape[0], jnp.int32)
      aux = {"correct": correct, "count": count, "batch_stats": new_vars.get("batch_stats", {})}
      return loss, aux

    extra = {}
    if per_example:
      # ESAM: per-example losses on any sub-batch (it updates on the highest-loss examples).
      def per_example_loss_fn(params, sub_batch):
        logits, new_vars = model.apply(
          {"params": params, "batch_stats": state["batch_stats"]},
          sub_batch["image"],
          train=True,
          mutable=["batch_stats"],
          rngs={"dropout": dropout_rng},
        )
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, sub_batch["label"])
        correct = jnp.sum(jnp.argmax(logits, -1) == sub_batch["label"]).astype(jnp.int32)
        count = jnp.asarray(sub_batch["label"].shape[0], jnp.int32)
        aux = {"correct": correct, "count": count, "batch_stats": new_vars.get("batch_stats", {})}
        return losses, aux

      extra = {"per_example_loss_fn": per_example_loss_fn, "batch": batch}
    if use_fisher:
      # SSAM-F's Fisher takes per-example gradients on one-example batches: BatchNorm uses
      # its running statistics there (a batch of one has none of its own).
      def fisher_loss_fn(params, sub_batch):
        logits = model.apply(
          {"params": params, "batch_stats": state["batch_stats"]}, sub_batch["image"], train=False
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, sub_batch["label"])

      extra = {"per_example_loss_fn": fisher_loss_fn, "batch": batch}
    updates, opt_state = tx.update(
      None, state["opt_state"], state["params"], loss_fn=loss_fn, **extra
    )
    params = optax.apply_updates(state["params"], updates)
    aux = optax.tree_utils.tree_get(opt_state, "aux")
    loss = optax.tree_utils.tree_get(opt_state, "value")
    acc = state["acc"]
    return {
      "step": state["step"] + 1,
      "params": params,
      "batch_stats": aux["batch_stats"],
      "opt_state": opt_state,
      "acc": {
        "loss_sum": acc["loss_sum"] + loss,
        "correct": acc["correct"] + aux["correct"],
        "count": acc["count"] + aux["count"],
        "steps": acc["steps"] + 1,
      },
    }

  return train_step


def make_eval_step(model: Any) -> Callable:
  """``eval_step(state, batch) -> {"loss_sum", "correct", "count"}`` over unmasked rows."""

  def eval_step(state: dict, batch: dict) -> dict:
    logits = model.apply(
      {"params": state["params"], "batch_stats": state["batch_stats"]}, batch["image"], train=False
    )
    mask = batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
      "loss_sum": jnp.sum(loss * mask),
      "correct": jnp.sum(correct * mask),
      "count": jnp.sum(mask),
    }

  return eval_step


# ----------------------------------------------------------------------------- the run


def _to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def evaluate(
  eval_fn: Callable,
  state: dict,
  split: input_pipeline.Split,
  spec: input_pipeline.DatasetSpec,
  config: ml_collections.ConfigDict,
  sharding: NamedSharding,
) -> dict[str, float]:
  """Test loss and accuracy over every example of ``split``."""
  totals = None
  for batch in input_pipeline.eval_batches(
    split, spec, config.eval_batch_size, jax.process_index(), jax.process_count()
  ):
    out = eval_fn(state, _to_global(batch, sharding))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {
    "test_loss": float(totals["loss_sum"]) / count,
    "test_accuracy": float(totals["correct"]) / count,
  }


def _checkpoint_manager(workdir: str, config: ml_collections.ConfigDict):
  import orbax.checkpoint as ocp

  options = ocp.CheckpointManagerOptions(
    max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False
  )
  return ocp.CheckpointManager(
    os.path.abspath(os.path.join(workdir, "checkpoints")), options=options
  )


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  resume: bool = False,
  step_hook: Callable[[int], None] | None = None,
) -> dict[str, Any]:
  """Trains ``config``'s model, evaluating every epoch; returns the final metrics.

  Args:
    config: see ``experiments/configs/default.py`` for every field.
    workdir: where ``config.json``, ``metrics.jsonl`` and ``checkpoints/`` go.
    resume: continue from the latest checkpoint in ``workdir`` (its config must match).
    step_hook: called with the global step after each step (tests use it to interrupt a run).

  Returns:
    The last eval record (``test_accuracy``, ``test_loss``, ...), plus ``corrupted`` results
    when ``config.dataset.eval_corrupted``.

  Raises:
    ConfigError: bad names/ranges, or an unusable workdir (before anything is compiled/written).
    input_pipeline.DataMissingError: the data is missing and cannot be fetched offline.
  """
  config = ml_collections.ConfigDict(config.to_dict())  # A private copy.
  validate_config(config)
  has_ckpt = check_workdir(config, workdir, resume)
  data_dir = config.dataset.data_dir or input_pipeline.default_data_dir()
  spec = input_pipeline.SPECS[config.dataset.name]

  # Data (fails with DataMissingError before anything is compiled or written).
  train_split = input_pipeline.load_split(
    config.dataset.name,
    spec.train_split,
    data_dir,
    config.dataset.source_dir,
    config.dataset.train_subset,
  )
  test_split = input_pipeline.load_split(
    config.dataset.name,
    spec.eval_split,
    data_dir,
    config.dataset.source_dir,
    config.dataset.test_subset,
  )
  augment = input_pipeline.Augment(
    config.dataset.random_crop,
    config.dataset.crop_padding,
    config.dataset.flip,
    config.dataset.cutout,
  )
  try:
    batches = input_pipeline.TrainBatches(
      train_split,
      spec,
      config.batch_size,
      config.seed,
      augment,
      jax.process_index(),
      jax.process_count(),
    )
  except ValueError as e:
    raise ConfigError(str(e)) from None
  steps_per_epoch = batches.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch

  # Model and optimizer.
  kwargs = {"patch_size": config.model.patch_size} if config.model.name.startswith("deit") else {}
  model = models.create_model(config.model.name, spec.num_classes, **kwargs)
  mesh = Mesh(np.asarray(jax.devices()), ("batch",))
  replicated = NamedSharding(mesh, P())
  batch_sharding = NamedSharding(mesh, P("batch"))
  dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)
  variables = jax.jit(lambda k: model.init(k, dummy, train=False), out_shardings=replicated)(
    jax.random.key(config.seed)
  )
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  static_kwargs = {}
  if config.sparse.method in optimizers.STATIC_SPARSE:
    # SNIP/GraSP score the initial weights on training data (BN in batch-statistics mode).
    def apply_fn(p, x):
      variables = {"params": p, "batch_stats": batch_stats}
      return model.apply(variables, x, train=True, mutable=["batch_stats"])[0]

    n = min(train_split.size, max(config.batch_size, 20 * spec.num_classes))
    images, labels = train_split.get(np.arange(n))
    images = input_pipeline.normalize_eval(images, spec)
    static_kwargs = {"apply_fn": apply_fn, "scoring_data": (images, labels)}
  tx = optimizers.create_optimizer(config, params, steps_per_epoch, **static_kwargs)
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch)

  def init_state(params, batch_stats):
    opt_state = tx.init(params)
    zero = jnp.zeros([], jnp.int32)
    aux = {"correct": zero, "count": zero, "batch_stats": batch_stats}
    opt_state = optax.tree_utils.tree_set(opt_state, aux=aux)
    return {
      "step": jnp.zeros([], jnp.int32),
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": opt_state,
      "acc": _zero_acc(),
    }

  state = jax.jit(init_state, out_shardings=replicated)(params, batch_stats)
  num_params = models.count_params(params)

  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0
  writer = MetricWriter(workdir, enabled=is_main)
  ckpt = _checkpoint_manager(workdir, config)
  start_step = 0
  if has_ckpt and ckpt.latest_step() is not None:
    import orbax.checkpoint as ocp

    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    state = ckpt.restore(ckpt.latest_step(), args=ocp.args.StandardRestore(abstract))
    start_step = int(jax.device_get(state["step"]))
    writer.truncate_after(start_step)
    print(f"Resumed from step {start_step} of {total_steps} in {workdir}", flush=True)
  else:  # A new run, or a resumed one killed before its first checkpoint: start over.
    writer.truncate_after(0)
    if is_main:
      with open(os.path.join(workdir, "config.json"), "w") as f:
        f.write(_config_json(config))

  # Compile ahead of time so timings exclude compilation.
  t0 = time.perf_counter()
  example = _to_global(batches.batch(start_step % max(total_steps, 1)), batch_sharding)
  train_step = (
    jax.jit(
      make_train_step(model, tx, config),
      in_shardings=(replicated, batch_sharding),
      out_shardings=replicated,
      donate_argnums=0,
    )
    .lower(state, example)
    .compile()
  )
  eval_step = jax.jit(make_eval_step(model), out_shardings=replicated)
  compile_time = time.perf_counter() - t0
  if is_main:
    print(
      f"{config.model.name} ({num_params:,} params) on {config.dataset.name} "
      f"({train_split.size} train / {test_split.size} test), optimizer {config.optimizer.name}, "
      f"sparse {config.sparse.method}, {jax.device_count()} device(s), "
      f"{steps_per_epoch} steps/epoch; compiled in {compile_time:.1f}s",
      flush=True,
    )

  last_eval: dict[str, Any] = {}
  step = start_step
  data = batches.iterate(start_step, total_steps)
  while step < total_steps:
    epoch = step // steps_per_epoch
    epoch_end = (epoch + 1) * steps_per_epoch
    bar = None
    if config.progress_bar and is_main:
      from tqdm.auto import tqdm

      bar = tqdm(
        total=steps_per_epoch,
        initial=step - epoch * steps_per_epoch,
        desc=f"epoch {epoch + 1}/{config.num_epochs}",
        leave=False,
      )
    epoch_time, window_start, window_steps = 0.0, time.perf_counter(), 0
    while step < epoch_end:
      state = train_step(state, _to_global(next(data), batch_sharding))
      step += 1
      window_steps += 1
      if bar is not None:
        bar.update(1)
      if step_hook is not None:
        step_hook(step)
      in_epoch = step - epoch * steps_per_epoch
      if in_epoch % config.log_every_steps == 0 or step == epoch_end:
        acc = jax.device_get(state["acc"])
        elapsed = time.perf_counter() - window_start
        epoch_time += elapsed
        n = int(acc["steps"])
        record = {
          "kind": "train",
          "step": step,
          "epoch": step / steps_per_epoch,
          "loss": float(acc["loss_sum"]) / n,
          "accuracy": float(acc["correct"]) / max(int(acc["count"]), 1),
          "learning_rate": float(schedule(step - 1)),
          "images_per_sec": window_steps * config.batch_size / elapsed,
        }
        writer.write(record)
        if bar is not None:
          bar.set_postfix(
            loss=f"{record['loss']:.3f}",
            acc=f"{record['accuracy']:.3f}",
            img_s=f"{record['images_per_sec']:.0f}",
          )
        state = {**state, "acc": jax.device_put(_zero_acc(), replicated)}
        window_start, window_steps = time.perf_counter(), 0
      if step == epoch_end:
        t_eval = time.perf_counter()
        last_eval = {
          "kind": "eval",
          "step": step,
          "epoch": epoch + 1,
          **evaluate(eval_step, state, test_split, spec, config, batch_sharding),
          "train_epoch_time_s": epoch_time,
          "eval_time_s": time.perf_counter() - t_eval,
        }
        writer.write(last_eval)
        if bar is not None:
          bar.close()
        if is_main:
          print(
            f"epoch {epoch + 1}/{config.num_epochs}: train loss {record['loss']:.4f} | "
            f"test loss {last_eval['test_loss']:.4f}, test accuracy "
            f"{last_eval['test_accuracy']:.4f} | {epoch_time:.1f}s train "
            f"({steps_per_epoch * config.batch_size / max(epoch_time, 1e-9):.0f} img/s)",
            flush=True,
          )
      if step % config.checkpoint_every_steps == 0 or step == total_steps:
        import orbax.checkpoint as ocp

        ckpt.save(step, args=ocp.args.StandardSave(state))
  ckpt.wait_until_finished()

  if not last_eval:  # Resumed a finished run: evaluate its final state.
    last_eval = {
      "kind": "eval",
      "step": step,
      "epoch": config.num_epochs,
      **evaluate(eval_step, state, test_split, spec, config, batch_sharding),
    }
  if config.dataset.eval_corrupted:
    last_eval["corrupted"] = evaluate_corrupted(
      eval_step, state, config, data_dir, batch_sharding, writer, step
    )
  if is_main:
    print(f"final test accuracy: {last_eval['test_accuracy']:.4f}", flush=True)
  last_eval["params"] = state["params"]
  return last_eval


def evaluate_corrupted(
  eval_fn: Callable,
  state: dict,
  config: ml_collections.ConfigDict,
  data_dir: str,
  sharding: NamedSharding,
  writer: MetricWriter,
  step: int,
) -> dict[str, float]:
  """Test accuracy on each requested CIFAR-10-C corruption/severity, and their mean."""
  corruptions = _parse_list(
    config.dataset.corruptions, input_pipeline.CIFAR10_CORRUPTIONS, "corruption"
  )
  severities = [int(s) for s in _parse_list(config.dataset.severities, tuple("12345"), "severity")]
  spec = input_pipeline.SPECS["cifar10"]
  results = {}
  for name in input_pipeline.corrupted_names(corruptions, severities):
    split = input_pipeline.load_split(name, "test", data_dir, subset=config.dataset.test_subset)
    out = evaluate(eval_fn, state, split, spec, config, sharding)
    results[name] = out["test_accuracy"]
    writer.write({"kind": "corrupted", "step": step, "name": name, **out})
  results["mean"] = float(np.mean(list(results.values())))
  writer.write(
    {"kind": "corrupted", "step": step, "name": "mean", "test_accuracy": results["mean"]}
  )
  return results


if __name__ == "__main__":
  from experiments import main

  raise SystemExit(main.run())
