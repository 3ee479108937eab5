"""Fully zeroth-order optimisers: ZOSA and the ZO baselines it is compared with.

Every transform here needs only loss VALUES: ``update(updates, state, params, loss_fn=loss_fn)``
ignores ``updates`` (pass ``None``) and calls ``loss_fn`` a fixed, documented number of times per
step (``state.queries`` counts them). They are full optimisers (their updates are added to the
params with ``optax.apply_updates``); the ``scale_by_*`` heads give the descent direction before
the learning rate, to put at the head of any ``optax.chain``.

ZOSA (Fu et al., 2025), one step at ``theta`` with ``m`` Rademacher directions and smoothing
``mu`` (the ``forward`` two-point scheme, as in the paper and in FZOO)::

  l_0 = L(theta),  l_i = L(theta + mu u_i)                            (m + 1 queries)
  g   = 1/m sum_i (l_i - l_0) / mu * u_i                               (random gradient estimate)
  s   = std(l_1..l_m) / mu                                             (probe-loss variability)
  eps = rho g / s               [sigma_normalize]   or   rho g / ||g||   [otherwise]
  g', s' from the same estimator at theta + eps, with fresh directions (m + 1 queries)
  update = -lr g' / s'          [adaptive_lr]       or   -lr g'          [otherwise]

So a ZOSA step costs ``2(m + 1)`` queries (``4m`` with ``scheme="central"``), twice a ZO-SGD step
with the same ``m``; compare them at equal query budgets, never per step.

Why divide by ``s`` rather than by ``||g||``: the directional derivatives ``c_i = u_i^T grad L``
of Rademacher directions have mean 0 and variance ``||grad L||^2``, so ``s`` estimates
``||grad L||`` from the probes alone (with ``m - 1`` degrees of freedom), and ``rho g / s`` is
(nearly) an unbiased estimate of SAM's perturbation ``rho grad L / ||grad L||``. The norm of the
estimate instead grows like ``||grad L|| sqrt(1 + (d - 1)/m)``, so ``rho g / ||g||`` keeps only
about ``rho sqrt(m/d)`` of its length along the gradient. The price: ``||eps||`` is about
``rho sqrt(1 + (d - 1)/m)``, most of it a random (zero-mean) component, so ``rho`` must be smaller
than a first-order SAM's. Likewise ``-lr g'/s'`` is a zeroth-order normalised-SGD step whose length
does not depend on the scale of the loss (FZOO's "adaptive step size").

Choices where the seed is silent (each is a switch, for the ablation):

* ``sam``: the inner perturbation on/off. With ``sam=False`` ZOSA is exactly its base optimizer,
  :func:`zo_sgd` (``sigma_step=adaptive_lr``), at half the cost per step.
* ``sigma_normalize``: the inner radius ``rho g / s`` (on) or ``rho g / ||g||`` (off, ZO-SAM's).
* ``adaptive_lr``: the outer step ``lr / s'`` (on; the paper's "adaptive learning rate guided by
  loss variability", FZOO's step) or ``lr`` (off, a plain ZO-SGD step on ``g'``). Together with
  ``sigma_normalize`` this is the "sigma-normalisation of both the inner radius and the outer
  step" of the paper; they are separate switches so the ablation can remove each.
* The outer estimate uses directions independent of the inner ones (a fresh key): reusing them
  would save no query and would correlate ``eps`` with the update's noise.
* ``s`` is the sample standard deviation (``ddof=1``) of the ``m`` probe losses (``forward``) or
  of the ``2m`` probe losses (``central``); a zero ``s`` (a flat loss) gives ``eps = 0`` and a
  zero update, never NaN. The ``forward`` scheme with sigma needs ``m >= 2``.
* ``state.value`` is the loss at ``theta`` seen by this step's probes (``l_0``; the mean of the
  probe losses for ``central``), so reporting it costs no query.

Baselines with the same interface: :func:`zo_sgd` (RGE + SGD, optional heavy-ball momentum, or
FZOO's sigma step), :func:`zo_adam` (Adam on the RGE estimate) and :func:`mezo` (MeZO's SPSA:
directions regenerated from their keys in two passes, so memory does not grow with ``m``).

Options: one :class:`zosam_jax.ZerothOrderOptions` (``zeroth_order=``); ``num_directions=`` and
``smoothing=`` are short forms on top of it. Each optimizer keeps its own default options (ZOSA,
ZO-SGD, ZO-Adam: 8 Rademacher directions, forward differences; MeZO: 1 Gaussian direction,
central differences). Directions come from the library's one probe loop (the same keys give the
same directions as :func:`zosam_jax.rge`). The state's key is split every step, so two replicas
with equal states draw equal directions.

State protocol: every state here is a :class:`ZerothOrderState` with ``value`` (the loss at
``theta``) and ``aux``: with ``has_aux=True``, the aux of ``loss_fn(theta)`` (the forward
scheme's own ``L(theta)``; one extra, counted query for the central scheme), so a training loop
reads them like any head's.

References:
  Fu, Jin, Zhang, Liu, Dai & Ye, "Zero-Order Sharpness-Aware Minimization", arXiv 2511.09156
  (ZOSA; an ICLR 2026 submission).
  Dang et al., "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large Language Models towards
  Adam-Scale Speed", ICLR 2026 (arXiv 2506.09034).
  Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023
  (arXiv 2305.17333; MeZO).
  Chen et al., "ZO-AdaMM: Zeroth-Order Adaptive Momentum Method", NeurIPS 2019.
  Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from zosam_jax._src import losses, options, probing, trees, validation
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import LossFn, PyTree, Scheme

#: The options of ZOSA and the RGE baselines (m = 8 Rademacher directions, forward
#: differences, as in the paper).
ZOSA_OPTIONS = ZerothOrderOptions(num_directions=8, distribution="rademacher", scheme="forward")
#: The options of MeZO (one Gaussian direction, central differences, i.e. SPSA).
MEZO_OPTIONS = ZerothOrderOptions(num_directions=1, distribution="gaussian", scheme="central")
# Why these optimizers refuse ``probe_loss_fn``: a sub-batch for them is a smaller ``loss_fn``.
PROBES_ARE = "whose probes are the update itself (close loss_fn over the sub-batch instead)"


def _options(
  zeroth_order: ZerothOrderOptions | None,
  default: ZerothOrderOptions,
  num_directions: int | None,
  smoothing: float | None,
  *,
  needs_sigma: bool = False,
  spsa: bool = False,
) -> ZerothOrderOptions:
  opts = options.resolve(zeroth_order, default, num_directions=num_directions, smoothing=smoothing)
  if spsa:
    validation.check_choice("zeroth_order.scheme", opts.scheme, ("central",))
  else:
    validation.check_choice("zeroth_order.scheme", opts.scheme, ("forward", "central"))
  if needs_sigma and opts.scheme == "forward" and opts.num_directions < 2:
    raise ValueError(
      "num_directions must be >= 2 with scheme='forward' when the loss std is used "
      f"(sigma_normalize/adaptive_lr/sigma_step), got {opts.num_directions}: the std of one "
      "probe loss is undefined."
    )
  return opts


def _check_flags(**flags: Any) -> None:
  for name, flag in flags.items():
    validation.check_bool(name, flag)


def _zosa_options(
  rho: float,
  zeroth_order: ZerothOrderOptions | None,
  num_directions: int | None,
  smoothing: float | None,
  sam: bool,
  sigma_normalize: bool,
  adaptive_lr: bool,
  has_aux: bool,
) -> ZerothOrderOptions:
  """Checks ZOSA's arguments (:func:`zosa_direction`, :func:`scale_by_zosa`); its options."""
  validation.check_nonnegative("rho", rho)
  _check_flags(sam=sam, sigma_normalize=sigma_normalize, adaptive_lr=adaptive_lr, has_aux=has_aux)
  needs_sigma = adaptive_lr or (sam and sigma_normalize)
  return _options(zeroth_order, ZOSA_OPTIONS, num_directions, smoothing, needs_sigma=needs_sigma)


