"""The optimizer chain of a run, built from ``config.optimizer`` and ``config.sparse``.

Chain: ``head -> add_decayed_weights -> sgd(schedule, momentum)``; with gradient accumulation
(``accumulation_steps = k > 1``) ``head -> MultiSteps(add_decayed_weights -> sgd, k)``: the head
runs on every micro-batch (its own perturbation) and the rest of the chain sees the mean of the
``k`` gradients once per step. The head turns ``loss_fn`` into
the direction the rest of the chain sees: a ``zosam_jax`` SAM-family head (or ``exact_gradient``
for plain SGD), or a fully zeroth-order estimator (``zosa``, ``zo_sgd``, ``mezo``: training from
loss values alone). Heads live in the registry :data:`HEADS` (like the models and the sparse
methods); :func:`register_head` adds one. A ``zosam_jax.sparse`` method wraps the whole chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax

import zosam_jax as zj
from zosam_jax import perturbation_masks as pmasks
from zosam_jax import sparse
from zosam_jax import zeroth_order as zo

SCHEDULES = ("cosine", "constant")
STATIC_SPARSE = ("snip", "grasp")  # methods that score the initial weights on data
# LTH's mask comes from its own train-prune-rewind rounds (lottery.py), not from a wrapper method.
ROUND_BASED_SPARSE = ("lth",)


@dataclasses.dataclass(frozen=True)
class HeadContext:
  """What a head factory may need besides the config.

  ``total_steps`` and ``schedule`` count optimizer steps; ``batch_size`` is the (micro-)batch
  one call of the head sees. With accumulation the head is called ``accumulation_steps`` times a
  step, and its own counters count calls: :meth:`calls` and :attr:`head_schedule` convert.
  """

  total_steps: int
  schedule: optax.Schedule
  seed: int
  batch_size: int
  accumulation_steps: int = 1

  def calls(self, steps: int) -> int:
    """``steps`` optimizer steps in calls of the head."""
    return steps * self.accumulation_steps

  @property
  def head_schedule(self) -> optax.Schedule:
    """The learning-rate schedule as a function of the head's call count."""
    k = self.accumulation_steps
    return self.schedule if k == 1 else (lambda count: self.schedule(count // k))


@dataclasses.dataclass(frozen=True)
class Head:
  """A registry entry: the factory, which per-example inputs its ``update`` needs (``None``;
  ``"per_example"`` as ESAM, in training mode; ``"fisher"`` as SSAM-F, BatchNorm in inference
  mode), whether its ascent is zeroth-order under this config (``probes``: then it takes
  ``guidance``, which ``optimizer.guidance`` sets), and whether its ascent may see a sub-batch
  (``sub_batch_ascent``: its ``update`` takes ``probe_loss_fn=``, which
  ``optimizer.probe_fraction`` sets; every zeroth-order ascent, and the exact ones of SAM and
  LookSAM, whose refreshes' ascent gradient it is). Both are refused for the other heads."""

  build: Callable[[ml_collections.ConfigDict, HeadContext], optax.GradientTransformationExtraArgs]
  batch_losses: Callable[[ml_collections.ConfigDict], str | None] = lambda opt: None
  probes: Callable[[ml_collections.ConfigDict], bool] = lambda opt: False
  sub_batch: Callable[[ml_collections.ConfigDict], bool] | None = None  # None: same as probes

  def sub_batch_ascent(self, opt: ml_collections.ConfigDict) -> bool:
    return (self.sub_batch or self.probes)(opt)


HEADS: dict[str, Head] = {}


def register_head(name: str, head: Head) -> None:
  """Adds ``head`` to :data:`HEADS` under ``name`` (selectable as ``optimizer.name``)."""
  HEADS[name] = head


def zeroth_order_options(opt: ml_collections.ConfigDict) -> zj.ZerothOrderOptions:
  return zj.ZerothOrderOptions(**opt.zeroth_order.to_dict())


def _sam_family(opt, ctx):
  return dict(perturb_leaves=None, seed=ctx.seed, has_aux=True)


def _zo_twin(opt, ctx):
  """The trailing keywords of a head whose ``zo_`` name takes the zeroth-order ascent (the
  library refuses a guidance with the exact ascent, naming it)."""
  ascent = "zeroth_order" if opt.name.startswith("zo_") else "exact"
  return dict(
    ascent=ascent,
    zeroth_order=zeroth_order_options(opt),
    guidance=opt.guidance,
    **_sam_family(opt, ctx),
  )


def _looksam(opt, ctx):
  update_every = ctx.calls(opt.looksam.update_every)
  return zj.looksam(opt.rho, update_every, opt.looksam.alpha, **_zo_twin(opt, ctx))


def _esam(opt, ctx):
  return zj.esam(opt.rho, opt.esam.beta, opt.esam.gamma, **_zo_twin(opt, ctx))


def _sparse_sam(opt, ctx):
  ssam = opt.sparse_sam
  family = _sam_family(opt, ctx)
  family["perturb_leaves"] = perturbed_leaves(ssam.pattern, ssam.unperturbed_layers)
  return zj.sparse_sam(
    opt.rho,
    ssam.sparsity,
    mask_method=ssam.mask_method,
    pattern=ssam.pattern,
    n_m=_pair(ssam.n_m),
    update_every=ctx.calls(ssam.update_every),
    num_fisher_samples=min(ssam.num_fisher_samples, ctx.batch_size),
    end_step=ctx.calls(max(ctx.total_steps, 1)),
    ascent=ssam.ascent,
    zeroth_order=zeroth_order_options(opt),
    guidance=opt.guidance,
    form=ssam.form,
    adaptive=opt.adaptive,
    **family,
  )


def _always(opt):
  return True


def _zosa(opt, ctx):
  return zo.scale_by_zosa(
    opt.rho,
    zeroth_order=zeroth_order_options(opt),
    sigma_normalize=opt.zosa.sigma_normalize,
    adaptive_lr=opt.zosa.adaptive_lr,
    seed=ctx.seed,
    has_aux=True,
  )


for _name, _head in {
  "sgd": Head(lambda opt, ctx: zj.exact_gradient(has_aux=True)),
  "sam": Head(
    lambda opt, ctx: zj.sam(opt.rho, adaptive=opt.adaptive, has_aux=True), sub_batch=_always
  ),
  "zo_sam": Head(
    lambda opt, ctx: zj.zo_sam(
      opt.rho,
      zeroth_order=zeroth_order_options(opt),
      guidance=opt.guidance,
      adaptive=opt.adaptive,
      **_sam_family(opt, ctx),
    ),
    probes=_always,
  ),
  "random_perturbation": Head(
    lambda opt, ctx: zj.random_perturbation(opt.rho, **_sam_family(opt, ctx))
  ),
  "sparse_sam": Head(
    _sparse_sam,
    lambda opt: "fisher" if opt.sparse_sam.mask_method == "fisher" else None,
    probes=lambda opt: opt.sparse_sam.ascent == "zeroth_order",
    sub_batch=_always,
  ),
  "looksam": Head(_looksam, sub_batch=_always),
  "zo_looksam": Head(_looksam, probes=_always),
  "gsam": Head(
    lambda opt, ctx: zj.gsam(
      opt.rho, opt.gsam.rho_min, opt.gsam.alpha, learning_rate=ctx.head_schedule, has_aux=True
    )
  ),
  "esam": Head(_esam, lambda opt: "per_example"),
  "zo_esam": Head(_esam, lambda opt: "per_example", probes=_always),
  "adaptive_zo_sam": Head(
    lambda opt, ctx: zj.adaptive_zo_sam(
      opt.rho,
      opt.adaptive_zo_sam.max_directions,
      noise_decay=opt.adaptive_zo_sam.noise_decay,
      zeroth_order=zeroth_order_options(opt),
      guidance=opt.guidance,
      **_sam_family(opt, ctx),
    ),
    probes=_always,
  ),
  "zosa": Head(_zosa),
  "zo_sgd": Head(
    lambda opt, ctx: zo.scale_by_zo_gradient(
      zeroth_order=zeroth_order_options(opt), seed=ctx.seed, has_aux=True
    )
  ),
  "mezo": Head(
    lambda opt, ctx: zo.scale_by_spsa(
      zeroth_order=zeroth_order_options(opt), seed=ctx.seed, has_aux=True
    )
  ),
}.items():
  register_head(_name, _head)


def layer_names(layers: str) -> tuple[str, ...]:
  """The top-level module names of a comma-separated config field (``sparse.dense_layers``,
  ``optimizer.sparse_sam.unperturbed_layers``)."""
  return tuple(name.strip() for name in str(layers).split(",") if name.strip())


def _pair(value: Any) -> Any:
  """A config pair as a tuple (a list after a JSON round trip: resumed runs); anything else is
  passed on for the library to refuse."""
  return tuple(value) if isinstance(value, list | tuple) else value


def _leaves_outside(names: tuple[str, ...], keep: Callable[[Any], Any]) -> Callable[[Any], Any]:
  """A leaf selection: the leaves ``keep`` flags, outside the top-level modules ``names``."""

  def select(params: Any) -> Any:
    flags = jax.tree.leaves(keep(params))
    paths = sparse.leaf_paths(params)
    chosen = [f and path.split("/")[0] not in names for f, path in zip(flags, paths, strict=True)]
    return jax.tree.unflatten(jax.tree.structure(params), chosen)

  return select


def prunable_leaves(dense_layers: str) -> Callable[[Any], Any] | None:
  """The sparse methods' ``prunable``: kernels (``ndim >= 2``) outside the top-level modules named
  in ``dense_layers`` (``None``, the library's default, when it names none)."""
  names = layer_names(dense_layers)
  return _leaves_outside(names, sparse.default_prunable) if names else None


def perturbed_leaves(pattern: str, unperturbed_layers: str) -> Callable[[Any], Any] | None:
  """Sparse SAM's ``perturb_leaves``: every leaf outside the top-level modules named in
  ``unperturbed_layers``, kernels only (``ndim >= 2``) under ``pattern="n:m"``; ``None`` (the
  library's default: every floating-point leaf) when that is everything.

  N:M blocks run along a kernel's input axis; biases and normalisation scales have none, so under
  ``n:m`` they are not perturbed (rather than perturbed in blocks of output features).
  """
  names = layer_names(unperturbed_layers)
  if pattern == "n:m":
    return _leaves_outside(names, sparse.default_prunable)
  if names:
    return _leaves_outside(names, lambda params: jax.tree.map(lambda _: True, params))
  return None


def _check_module_names(field: str, value: str, params: Any) -> None:
  modules = sorted({path.split("/")[0] for path in sparse.leaf_paths(params)})
  unknown = [n for n in layer_names(value) if n not in modules]
  if unknown:
    raise ValueError(
      f"{field} names {unknown}, not top-level modules of the model (valid: {', '.join(modules)})"
    )


def check_sparse_layout(config: ml_collections.ConfigDict, method: Any, params: Any) -> None:
  """Checks ``config.sparse`` against the model's parameters (shapes suffice): every name of
  ``dense_layers`` is a top-level module, and the method's pattern fits the prunable kernels.

  Raises:
    ValueError: naming the field or the library's argument.
  """
  _check_module_names("sparse.dense_layers", config.sparse.dense_layers, params)
  if method is not None:
    method.prunable_flags(params)


def check_perturbation_layout(config: ml_collections.ConfigDict, params: Any) -> None:
  """Checks ``optimizer.sparse_sam`` against the model's parameters (shapes suffice) when the head
  is ``sparse_sam``: every name of ``unperturbed_layers`` is a top-level module, some leaf is
  left to perturb, and under ``pattern="n:m"`` every perturbed kernel's input axis splits into
  blocks of ``M``. Call it after :func:`create_optimizer` (which checks ``pattern`` and ``n_m``).

  Raises:
    ValueError: naming the field, the leaf and what to set.
  """
  opt = config.optimizer
  if opt.name != "sparse_sam":
    return
  ssam = opt.sparse_sam
  _check_module_names("optimizer.sparse_sam.unperturbed_layers", ssam.unperturbed_layers, params)
  select = perturbed_leaves(ssam.pattern, ssam.unperturbed_layers)
  leaves = jax.tree.leaves(params)
  chosen = [True] * len(leaves) if select is None else jax.tree.leaves(select(params))
  if not any(chosen):
    kind = "kernel" if ssam.pattern == "n:m" else "parameter"
    raise ValueError(
      f"optimizer.sparse_sam.unperturbed_layers={ssam.unperturbed_layers!r} leaves no {kind} to "
      "perturb; name fewer modules"
    )
  if ssam.pattern != "n:m":
    return
  n_m = _pair(ssam.n_m)
  for path, leaf, on in zip(sparse.leaf_paths(params), leaves, chosen, strict=True):
    if not on:
      continue
    try:
      pmasks.check_n_m_shapes([tuple(leaf.shape)], n_m)
    except ValueError:
      raise ValueError(
        f"optimizer.sparse_sam.pattern=n:m with n_m={n_m} needs the input axis (second to last) "
        f"of every perturbed kernel divisible by M={n_m[1]}; '{path}' has shape "
        f"{tuple(leaf.shape)}: leave it unperturbed with "
        f"optimizer.sparse_sam.unperturbed_layers={path.split('/')[0]} (comma-separate more "
        "names) or choose another n_m"
      ) from None


def sparse_methods() -> tuple[str, ...]:
  """Valid ``config.sparse.method`` values: ``dense`` plus ``zosam_jax.sparse``'s registry."""
  return ("dense",) + sparse.method_names()


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


def create_optimizer(
  config: ml_collections.ConfigDict, steps_per_epoch: int
) -> tuple[optax.GradientTransformationExtraArgs, sparse.SparseMethod | None]:
  """The chain ``head -> weight decay -> SGD`` and the configured sparse method (or ``None``).

  Building them is where the library checks its values, so call this before anything is
  compiled; :func:`sparse_chain` then wraps the chain once the parameters exist.

  With ``accumulation_steps = k > 1`` the chain is ``head -> MultiSteps(weight decay -> SGD, k)``
  and ``tx.update`` is called once per micro-batch (``steps.make_train_step``). Every count in
  the config stays in optimizer steps: the head's and the sparse method's counters (which count
  calls) get their intervals and end steps multiplied by ``k``, so SSAM masks, LookSAM
  refreshes and sparse-mask updates happen at the first micro-batch of the same steps as without
  accumulation, and GSAM's radius follows the learning rate of the step.

  Raises:
    ValueError: a value the library refuses (the message names the argument).
  """
  opt, sp = config.optimizer, config.sparse
  k = config.accumulation_steps
  total_steps = config.num_epochs * steps_per_epoch
  schedule = learning_rate_schedule(config, steps_per_epoch)
  context = HeadContext(total_steps, schedule, config.seed, config.batch_size // k, k)
  # Guidance and sub-batch probes both need a zeroth-order ascent: one flag, ``Head.probes``.
  if opt.guidance is not None and not HEADS[opt.name].probes(opt):
    guided = ", ".join(name for name, head in HEADS.items() if head.probes(opt))
    raise ValueError(
      f"optimizer.guidance must be unset (None) for a head without a zeroth-order ascent, got "
      f"{opt.guidance!r}; it applies to {guided} (with their zeroth-order ascent)."
    )
  rest = (
    optax.add_decayed_weights(opt.weight_decay) if opt.weight_decay > 0 else optax.identity(),
    optax.sgd(schedule, momentum=opt.momentum if opt.momentum > 0 else None, nesterov=opt.nesterov),
  )
  head = HEADS[opt.name].build(opt, context)
  if k == 1:
    tx = optax.chain(head, *rest)
  else:  # The head before MultiSteps: it needs loss_fn, and MultiSteps needs real gradients.
    tx = optax.chain(head, optax.MultiSteps(optax.chain(*rest), k).gradient_transformation())
  if sp.method == "dense":
    return tx, None
  common = {
    "sparsity": sp.sparsity,
    "sparsity_distribution": sp.sparsity_distribution,
    "pattern": sp.pattern,
    "n_m": _pair(sp.n_m),
    "prunable": prunable_leaves(sp.dense_layers),
  }
  if sp.method == "grasp":
    return tx, sparse.get_method("grasp", samples_per_class=sp.grasp_samples_per_class, **common)
  if sp.method in ROUND_BASED_SPARSE:
    return tx, sparse.get_method(sp.method, rounds=sp.lth.rounds, **common)
  if sp.method in STATIC_SPARSE:
    return tx, sparse.get_method(sp.method, **common)
  return tx, sparse.get_method(
    sp.method,
    update_every=context.calls(sp.update_every),
    end_step=context.calls(max(1, int(round(sp.end_fraction * total_steps)))),
    drop_fraction=sp.drop_fraction,
    seed=config.seed,
    has_aux=True,
    **common,
  )


def sparse_chain(
  tx: optax.GradientTransformationExtraArgs,
  method: sparse.SparseMethod | None,
  params: Any,
  *,
  weight_mask: Any = None,
  apply_fn: Callable[[Any, Any], Any] | None = None,
  scoring_data: tuple[Any, Any] | None = None,
) -> optax.GradientTransformationExtraArgs:
  """``tx`` wrapped by the sparse method (``tx`` itself when dense).

  Args:
    weight_mask: LTH only: the fixed mask of the current round (``None``: dense round 0).
    apply_fn: ``(params, images) -> logits`` without state updates; SNIP and GraSP only.
    scoring_data: ``(images, labels)`` the static methods score the initial weights on.
  """
  if method is None:
    return tx
  if isinstance(method, sparse.LTH):
    return method.wrap(tx, params, mask=weight_mask)
  if isinstance(method, sparse.SNIP):
    images, labels = scoring_data

    def loss_fn(p):
      logits = apply_fn(p, images)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return method.wrap(tx, params, loss_fn=loss_fn)
  if isinstance(method, sparse.GraSP):
    images, labels = scoring_data
    return method.wrap(tx, params, apply_fn=apply_fn, inputs=images, labels=labels)
  return method.wrap(tx, params)
