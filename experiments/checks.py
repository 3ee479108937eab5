"""The trainer's own config checks: names of datasets, models, heads and sparse methods, sizes.

Values that belong to the library (radii, directions, sparsities, intervals) are checked by the
library when the run builds its optimizer (:func:`configure`, before any data is read), with
messages naming the argument.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from experiments import input_pipeline, label_noise, models, optimizers
from experiments.errors import ConfigError
from zosam_jax import sparse


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
  if value not in valid:
    raise ConfigError(f"unknown {name} '{value}'; valid: {', '.join(valid)}")


def _check(name: str, value: Any, ok: Callable[[Any], bool], what: str) -> None:
  number = isinstance(value, int | float) and not isinstance(value, bool)
  if not (number and not math.isnan(value) and ok(value)):
    raise ConfigError(f"{name} must be {what}, got {value!r}")


def parse_list(text: str, valid: tuple, name: str) -> list[str]:
  items = [str(v) for v in valid] if text == "all" else [s.strip() for s in str(text).split(",")]
  for item in items:
    _choice(name, item, tuple(str(v) for v in valid))
  return items


def validate_config(config: ml_collections.ConfigDict, device_count: int | None = None) -> None:
  """Checks the trainer's own fields (names, sizes); raises ``ConfigError`` with one line.

  The optimizer's and sparse method's values are the library's to check (``build_optimizer``).
  """
  device_count = jax.device_count() if device_count is None else device_count
  _choice("dataset", config.dataset.name, input_pipeline.DATASETS)
  _choice("model", config.model.name, models.MODELS)
  _choice("model.dtype", config.model.dtype, tuple(models.DTYPES))
  opt = config.optimizer
  _choice("optimizer", opt.name, tuple(optimizers.HEADS))
  _choice("sparse method", config.sparse.method, optimizers.sparse_methods())
  _choice("learning-rate schedule", opt.schedule, optimizers.SCHEDULES)
  _check("optimizer.learning_rate", opt.learning_rate, lambda v: 0 < v < math.inf, "> 0")
  _check("optimizer.momentum", opt.momentum, lambda v: 0 <= v < 1, "in [0, 1)")
  _check("optimizer.weight_decay", opt.weight_decay, lambda v: 0 <= v < math.inf, ">= 0")
  _check(
    "optimizer.warmup_epochs",
    opt.warmup_epochs,
    lambda v: 0 <= v <= config.num_epochs,
    "in [0, num_epochs]",
  )
  _check("sparse.end_fraction", config.sparse.end_fraction, lambda v: 0 < v <= 1, "in (0, 1]")
  sp = config.sparse
  _choice("sparse pattern", sp.pattern, sparse.PATTERNS)
  if sp.pattern != "unstructured" and sp.method == "dense":
    raise ConfigError(f"sparse.pattern={sp.pattern} needs a sparse.method; it is 'dense'")
  if sp.pattern == "channel" and "head" not in optimizers.layer_names(sp.dense_layers):
    raise ConfigError(
      "sparse.pattern=channel would prune output channels of the classifier, i.e. classes: "
      "keep it dense with sparse.dense_layers=head (comma-separate more names)"
    )
  _check("optimizer.probe_fraction", opt.probe_fraction, lambda v: 0 < v <= 1, "in (0, 1]")
  if opt.probe_fraction != 1 and not optimizers.HEADS[opt.name].sub_batch_ascent(opt):
    probing = [n for n, h in optimizers.HEADS.items() if h.sub_batch_ascent(opt)]
    raise ConfigError(
      f"optimizer.probe_fraction must be 1 for optimizer.name={opt.name}, whose ascent cannot "
      f"see a sub-batch (heads whose ascent can: {', '.join(probing)}), got "
      f"{opt.probe_fraction!r}"
    )
  if config.sparse.method in optimizers.ROUND_BASED_SPARSE:  # The run's length is checked later.
    lth = config.sparse.lth
    _check(
      "sparse.lth.rounds", lth.rounds, lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"
    )
    if lth.rewind_step is not None:
      _check(
        "sparse.lth.rewind_step",
        lth.rewind_step,
        lambda v: isinstance(v, int) and v >= 0,
        "an integer >= 0 (a step)",
      )
  for name in (
    "batch_size",
    "eval_batch_size",
    "num_epochs",
    "log_every_steps",
    "checkpoint_every_steps",
    "keep_checkpoints",
  ):
    _check(name, config[name], lambda v: isinstance(v, int) and v >= 1, "an integer >= 1")
  _check(
    "eval_every_steps",
    config.eval_every_steps,
    lambda v: isinstance(v, int) and v >= 0,
    "an integer >= 0 (0: evaluate at epoch ends only)",
  )
  for name in ("train_subset", "test_subset", "validation_size", "workers"):
    _check(
      f"dataset.{name}",
      config.dataset[name],
      lambda v: isinstance(v, int) and v >= 0,
      "an integer >= 0",
    )
  problem = label_noise.check(
    config.dataset.label_noise, config.dataset.label_noise_kind, config.dataset.name
  )
  if problem:
    raise ConfigError(problem)
  if config.dataset.label_noise and not input_pipeline.SPECS[config.dataset.name].in_memory:
    raise ConfigError(
      f"dataset.label_noise needs an in-memory dataset, not {config.dataset.name}; valid: "
      f"{', '.join(n for n, s in input_pipeline.SPECS.items() if s.in_memory)}"
    )
  _check(
    "accumulation_steps",
    config.accumulation_steps,
    lambda v: isinstance(v, int) and v >= 1,
    "an integer >= 1 (1: no accumulation)",
  )
  for name in ("batch_size", "eval_batch_size"):
    if config[name] % device_count:
      raise ConfigError(
        f"{name} {config[name]} is not divisible by the {device_count} devices; "
        f"use a multiple of {device_count}"
      )
  micro = device_count * config.accumulation_steps
  if config.batch_size % micro:
    raise ConfigError(
      f"batch_size {config.batch_size} must split into accumulation_steps="
      f"{config.accumulation_steps} equal micro-batches over the {device_count} devices; use a "
      f"multiple of {micro}"
    )
  if config.tensorboard and importlib.util.find_spec("tensorboardX") is None:
    raise ConfigError(
      "tensorboard=True needs tensorboardX (pip install -r requirements.txt); or pass "
      "--config.tensorboard=False"
    )
  if config.dataset.eval_corrupted:
    _choice("dataset for eval_corrupted", config.dataset.name, tuple(input_pipeline.CORRUPTIONS))
    parse_list(
      config.dataset.corruptions, input_pipeline.CORRUPTIONS[config.dataset.name], "corruption"
    )
    parse_list(config.dataset.severities, input_pipeline.CORRUPTION_SEVERITIES, "severity")
  if config.model.name.startswith("deit"):
    size = input_pipeline.SPECS[config.dataset.name].image_shape[0]
    if size % config.model.patch_size:
      raise ConfigError(f"model.patch_size {config.model.patch_size} does not divide {size}")


def configure(
  config: ml_collections.ConfigDict, spec: input_pipeline.DatasetSpec, steps_per_epoch: int
) -> tuple[Any, Any, Any]:
  """``(model, chain, method)``: the model (not initialised), the optimizer chain and the sparse
  method, with the library's values and the sparsity layouts checked against the model's kernel
  shapes (``jax.eval_shape``: nothing is compiled or read).

  Raises ``ConfigError`` for a value the library refuses (its message names the argument).
  """
  kwargs = {"patch_size": config.model.patch_size} if config.model.name.startswith("deit") else {}
  model = models.create_model(
    config.model.name, spec.num_classes, dtype=config.model.dtype, **kwargs
  )
  dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)
  try:
    chain, method = optimizers.create_optimizer(config, steps_per_epoch)
    shapes = jax.eval_shape(lambda k: model.init(k, dummy, train=False), jax.random.key(0))
    optimizers.check_sparse_layout(config, method, shapes["params"])
    optimizers.check_perturbation_layout(config, shapes["params"])
  except ValueError as e:
    raise ConfigError(
      f"optimizer.name={config.optimizer.name}, sparse.method={config.sparse.method}: {e}"
    ) from None
  return model, chain, method