def queries_per_estimate(num_directions: int, scheme: Scheme) -> int:
  """Loss evaluations of one random gradient estimate.

  Args:
    num_directions: ``m >= 1``.
    scheme: ``"forward"``, ``"central"`` or ``"jvp"``.

  Returns:
    ``m + 1`` (forward), ``2m`` (central) or ``m`` (jvp: forward-mode passes).
  """
  return ZerothOrderOptions(num_directions, scheme=scheme).queries


# ----------------------------------------------------------------------------- probing


class Probe(NamedTuple):
  """One zeroth-order estimate at a point, with what the probes saw.

  Attributes:
    estimate: float32 list, one array per active leaf: ``1/m sum_i c_i u_i``.
    value: float32 scalar, ``L(x)`` (forward) or the mean probe loss (central).
    sigma: float32 scalar, ``std(losses, ddof=1) / mu`` (0 if fewer than two probe losses).
  """

  estimate: list[jax.Array]
  value: jax.Array
  sigma: jax.Array


def probe(
  loss: Callable[[PyTree], jax.Array],
  flat: trees.Flat,
  key: jax.Array,
  opts: ZerothOrderOptions,
  *,
  base: jax.Array | None = None,
) -> Probe:
  """The library's probe loop, plus the probe-loss std that the sigma-normalisation needs.

  Args:
    loss: ``x -> scalar`` on the full parameter pytree (aux already dropped).
    flat: the point ``x`` in the library's flat form (``zosam_jax._src.trees.Flat``: the leaves,
      which of them are probed, their masks).
    key: a ``jax.random`` key for the directions.
    opts: the estimator's options (scheme ``"forward"`` or ``"central"``).
    base: ``L(x)`` when the caller has already evaluated it (the forward scheme then reuses it
      instead of evaluating it again); ``None`` otherwise.

  Returns:
    A :class:`Probe`: the estimate on the probed leaves, the loss at ``x`` the probes saw and
    the probe-loss std over the smoothing.
  """
  result = probing.probe(loss, flat, key, opts, base=base)
  value = result.base if opts.scheme == "forward" else jnp.mean(result.losses)
  assert value is not None  # the forward scheme always has L(x)
  flat_losses = result.losses.reshape(-1)
  if flat_losses.size >= 2:
    sigma = jnp.std(flat_losses, ddof=1) / opts.smoothing
  else:
    sigma = jnp.zeros([], jnp.float32)
  return Probe([t / opts.num_directions for t in result.total], value, sigma)


