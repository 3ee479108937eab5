"""The optimizer chain of a run, built from ``config.optimizer`` and ``config.sparse``.

Chain: ``head -> add_decayed_weights -> sgd(schedule, momentum)``, where the head is one of
``zosam_jax``'s SAM-family transforms (or ``exact_gradient`` for plain SGD): it takes the
``loss_fn=`` extra argument and produces the gradient. A sparse-training method from
``zosam_jax.sparse`` (when installed) wraps the whole chain.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

import ml_collections
import optax

import zosam_jax as zj

OPTIMIZERS = ("sgd", "sam", "zo_sam", "sparse_sam")
SCHEDULES = ("cosine", "constant")
SSAM_MASK_METHODS = ("fisher", "dynamic", "random")
DISTRIBUTIONS = ("gaussian", "rademacher")
SCHEMES = ("central", "forward")


def sparse_available() -> bool:
  """Whether ``zosam_jax.sparse`` (the sparse-training wrappers) is installed."""
  return importlib.util.find_spec("zosam_jax.sparse") is not None


def sparse_methods() -> tuple[str, ...]:
  """Valid ``config.sparse.method`` values: ``dense`` plus the registry of ``zosam_jax.sparse``."""
  if not sparse_available():
    return ("dense",)
  from zosam_jax import sparse

  names = getattr(sparse, "METHODS", None)
  if names is None and hasattr(sparse, "available_methods"):
    names = sparse.available_methods()
  return ("dense",) + tuple(names or ())


def learning_rate_schedule(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> optax.Schedule:
  """Cosine decay to 0 over the run (optionally after a linear warm-up), or a constant."""
  opt = config.optimizer
  total = config.num_epochs * steps_per_epoch
  if opt.schedule == "constant":
    return optax.constant_schedule(opt.learning_rate)
  warmup = int(round(opt.warmup_epochs * steps_per_epoch))
  if warmup > 0:
    return optax.warmup_cosine_decay_schedule(
      0.0, opt.learning_rate, warmup, max(total, warmup + 1)
    )
  return optax.cosine_decay_schedule(opt.learning_rate, max(total, 1))


def create_head(
  config: ml_collections.ConfigDict, total_steps: int
) -> optax.GradientTransformationExtraArgs:
  """The chain's head: the transform that turns ``loss_fn`` into a gradient."""
  opt = config.optimizer
  if opt.name == "sgd":
    return zj.exact_gradient(has_aux=True)
  if opt.name == "sam":
    return zj.sam(opt.rho, adaptive=opt.adaptive, has_aux=True)
  if opt.name == "zo_sam":
    return zj.zo_sam(
      opt.rho,
      opt.num_directions,
      opt.smoothing,
      config.seed,
      distribution=opt.distribution,
      scheme=opt.scheme,
      probe_batch_size=opt.probe_batch_size,
      adaptive=opt.adaptive,
      has_aux=True,
    )
  if opt.name == "sparse_sam":
    return zj.sparse_sam(
      opt.rho,
      opt.ssam_sparsity,
      mask_method=opt.ssam_mask_method,
      update_interval=opt.ssam_update_interval,
      num_fisher_samples=min(opt.ssam_num_fisher_samples, config.batch_size),
      total_steps=max(total_steps, 1),
      ascent=opt.ssam_ascent,
      num_directions=opt.num_directions,
      smoothing=opt.smoothing,
      distribution=opt.distribution,
      scheme=opt.scheme,
      probe_batch_size=opt.probe_batch_size,
      adaptive=opt.adaptive,
      seed=config.seed,
      has_aux=True,
    )
  raise ValueError(f"unknown optimizer '{opt.name}'; valid: {', '.join(OPTIMIZERS)}")


def create_optimizer(
  config: ml_collections.ConfigDict, params: Any, steps_per_epoch: int
) -> optax.GradientTransformationExtraArgs:
  """The full chain, wrapped by the configured sparse-training method (if any)."""
  opt = config.optimizer
  total_steps = config.num_epochs * steps_per_epoch
  tx = optax.chain(
    create_head(config, total_steps),
    optax.add_decayed_weights(opt.weight_decay) if opt.weight_decay > 0 else optax.identity(),
    optax.sgd(
      learning_rate_schedule(config, steps_per_epoch),
      momentum=opt.momentum if opt.momentum > 0 else None,
      nesterov=opt.nesterov,
    ),
  )
  if config.sparse.method == "dense":
    return tx
  from zosam_jax import sparse  # Optional: only when a sparse method was asked for.

  kwargs = dict(sparsity=config.sparse.sparsity, distribution=config.sparse.distribution)
  if config.sparse.method not in ("snip", "grasp", "lth", "static"):
    kwargs["update_every"] = config.sparse.update_every
    kwargs["total_steps"] = total_steps
  method = sparse.get_method(config.sparse.method, **kwargs)
  return method.wrap(tx, params)


def check_range(name: str, value: float, low: float, high: float, *, closed_high: bool) -> None:
  """Raises ``ValueError`` unless ``low < value < high`` (or ``<= high``); NaN never passes."""
  ok = low < value <= high if closed_high else low < value < high
  if not (isinstance(value, (int, float)) and not math.isnan(value) and ok):
    bracket = "]" if closed_high else ")"
    raise ValueError(f"{name} must be in ({low}, {high}{bracket}, got {value!r}")
