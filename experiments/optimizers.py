"""The optimizer chain of a run, built from ``config.optimizer`` and ``config.sparse``.

Chain: ``head -> add_decayed_weights -> sgd(schedule, momentum)``, where the head is one of
``zosam_jax``'s SAM-family transforms (or ``exact_gradient`` for plain SGD): it takes the
``loss_fn=`` extra argument and produces the gradient. A sparse-training method from
``zosam_jax.sparse`` (when installed) wraps the whole chain.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import ml_collections
import optax

import zosam_jax as zj

OPTIMIZERS = (
  "sgd",
  "sam",
  "zo_sam",
  "sparse_sam",
  "looksam",
  "zo_looksam",
  "gsam",
  "esam",
  "zo_esam",
  "adaptive_zo_sam",
)
# Heads whose loss is given per example (``per_example_loss_fn=``, ``batch=``).
PER_EXAMPLE_HEADS = ("esam", "zo_esam")
# Heads that estimate the ascent direction with zeroth-order probes.
ZEROTH_ORDER_HEADS = ("zo_sam", "zo_looksam", "zo_esam")
SCHEDULES = ("cosine", "constant")
SSAM_MASK_METHODS = ("fisher", "dynamic", "random")
DISTRIBUTIONS = ("gaussian", "rademacher")
SCHEMES = ("central", "forward")


def sparse_available() -> bool:
  """Whether ``zosam_jax.sparse`` (the sparse-training wrappers) is installed."""
  return importlib.util.find_spec("zosam_jax.sparse") is not None


# Sparse methods whose mask needs a training loop of its own (LTH's prune-rewind rounds).
UNSUPPORTED_SPARSE = ("lth",)
STATIC_SPARSE = ("snip", "grasp")


def sparse_methods() -> tuple[str, ...]:
  """Valid ``config.sparse.method`` values: ``dense`` plus ``zosam_jax.sparse``'s registry."""
  if not sparse_available():
    return ("dense",)
  from zosam_jax import sparse

  return ("dense",) + tuple(n for n in sparse.method_names() if n not in UNSUPPORTED_SPARSE)


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
  config: ml_collections.ConfigDict, total_steps: int, schedule: optax.Schedule | None = None
) -> optax.GradientTransformationExtraArgs:
  """The chain's head: the transform that turns ``loss_fn`` into a gradient.

  ``schedule`` is the chain's learning rate (GSAM ties its radius to it).
  """
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
  zo = {
    "num_directions": opt.num_directions,
    "smoothing": opt.smoothing,
    "distribution": opt.distribution,
    "scheme": opt.scheme,
    "probe_batch_size": opt.probe_batch_size,
    "seed": config.seed,
    "has_aux": True,
  }
  if opt.name in ("looksam", "zo_looksam"):
    ascent = "zeroth_order" if opt.name == "zo_looksam" else "exact"
    return zj.looksam(opt.rho, opt.looksam_reuse_period, opt.looksam_alpha, ascent=ascent, **zo)
  if opt.name in ("esam", "zo_esam"):
    ascent = "zeroth_order" if opt.name == "zo_esam" else "exact"
    return zj.esam(opt.rho, opt.esam_beta, opt.esam_gamma, ascent=ascent, **zo)
  if opt.name == "gsam":
    return zj.gsam(
      opt.rho,
      opt.rho if opt.gsam_rho_min < 0 else opt.gsam_rho_min,
      opt.gsam_alpha,
      learning_rate=schedule,
      has_aux=True,
    )
  if opt.name == "adaptive_zo_sam":
    return zj.adaptive_zo_sam(
      opt.rho,
      opt.num_directions,
      opt.max_directions,
      opt.smoothing,
      config.seed,
      distribution=opt.distribution,
      has_aux=True,
    )
  raise ValueError(f"unknown optimizer '{opt.name}'; valid: {', '.join(OPTIMIZERS)}")


def create_optimizer(
  config: ml_collections.ConfigDict,
  params: Any,
  steps_per_epoch: int,
  *,
  apply_fn: Callable[[Any, Any], Any] | None = None,
  scoring_data: tuple[Any, Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """The full chain, wrapped by the configured sparse-training method (if any).

  Args:
    config: the run's config.
    params: initial parameters (the sparse wrapper's layout; SNIP/GraSP score them).
    steps_per_epoch: for the learning-rate schedule and the dynamic methods' end step.
    apply_fn: ``(params, images) -> logits`` without state updates; SNIP and GraSP only.
    scoring_data: ``(images, labels)`` the static methods score the initial weights on.
  """
  opt = config.optimizer
  total_steps = config.num_epochs * steps_per_epoch
  schedule = learning_rate_schedule(config, steps_per_epoch)
  tx = optax.chain(
    create_head(config, total_steps, schedule),
    optax.add_decayed_weights(opt.weight_decay) if opt.weight_decay > 0 else optax.identity(),
    optax.sgd(
      schedule,
      momentum=opt.momentum if opt.momentum > 0 else None,
      nesterov=opt.nesterov,
    ),
  )
  sp = config.sparse
  if sp.method == "dense":
    return tx
  from zosam_jax import sparse  # Optional: only when a sparse method was asked for.

  common = {"sparsity": sp.sparsity, "distribution": sp.distribution}
  if sp.method in STATIC_SPARSE:
    if apply_fn is None or scoring_data is None:
      raise ValueError(f"sparse method {sp.method} needs apply_fn and scoring_data")
    images, labels = scoring_data
    if sp.method == "snip":

      def loss_fn(p):
        logits = apply_fn(p, images)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

      return sparse.get_method("snip", **common).wrap(tx, params, loss_fn=loss_fn)
    method = sparse.get_method("grasp", samples_per_class=sp.grasp_samples_per_class, **common)
    return method.wrap(tx, params, apply_fn=apply_fn, inputs=images, labels=labels)
  method = sparse.get_method(
    sp.method,
    update_every=sp.update_every,
    end_step=max(1, int(round(sp.end_fraction * total_steps))),
    drop_fraction=sp.drop_fraction,
    seed=config.seed,
    has_aux=True,
    **common,
  )
  return method.wrap(tx, params)