def _shift_flat(flat: trees.Flat, parts: list[jax.Array]) -> trees.Flat:
  """The point ``x + parts`` as a new ``Flat`` with the same active leaves."""
  return flat._replace(leaves=trees.shifted_leaves(flat, parts, 1.0))


def _value_and_aux(
  loss_fn: LossFn, params: PyTree, has_aux: bool, value: jax.Array
) -> tuple[jax.Array, Any]:
  """``(value, aux)`` reported by a step: the aux of ``loss_fn(theta)`` when ``has_aux``."""
  if not has_aux:
    return value, None
  return losses.split_value_aux(loss_fn(params), True)


# ----------------------------------------------------------------------------- ZOSA, pure


class ZOSAStep(NamedTuple):
  """What :func:`zosa_direction` returns.

  Attributes:
    value: float32 loss at ``theta`` measured by the step's first probes (no extra query).
    direction: pytree like params, the descent direction ``g'/s'`` (or ``g'``); the update is
      ``-lr * direction``.
    sigma: float32 ``s'``, probe-loss std / smoothing at the outer point (``theta + eps``).
    inner_sigma: float32 ``s`` at ``theta`` (equal to ``sigma`` when ``sam=False``).
    perturbation_norm: float32 ``||eps||`` (0 when ``sam=False``).
    queries: Python int, the loss evaluations this step made.
  """

  value: jax.Array
  direction: PyTree
  sigma: jax.Array
  inner_sigma: jax.Array
  perturbation_norm: jax.Array
  queries: int


def zosa_direction(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  rho: float,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  sam: bool = True,
  sigma_normalize: bool = True,
  adaptive_lr: bool = True,
  has_aux: bool = False,
) -> ZOSAStep:
  """ZOSA's descent direction at ``params`` from loss values only (see the module docstring).

  ``key`` is split into an inner key (directions at ``theta``) and an outer key (directions at
  ``theta + eps``); with ``sam=False`` only the outer key is used, at ``theta``, so the step equals
  :func:`zo_sgd`'s with the same key.

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``; aux discarded).
      Close it over one batch and one noise key so every probe sees the same randomness.
    params: ``theta``; integer leaves are never perturbed.
    key: a ``jax.random`` key.
    rho: inner radius ``>= 0`` (see the module docstring for its scale under sigma_normalize).
    zeroth_order: the estimator's options (default :data:`ZOSA_OPTIONS`; scheme ``"forward"``,
      ``m + 1`` queries per estimate, or ``"central"``, ``2m``).
    num_directions, smoothing: short forms over ``zeroth_order``.
    sam, sigma_normalize, adaptive_lr: the three switches of the ablation.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    A :class:`ZOSAStep`.

  References:
    Fu et al., arXiv 2511.09156; Dang et al. (FZOO), arXiv 2506.09034.
  """
  opts = _zosa_options(
    rho, zeroth_order, num_directions, smoothing, sam, sigma_normalize, adaptive_lr, has_aux
  )
  return _zosa_direction(
    loss_fn, params, key, rho, opts, sam, sigma_normalize, adaptive_lr, has_aux
  )


def _zosa_direction(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  rho: float,
  opts: ZerothOrderOptions,
  sam: bool,
  sigma_normalize: bool,
  adaptive_lr: bool,
  has_aux: bool,
  base: jax.Array | None = None,
) -> ZOSAStep:
  """``base``: ``L(theta)`` if already evaluated, for the probe at ``theta`` to reuse."""
  loss = losses.scalar_loss(loss_fn, has_aux)
  flat = trees.flatten(params)
  inner_key, outer_key = jax.random.split(key)
  if sam:
    inner = probe(loss, flat, inner_key, opts, base=base)
    scale = inner.sigma if sigma_normalize else trees.norm(inner.estimate)
    eps = trees.safe_divide([rho * g for g in inner.estimate], scale)
    outer = probe(loss, _shift_flat(flat, eps), outer_key, opts)
    value, inner_sigma, eps_norm, queries = (
      inner.value,
      inner.sigma,
      trees.norm(eps),
      2 * (opts.queries),
    )
  else:
    outer = probe(loss, flat, outer_key, opts, base=base)
    value, inner_sigma, eps_norm, queries = outer.value, outer.sigma, jnp.zeros([]), opts.queries
  direction = trees.safe_divide(outer.estimate, outer.sigma) if adaptive_lr else outer.estimate
  return ZOSAStep(
    value, trees.to_params(flat, direction), outer.sigma, inner_sigma, eps_norm, queries
  )


# ----------------------------------------------------------------------------- MeZO's SPSA, pure


def spsa_direction(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  has_aux: bool = False,
) -> tuple[jax.Array, PyTree]:
  """MeZO's SPSA estimate ``1/m sum_i (L(x + mu z_i) - L(x - mu z_i)) / (2 mu) z_i``.

  Directions are never stored: the first ``lax.scan`` draws ``z_i`` from
  ``jax.random.fold_in(key, i)``, probes it twice and keeps only the scalar; the second scan draws
  it again from the same key and accumulates ``c_i z_i``. Peak memory is the parameters, one
  direction, one probe point and the accumulator, whatever ``m`` (the price: each direction is
  drawn twice). ``2m`` queries. Options default to :data:`MEZO_OPTIONS` (central only).

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``; aux discarded),
      closing over one batch.
    params: the point ``x``; integer leaves are never perturbed.
    key: a ``jax.random`` key; direction ``i`` is drawn from ``fold_in(key, i)``.
    zeroth_order: the estimator's options (default :data:`MEZO_OPTIONS`: one Gaussian
      direction, central differences); the scheme must be ``"central"``.
    num_directions: short form that overrides ``zeroth_order.num_directions``.
    smoothing: short form that overrides ``zeroth_order.smoothing`` (MeZO's ``epsilon``).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    ``(value, estimate)``: the mean of the ``2m`` probe losses and a pytree like params.

  References:
    Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023
    (arXiv 2305.17333; MeZO, Algorithm 1); Spall, IEEE TAC 1992 (SPSA).
  """
  opts = _options(zeroth_order, MEZO_OPTIONS, num_directions, smoothing, spsa=True)
  return _spsa_direction(loss_fn, params, key, opts, has_aux)


def _spsa_direction(
  loss_fn: LossFn, params: PyTree, key: jax.Array, opts: ZerothOrderOptions, has_aux: bool
) -> tuple[jax.Array, PyTree]:
  loss = losses.scalar_loss(loss_fn, has_aux)
  flat = trees.flatten(params)
  mu, m = opts.smoothing, opts.num_directions

  def draw(i: jax.Array) -> list[jax.Array]:
    return probing.draw_direction(jax.random.fold_in(key, i), flat, opts.distribution)

  def probe_one(_: None, i: jax.Array) -> tuple[None, jax.Array]:
    z = draw(i)
    return None, jnp.stack([loss(trees.shifted(flat, z, mu)), loss(trees.shifted(flat, z, -mu))])

  indices = jnp.arange(m, dtype=jnp.uint32)
  _, probe_losses = jax.lax.scan(probe_one, None, indices)
  coefficients = (probe_losses[:, 0] - probe_losses[:, 1]) / (2.0 * mu)

  def accumulate(
    acc: list[jax.Array], ic: tuple[jax.Array, jax.Array]
  ) -> tuple[list[jax.Array], None]:
    i, c = ic
    return [a + c * zi for a, zi in zip(acc, draw(i), strict=True)], None

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  total, _ = jax.lax.scan(accumulate, zeros, (indices, coefficients))
  return jnp.mean(probe_losses), trees.to_params(flat, [t / m for t in total])


# ----------------------------------------------------------------------------- transforms


class ZerothOrderState(NamedTuple):
  """State of every head in this module.

  Attributes:
    count: number of updates taken (int32).
    key: PRNG key (raw uint32 key data), split every step.
    value: float32 loss at ``theta`` measured by the last step's probes (before its update).
    aux: with ``has_aux=True``, the aux of ``loss_fn(theta)`` at the last step; else ``None``.
    sigma: float32 probe-loss std / smoothing of the last step's update estimate (0 if unused).
    queries: int32 total number of ``loss_fn`` evaluations so far.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  key: jax.Array
  value: jax.Array
  aux: Any
  sigma: jax.Array
  queries: jax.Array


def _init(seed: int) -> Callable[[PyTree], ZerothOrderState]:
  validation.check_int("seed", seed)

  def init_fn(params: PyTree) -> ZerothOrderState:
    del params
    return ZerothOrderState(
      count=jnp.zeros([], jnp.int32),
      key=jax.random.PRNGKey(seed),
      value=jnp.zeros([], jnp.float32),
      aux=None,
      sigma=jnp.zeros([], jnp.float32),
      queries=jnp.zeros([], jnp.int32),
    )

  return init_fn


def _next_state(
  state: ZerothOrderState,
  key: jax.Array,
  value: jax.Array,
  aux: Any,
  sigma: jax.Array,
  queries: int,
) -> ZerothOrderState:
  """The state after a step that evaluated the loss ``queries`` times."""
  return ZerothOrderState(
    count=optax.safe_increment(state.count),
    key=key,
    value=jnp.asarray(value, jnp.float32),
    aux=aux,
    sigma=jnp.asarray(sigma, jnp.float32),
    queries=state.queries + queries,
  )


def _extra_queries(opts: ZerothOrderOptions, has_aux: bool) -> int:
  """The aux forward at theta is free for the forward scheme (its own L(theta))."""
  return int(has_aux and opts.scheme != "forward")


def scale_by_zosa(
  rho: float = 0.01,
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  sam: bool = True,
  sigma_normalize: bool = True,
  adaptive_lr: bool = True,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZOSA head: replaces the updates by ZOSA's descent direction (:func:`zosa_direction`).

  Chain it with a learning rate (:func:`zosa` does); ``2(m + 1)`` queries per step (forward),
  ``m + 1`` with ``sam=False``.

  Args:
    rho: inner radius ``>= 0`` (default 0.01; see the module docstring for its scale under
      ``sigma_normalize``).
    zeroth_order: the estimator's options (default :data:`ZOSA_OPTIONS`: 8 Rademacher
      directions, forward differences); scheme ``"forward"`` or ``"central"``.
    num_directions: short form that overrides ``zeroth_order.num_directions``; with the
      forward scheme and a loss std in use, ``>= 2``.
    smoothing: short form that overrides ``zeroth_order.smoothing`` (``mu > 0``).
    sam: take the inner (sharpness-aware) step; ``False`` is ZO-SGD's direction at half the
      cost.
    sigma_normalize: inner radius ``rho g / s`` (``True``, default) or ``rho g / ||g||``.
    adaptive_lr: outer direction ``g' / s'`` (``True``, default) or ``g'``.
    seed: integer seed of the state's PRNG key, split once per step.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux of ``loss_fn(theta)`` is then
      kept in the state (one extra query with the central scheme).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`ZerothOrderState`.

  References:
    Fu et al., "Zero-Order Sharpness-Aware Minimization", arXiv 2511.09156; Dang et al. (FZOO),
    arXiv 2506.09034, for the loss-std step.
  """
  opts = _zosa_options(
    rho, zeroth_order, num_directions, smoothing, sam, sigma_normalize, adaptive_lr, has_aux
  )
  extra_queries = _extra_queries(opts, has_aux)

  def update_fn(
    updates: PyTree,
    state: ZerothOrderState,
    params: PyTree | None = None,
    *,
    loss_fn: LossFn | None = None,
    **extra: Any,
  ) -> tuple[PyTree, ZerothOrderState]:
    del updates
    losses.require_loss_fn("zosa", loss_fn, params)
    assert loss_fn is not None  # require_loss_fn raised otherwise
    losses.refuse_probe_loss_fn("zosa / zo_sgd / zo_adam", extra.get("probe_loss_fn"), PROBES_ARE)
    key, step_key = jax.random.split(state.key)
    value, aux, base = None, None, None
    if has_aux:
      value, aux = losses.split_value_aux(loss_fn(params), True)
      if opts.scheme == "forward":
        base = value  # the forward scheme's own L(theta): the probe at theta reuses it
    step = _zosa_direction(
      loss_fn, params, step_key, rho, opts, sam, sigma_normalize, adaptive_lr, has_aux, base
    )
    value = step.value if value is None else value
    queries = step.queries + extra_queries
    return step.direction, _next_state(state, key, value, aux, step.sigma, queries)

  return optax.GradientTransformationExtraArgs(_init(seed), update_fn)


def scale_by_zo_gradient(
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  sigma_step: bool = False,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Head that replaces the updates by the random gradient estimate at ``theta`` (divided by the
  probe-loss std with ``sigma_step=True``, FZOO's step). Same keys as :func:`scale_by_zosa` with
  ``sam=False``.

  Args:
    zeroth_order: the estimator's options (default :data:`ZOSA_OPTIONS`: 8 Rademacher
      directions, forward differences); scheme ``"forward"`` or ``"central"``.
    num_directions: short form that overrides ``zeroth_order.num_directions``.
    smoothing: short form that overrides ``zeroth_order.smoothing``.
    sigma_step: divide the estimate by the probe-loss std over the smoothing (default
      ``False``).
    seed: integer seed of the state's PRNG key.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`ZerothOrderState`.
  """
  return scale_by_zosa(
    0.0,
    zeroth_order=zeroth_order,
    num_directions=num_directions,
    smoothing=smoothing,
    sam=False,
    sigma_normalize=False,
    adaptive_lr=sigma_step,
    seed=seed,
    has_aux=has_aux,
  )


def scale_by_spsa(
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Head that replaces the updates by MeZO's SPSA estimate (:func:`spsa_direction`), ``2m``
  queries per step, memory independent of ``m``.

  Args:
    zeroth_order: the estimator's options (default :data:`MEZO_OPTIONS`: one Gaussian
      direction, central differences); the scheme must be ``"central"``.
    num_directions: short form that overrides ``zeroth_order.num_directions``.
    smoothing: short form that overrides ``zeroth_order.smoothing``.
    seed: integer seed of the state's PRNG key.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)`` (one extra query per step for the aux).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`ZerothOrderState`.

  References:
    Malladi et al., NeurIPS 2023 (arXiv 2305.17333; MeZO).
  """
  _check_flags(has_aux=has_aux)
  opts = _options(zeroth_order, MEZO_OPTIONS, num_directions, smoothing, spsa=True)
  queries = opts.queries + _extra_queries(opts, has_aux)

  def update_fn(
    updates: PyTree,
    state: ZerothOrderState,
    params: PyTree | None = None,
    *,
    loss_fn: LossFn | None = None,
    **extra: Any,
  ) -> tuple[PyTree, ZerothOrderState]:
    del updates
    losses.require_loss_fn("mezo", loss_fn, params)
    assert loss_fn is not None  # require_loss_fn raised otherwise
    losses.refuse_probe_loss_fn("mezo", extra.get("probe_loss_fn"), PROBES_ARE)
    key, step_key = jax.random.split(state.key)
    value, estimate = _spsa_direction(loss_fn, params, step_key, opts, has_aux)
    value, aux = _value_and_aux(loss_fn, params, has_aux, value)
    return estimate, _next_state(state, key, value, aux, jnp.zeros([]), queries)

  return optax.GradientTransformationExtraArgs(_init(seed), update_fn)


# ----------------------------------------------------------------------------- full optimizers


def zosa(
  learning_rate: optax.ScalarOrSchedule,
  rho: float = 0.01,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """ZOSA: fully zeroth-order sharpness-aware minimisation (see the module docstring).

  ``update = -learning_rate * g'/s'``, ``g'`` the random gradient estimate at
  ``theta + rho g/s``. ``2(m + 1)`` loss evaluations per step (``4m`` with scheme central).
  Keyword arguments are :func:`scale_by_zosa`'s (``zeroth_order``, ``num_directions``,
  ``smoothing``, ``sam``, ``sigma_normalize``, ``adaptive_lr``, ``seed``, ``has_aux``).
  ``opt_state[0]`` is the :class:`ZerothOrderState` (``value``, ``aux``, ``sigma``, ``queries``).

  Args:
    learning_rate: a float or an ``optax`` schedule, ``> 0``.
    rho: inner radius ``>= 0`` (default 0.01).
    **kwargs: keyword arguments of :func:`scale_by_zosa`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (a chain); ``opt_state[0]`` is its
    :class:`ZerothOrderState`.

  Examples:
    A step on ``||w||^2 / 2`` from loss values only; it costs ``2(m + 1) = 10`` evaluations:

    >>> import jax.numpy as jnp, optax, zosam_jax as zj
    >>> params = {"w": jnp.array([1.0, -2.0, 0.5])}
    >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
    >>> tx = zj.zosa(learning_rate=0.1, rho=1e-3, num_directions=4)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(None, state, params, loss_fn=loss_fn)
    >>> params = optax.apply_updates(params, updates)
    >>> int(zj.zeroth_order.zo_state(state).queries)
    10

  References:
    Fu et al., "Zero-Order Sharpness-Aware Minimization", arXiv 2511.09156.
  """
  validation.check_learning_rate(learning_rate)
  return optax.chain(scale_by_zosa(rho, **kwargs), optax.scale_by_learning_rate(learning_rate))


def zo_sgd(
  learning_rate: optax.ScalarOrSchedule,
  *,
  momentum: float = 0.0,
  nesterov: bool = False,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """ZO-SGD: SGD (optionally heavy-ball ``momentum``) on the random gradient estimate.

  Keyword arguments are :func:`scale_by_zo_gradient`'s; ``sigma_step=True`` divides the estimate
  by the probe-loss std first (FZOO's step; this is ZOSA with ``sam=False``). ``m + 1`` queries
  per step (forward), ``2m`` (central).

  Args:
    learning_rate: a float or an ``optax`` schedule, ``> 0``.
    momentum: heavy-ball momentum in ``[0, 1)`` (default 0: none).
    nesterov: Nesterov momentum instead of heavy ball (default ``False``).
    **kwargs: keyword arguments of :func:`scale_by_zo_gradient`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (a chain); ``opt_state[0]`` is its
    :class:`ZerothOrderState`.

  References:
    Ghadimi & Lan, SIAM J. Optim. 2013; Nesterov & Spokoiny, 2017; Dang et al., arXiv 2506.09034.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_interval("momentum", momentum, 0.0, 1.0, low_open=False, high_open=True)
  validation.check_bool("nesterov", nesterov)
  return optax.chain(
    scale_by_zo_gradient(**kwargs),
    optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
  )


def zo_adam(
  learning_rate: optax.ScalarOrSchedule,
  *,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """ZO-Adam (ZO-AdaMM without the projection): Adam on the random gradient estimate.

  Args:
    learning_rate: a float or an ``optax`` schedule, ``> 0``.
    b1: Adam's first-moment decay in ``[0, 1)`` (default 0.9).
    b2: Adam's second-moment decay in ``[0, 1)`` (default 0.999).
    eps: Adam's ``epsilon > 0`` (default 1e-8).
    **kwargs: keyword arguments of :func:`scale_by_zo_gradient`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (a chain); ``opt_state[0]`` is its
    :class:`ZerothOrderState`.

  References:
    Chen et al., "ZO-AdaMM: Zeroth-Order Adaptive Momentum Method for Black-Box
    Optimization", NeurIPS 2019; Kingma & Ba, ICLR 2015.
  """
  validation.check_learning_rate(learning_rate)
  validation.check_interval("b1", b1, 0.0, 1.0, low_open=False, high_open=True)
  validation.check_interval("b2", b2, 0.0, 1.0, low_open=False, high_open=True)
  validation.check_positive("eps", eps)
  return optax.chain(
    scale_by_zo_gradient(**kwargs), optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)
  )


def mezo(
  learning_rate: optax.ScalarOrSchedule,
  *,
  momentum: float = 0.0,
  **kwargs: Any,
) -> optax.GradientTransformationExtraArgs:
  """MeZO: SGD on the SPSA estimate, directions regenerated from their keys (never stored).

  ``2m`` queries per step; peak memory independent of ``m`` (see :func:`spsa_direction`).

  Args:
    learning_rate: a float or an ``optax`` schedule, ``> 0``.
    momentum: heavy-ball momentum in ``[0, 1)`` (default 0: MeZO's plain SGD).
    **kwargs: keyword arguments of :func:`scale_by_spsa`.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` (a chain); ``opt_state[0]`` is its
    :class:`ZerothOrderState`.

  Examples:
    Two directions, central differences: four loss evaluations per step:

    >>> import jax.numpy as jnp, zosam_jax as zj
    >>> params = {"w": jnp.array([1.0, -2.0, 0.5])}
    >>> tx = zj.mezo(learning_rate=1e-2, num_directions=2, seed=0)
    >>> state = tx.init(params)
    >>> updates, state = tx.update(
    ...     None, state, params, loss_fn=lambda p: 0.5 * jnp.sum(p["w"] ** 2))
    >>> int(zj.zeroth_order.zo_state(state).queries)
    4

  References:
    Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023
    (arXiv 2305.17333).
  """
  validation.check_learning_rate(learning_rate)
  validation.check_interval("momentum", momentum, 0.0, 1.0, low_open=False, high_open=True)
  return optax.chain(scale_by_spsa(**kwargs), optax.sgd(learning_rate, momentum=momentum or None))


def zo_state(opt_state: Any) -> ZerothOrderState:
  """The :class:`ZerothOrderState` inside the state of any optimizer of this module (or a chain
  holding one), for reading ``value``, ``sigma`` and ``queries``.

  Args:
    opt_state: a :class:`ZerothOrderState`, or a (nested) tuple of states holding one.

  Returns:
    The first :class:`ZerothOrderState` found (depth first).

  Raises:
    ValueError: if ``opt_state`` holds none.
  """
  if isinstance(opt_state, ZerothOrderState):
    return opt_state
  if isinstance(opt_state, tuple):
    for s in opt_state:
      try:
        return zo_state(s)
      except ValueError:
        pass
  raise ValueError("opt_state must hold a ZerothOrderState (a zosam_jax.zeroth_order optimizer).")
