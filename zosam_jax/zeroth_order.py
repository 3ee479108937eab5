"""Fully zeroth-order optimisers: ZOSA and the ZO baselines it is compared with.

Every transform here needs only loss VALUES: ``update(updates, state, params, loss_fn=loss_fn)``
ignores ``updates`` (pass ``None``) and calls ``loss_fn`` a fixed, documented number of times per
step (``state.queries`` counts them). They are full optimisers (their updates are added to the
params with ``optax.apply_updates``); the ``scale_by_*`` heads give the descent direction before
the learning rate, to put at the head of any ``optax.chain``.

ZOSA (Fu et al., 2025), one step at ``theta`` with ``m`` Rademacher directions and smoothing
``mu`` (the ``forward`` two-point scheme, as in the paper and in FZOO):

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

Directions: ``jax.random.split(step_key, m)`` drawn by :func:`zosam_jax.estimators.draw_direction`
(packed-bit Rademacher), probed ``probe_batch_size`` at a time with ``jax.vmap`` inside a
``lax.scan`` (1 = one direction in memory at a time; ``None`` = all at once). The state's key is
split every step, so two replicas with equal states draw equal directions.

References:
  Fu et al., "Zero-Order Sharpness-Aware Minimization", arXiv 2511.09156 (ZOSA).
  Dang et al., "FZOO: Fast Zeroth-Order Optimizer for Fine-Tuning Large Language Models towards
  Adam-Scale Speed", arXiv 2506.09034.
  Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023 (MeZO).
  Chen et al., "ZO-AdaMM: Zeroth-Order Adaptive Momentum Method", NeurIPS 2019.
  Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from zosam_jax import _validation, estimators

PyTree = Any
LossFn = Callable[[PyTree], Any]

SCHEMES = ("forward", "central")
_TINY = 1e-12


# ----------------------------------------------------------------------------- validation


def _check_bool(name: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be True or False, got {value!r}.")


def _check_learning_rate(learning_rate: Any) -> None:
  if callable(learning_rate) or isinstance(learning_rate, jax.Array):
    return  # a schedule, or a traced value inside a jitted run
  if isinstance(learning_rate, bool) or not isinstance(learning_rate, int | float):
    raise ValueError(f"learning_rate must be a number > 0 or a schedule, got {learning_rate!r}.")
  _validation.check_positive("learning_rate", learning_rate)


def _check_unit_interval(name: str, value: float) -> None:
  if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def _check_probe_args(
  num_directions: Any,
  smoothing: Any,
  distribution: Any,
  scheme: Any,
  probe_batch_size: Any,
  needs_sigma: bool,
) -> None:
  _validation.check_positive_int("num_directions", num_directions)
  if isinstance(smoothing, bool) or not isinstance(smoothing, int | float):
    raise ValueError(f"smoothing must be a number > 0, got {smoothing!r}.")
  _validation.check_positive("smoothing", smoothing)
  _validation.check_choice("distribution", distribution, _validation.DISTRIBUTIONS)
  _validation.check_choice("scheme", scheme, SCHEMES)
  if probe_batch_size is not None:
    _validation.check_positive_int(
      "probe_batch_size (or None for all directions at once)", probe_batch_size
    )
  if needs_sigma and scheme == "forward" and num_directions < 2:
    raise ValueError(
      "num_directions must be >= 2 with scheme='forward' when the loss std is used "
      f"(sigma_normalize/adaptive_lr/sigma_step): the std of {num_directions} probe loss is "
      "undefined."
    )


def queries_per_estimate(num_directions: int, scheme: str) -> int:
  """Loss evaluations of one random gradient estimate: ``m + 1`` (forward) or ``2m`` (central)."""
  return num_directions + 1 if scheme == "forward" else 2 * num_directions


# ----------------------------------------------------------------------------- probing


class Probe(NamedTuple):
  """One zeroth-order estimate at a point, with what the probes saw.

  Attributes:
    estimate: float32 list, one array per active leaf: ``1/m sum_i c_i u_i``.
    coefficients: float32 ``[m]``, the finite-difference directional derivatives ``c_i``.
    losses: float32 ``[m]`` (forward) or ``[m, 2]`` (central: ``L(x + mu u_i), L(x - mu u_i)``).
    value: float32 scalar, ``L(x)`` (forward) or the mean probe loss (central).
    sigma: float32 scalar, ``std(losses, ddof=1) / mu`` (0 if fewer than two probe losses).
  """

  estimate: list[jax.Array]
  coefficients: jax.Array
  losses: jax.Array
  value: jax.Array
  sigma: jax.Array


def probe(
  loss: Callable[[PyTree], jax.Array],
  flat: estimators._Flat,
  key: jax.Array,
  *,
  num_directions: int,
  smoothing: float,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
) -> Probe:
  """The random gradient estimate of :func:`zosam_jax.rge` (same keys, same directions), plus
  the probe losses themselves, which the sigma-normalisation needs.

  ``loss`` returns a float32 scalar; ``flat`` comes from ``estimators._flatten``. Exactly
  :func:`queries_per_estimate` evaluations of ``loss`` at run time.
  """
  m = num_directions
  mu = smoothing
  chunk = m if probe_batch_size is None else min(probe_batch_size, m)
  keys = jax.random.split(key, m)
  if scheme == "forward":
    base = loss(jax.tree.unflatten(flat.treedef, flat.leaves))

    def one(u):
      plus = loss(estimators._shifted(flat, u, mu))
      return (plus - base) / mu, plus
  else:

    def one(u):
      plus = loss(estimators._shifted(flat, u, mu))
      minus = loss(estimators._shifted(flat, u, -mu))
      return (plus - minus) / (2.0 * mu), jnp.stack([plus, minus])

  def single(carry, k):
    u = estimators.draw_direction(k, flat, distribution)
    c, ls = one(u)
    return [acc + c * ui for acc, ui in zip(carry, u, strict=True)], (c, ls)

  def batched(carry, ks):
    us = jax.vmap(lambda k: estimators.draw_direction(k, flat, distribution))(ks)
    cs, ls = jax.vmap(one)(us)
    new = [acc + jnp.tensordot(cs, ui, axes=1) for acc, ui in zip(carry, us, strict=True)]
    return new, (cs, ls)

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  if chunk == 1:
    total, (coefficients, losses) = jax.lax.scan(single, zeros, keys)
  else:
    num_full, remainder = divmod(m, chunk)
    full = keys[: num_full * chunk].reshape((num_full, chunk) + keys.shape[1:])
    total, (coefficients, losses) = jax.lax.scan(batched, zeros, full)
    coefficients = coefficients.reshape(-1)
    losses = losses.reshape((num_full * chunk,) + losses.shape[2:])
    if remainder:
      total, (c_rest, l_rest) = batched(total, keys[num_full * chunk :])
      coefficients = jnp.concatenate([coefficients, c_rest])
      losses = jnp.concatenate([losses, l_rest])
  value = base if scheme == "forward" else jnp.mean(losses)
  flat_losses = losses.reshape(-1)
  if flat_losses.size >= 2:
    sigma = jnp.std(flat_losses, ddof=1) / mu
  else:
    sigma = jnp.zeros([], jnp.float32)
  return Probe([t / m for t in total], coefficients, losses, value, sigma)


def _safe_divide(parts: list[jax.Array], scale: jax.Array) -> list[jax.Array]:
  """parts / scale, and exactly zero where scale is zero (never NaN)."""
  ok = scale > _TINY
  inv = jnp.where(ok, 1.0 / jnp.where(ok, scale, 1.0), 0.0)
  return [p * inv for p in parts]


def _norm(parts: list[jax.Array]) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(p)) for p in parts) + 0.0)


def _to_tree(flat: estimators._Flat, parts: list[jax.Array]) -> PyTree:
  """Active parts back into a tree like params (zeros on inactive leaves, params' dtypes)."""
  out = [jnp.zeros_like(p) for p in flat.leaves]
  for j, i in enumerate(flat.active):
    out[i] = parts[j].astype(flat.leaves[i].dtype)
  return jax.tree.unflatten(flat.treedef, out)


def _shift_flat(flat: estimators._Flat, parts: list[jax.Array]) -> estimators._Flat:
  """The point ``x + parts`` as a new ``_Flat`` with the same active leaves."""
  leaves = list(flat.leaves)
  for j, i in enumerate(flat.active):
    p = leaves[i]
    leaves[i] = (p.astype(jnp.float32) + parts[j]).astype(p.dtype)
  return flat._replace(leaves=leaves)


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
  num_directions: int,
  smoothing: float,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
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
    num_directions: ``m`` per estimate.
    smoothing: ``mu > 0``.
    distribution: ``"rademacher"`` (the paper's), ``"gaussian"`` or ``"sphere"``.
    scheme: ``"forward"`` (``m + 1`` queries per estimate) or ``"central"`` (``2m``).
    probe_batch_size: directions vmapped together (1 = one at a time, None = all).
    sam, sigma_normalize, adaptive_lr: the three switches of the ablation.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    A :class:`ZOSAStep`.

  References:
    Fu et al., arXiv 2511.09156; Dang et al. (FZOO), arXiv 2506.09034.
  """
  _validation.check_nonnegative("rho", rho)
  for name, flag in (
    ("sam", sam),
    ("sigma_normalize", sigma_normalize),
    ("adaptive_lr", adaptive_lr),
    ("has_aux", has_aux),
  ):
    _check_bool(name, flag)
  needs_sigma = adaptive_lr or (sam and sigma_normalize)
  _check_probe_args(num_directions, smoothing, distribution, scheme, probe_batch_size, needs_sigma)
  loss = estimators._scalar_loss(loss_fn, has_aux)
  flat = estimators._flatten(params, None, None)
  inner_key, outer_key = jax.random.split(key)
  opts = dict(
    num_directions=num_directions,
    smoothing=smoothing,
    distribution=distribution,
    scheme=scheme,
    probe_batch_size=probe_batch_size,
  )
  per_estimate = queries_per_estimate(num_directions, scheme)
  if sam:
    inner = probe(loss, flat, inner_key, **opts)
    if sigma_normalize:
      eps = _safe_divide([rho * g for g in inner.estimate], inner.sigma)
    else:
      eps = _safe_divide([rho * g for g in inner.estimate], _norm(inner.estimate))
    outer = probe(loss, _shift_flat(flat, eps), outer_key, **opts)
    value, inner_sigma, eps_norm, queries = inner.value, inner.sigma, _norm(eps), 2 * per_estimate
  else:
    outer = probe(loss, flat, outer_key, **opts)
    value, inner_sigma, eps_norm, queries = outer.value, outer.sigma, jnp.zeros([]), per_estimate
  direction = _safe_divide(outer.estimate, outer.sigma) if adaptive_lr else outer.estimate
  return ZOSAStep(value, _to_tree(flat, direction), outer.sigma, inner_sigma, eps_norm, queries)


# ----------------------------------------------------------------------------- MeZO's SPSA, pure


def spsa_direction(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  num_directions: int,
  smoothing: float,
  distribution: str = "gaussian",
  has_aux: bool = False,
) -> tuple[jax.Array, PyTree]:
  """MeZO's SPSA estimate ``1/m sum_i (L(x + mu z_i) - L(x - mu z_i)) / (2 mu) z_i``.

  Directions are never stored: the first ``lax.scan`` draws ``z_i`` from
  ``jax.random.fold_in(key, i)``, probes it twice and keeps only the scalar; the second scan draws
  it again from the same key and accumulates ``c_i z_i``. Peak memory is the parameters, one
  direction, one probe point and the accumulator, whatever ``m`` (the price: each direction is
  drawn twice). ``2m`` queries.

  Returns:
    ``(value, estimate)``: the mean of the ``2m`` probe losses and a pytree like params.

  References:
    Malladi et al., NeurIPS 2023 (MeZO, Algorithm 1); Spall, IEEE TAC 1992 (SPSA).
  """
  _check_probe_args(num_directions, smoothing, distribution, "central", 1, False)
  loss = estimators._scalar_loss(loss_fn, has_aux)
  flat = estimators._flatten(params, None, None)
  mu = smoothing

  def probe_one(_, i):
    z = estimators.draw_direction(jax.random.fold_in(key, i), flat, distribution)
    plus = loss(estimators._shifted(flat, z, mu))
    minus = loss(estimators._shifted(flat, z, -mu))
    return None, jnp.stack([plus, minus])

  indices = jnp.arange(num_directions, dtype=jnp.uint32)
  _, losses = jax.lax.scan(probe_one, None, indices)
  coefficients = (losses[:, 0] - losses[:, 1]) / (2.0 * mu)

  def accumulate(acc, ic):
    i, c = ic
    z = estimators.draw_direction(jax.random.fold_in(key, i), flat, distribution)
    return [a + c * zi for a, zi in zip(acc, z, strict=True)], None

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  total, _ = jax.lax.scan(accumulate, zeros, (indices, coefficients))
  return jnp.mean(losses), _to_tree(flat, [t / num_directions for t in total])


# ----------------------------------------------------------------------------- transforms


class ZerothOrderState(NamedTuple):
  """State of every head in this module.

  Attributes:
    count: number of updates taken (int32).
    key: PRNG key (raw uint32 key data), split every step.
    value: float32 loss at ``theta`` measured by the last step's probes (before its update).
    sigma: float32 probe-loss std / smoothing of the last step's update estimate (0 if unused).
    queries: int32 total number of ``loss_fn`` evaluations so far.
  """

  count: jax.Array
  key: jax.Array
  value: jax.Array
  sigma: jax.Array
  queries: jax.Array


def _init(seed: int) -> Callable[[PyTree], ZerothOrderState]:
  def init_fn(params):
    del params
    return ZerothOrderState(
      count=jnp.zeros([], jnp.int32),
      key=jax.random.PRNGKey(seed),
      value=jnp.zeros([], jnp.float32),
      sigma=jnp.zeros([], jnp.float32),
      queries=jnp.zeros([], jnp.int32),
    )

  return init_fn


def _need_loss_fn(name: str, loss_fn: Any, params: Any) -> None:
  if loss_fn is None or params is None:
    raise ValueError(
      f"{name} needs params and the extra argument loss_fn=: "
      "tx.update(None, opt_state, params, loss_fn=loss_fn)."
    )


def _check_seed(seed: Any) -> None:
  if isinstance(seed, bool) or not isinstance(seed, int):
    raise ValueError(f"seed must be an int, got {seed!r}.")


def scale_by_zosa(
  rho: float = 0.01,
  num_directions: int = 8,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
  sam: bool = True,
  sigma_normalize: bool = True,
  adaptive_lr: bool = True,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZOSA head: replaces the updates by ZOSA's descent direction (:func:`zosa_direction`).

  Chain it with a learning rate (:func:`zosa` does); ``2(m + 1)`` queries per step (forward),
  ``m + 1`` with ``sam=False``.
  """
  _check_seed(seed)
  _validation.check_nonnegative("rho", rho)
  for name, flag in (
    ("sam", sam),
    ("sigma_normalize", sigma_normalize),
    ("adaptive_lr", adaptive_lr),
    ("has_aux", has_aux),
  ):
    _check_bool(name, flag)
  _check_probe_args(
    num_directions,
    smoothing,
    distribution,
    scheme,
    probe_batch_size,
    adaptive_lr or (sam and sigma_normalize),
  )

  def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
    del updates, extra
    _need_loss_fn("zosa", loss_fn, params)
    key, step_key = jax.random.split(state.key)
    step = zosa_direction(
      loss_fn,
      params,
      step_key,
      rho=rho,
      num_directions=num_directions,
      smoothing=smoothing,
      distribution=distribution,
      scheme=scheme,
      probe_batch_size=probe_batch_size,
      sam=sam,
      sigma_normalize=sigma_normalize,
      adaptive_lr=adaptive_lr,
      has_aux=has_aux,
    )
    new_state = ZerothOrderState(
      count=optax.safe_increment(state.count),
      key=key,
      value=jnp.asarray(step.value, jnp.float32),
      sigma=jnp.asarray(step.sigma, jnp.float32),
      queries=state.queries + step.queries,
    )
    return step.direction, new_state

  return optax.GradientTransformationExtraArgs(_init(seed), update_fn)


def scale_by_zo_gradient(
  num_directions: int = 8,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
  sigma_step: bool = False,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Head that replaces the updates by the random gradient estimate at ``theta`` (divided by the
  probe-loss std with ``sigma_step=True``, FZOO's step). Same keys as :func:`scale_by_zosa` with
  ``sam=False``."""
  return scale_by_zosa(
    0.0,
    num_directions,
    smoothing,
    seed,
    distribution=distribution,
    scheme=scheme,
    probe_batch_size=probe_batch_size,
    sam=False,
    sigma_normalize=False,
    adaptive_lr=sigma_step,
    has_aux=has_aux,
  )


def scale_by_spsa(
  num_directions: int = 1,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  distribution: str = "gaussian",
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Head that replaces the updates by MeZO's SPSA estimate (:func:`spsa_direction`), ``2m``
  queries per step, memory independent of ``m``."""
  _check_seed(seed)
  _check_bool("has_aux", has_aux)
  _check_probe_args(num_directions, smoothing, distribution, "central", 1, False)

  def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
    del updates, extra
    _need_loss_fn("mezo", loss_fn, params)
    key, step_key = jax.random.split(state.key)
    value, estimate = spsa_direction(
      loss_fn,
      params,
      step_key,
      num_directions=num_directions,
      smoothing=smoothing,
      distribution=distribution,
      has_aux=has_aux,
    )
    new_state = ZerothOrderState(
      count=optax.safe_increment(state.count),
      key=key,
      value=jnp.asarray(value, jnp.float32),
      sigma=jnp.zeros([], jnp.float32),
      queries=state.queries + 2 * num_directions,
    )
    return estimate, new_state

  return optax.GradientTransformationExtraArgs(_init(seed), update_fn)


# ----------------------------------------------------------------------------- full optimizers


def zosa(
  learning_rate: optax.ScalarOrSchedule,
  rho: float = 0.01,
  num_directions: int = 8,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
  sam: bool = True,
  sigma_normalize: bool = True,
  adaptive_lr: bool = True,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZOSA: fully zeroth-order sharpness-aware minimisation (see the module docstring).

  ``update = -learning_rate * g'/s'``, ``g'`` the random gradient estimate at
  ``theta + rho g/s``. ``2(m + 1)`` loss evaluations per step (``4m`` with ``scheme="central"``).
  ``opt_state[0]`` is the :class:`ZerothOrderState` (``value``, ``sigma``, ``queries``).

  Example::

    tx = zosam_jax.zosa(learning_rate=1e-2, rho=1e-3, num_directions=8, smoothing=1e-3)
    state = tx.init(params)
    updates, state = tx.update(None, state, params, loss_fn=loss_fn)
    params = optax.apply_updates(params, updates)

  References:
    Fu et al., "Zero-Order Sharpness-Aware Minimization", arXiv 2511.09156.
  """
  _check_learning_rate(learning_rate)
  return optax.chain(
    scale_by_zosa(
      rho,
      num_directions,
      smoothing,
      seed,
      distribution=distribution,
      scheme=scheme,
      probe_batch_size=probe_batch_size,
      sam=sam,
      sigma_normalize=sigma_normalize,
      adaptive_lr=adaptive_lr,
      has_aux=has_aux,
    ),
    optax.scale_by_learning_rate(learning_rate),
  )


def zo_sgd(
  learning_rate: optax.ScalarOrSchedule,
  num_directions: int = 8,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  momentum: float = 0.0,
  nesterov: bool = False,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
  sigma_step: bool = False,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZO-SGD: SGD (optionally heavy-ball ``momentum``) on the random gradient estimate.

  ``sigma_step=True`` divides the estimate by the probe-loss std first (FZOO's step; this is ZOSA
  with ``sam=False``). ``m + 1`` queries per step (forward), ``2m`` (central).

  References:
    Ghadimi & Lan, SIAM J. Optim. 2013; Nesterov & Spokoiny, 2017; Dang et al., arXiv 2506.09034.
  """
  _check_learning_rate(learning_rate)
  _check_unit_interval("momentum", momentum)
  _check_bool("nesterov", nesterov)
  return optax.chain(
    scale_by_zo_gradient(
      num_directions,
      smoothing,
      seed,
      distribution=distribution,
      scheme=scheme,
      probe_batch_size=probe_batch_size,
      sigma_step=sigma_step,
      has_aux=has_aux,
    ),
    optax.sgd(learning_rate, momentum=momentum or None, nesterov=nesterov),
  )


def zo_adam(
  learning_rate: optax.ScalarOrSchedule,
  num_directions: int = 8,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
  distribution: str = "rademacher",
  scheme: str = "forward",
  probe_batch_size: int | None = 1,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZO-Adam (ZO-AdaMM without the projection): Adam on the random gradient estimate.

  References:
    Chen et al., NeurIPS 2019; Kingma & Ba, ICLR 2015.
  """
  _check_learning_rate(learning_rate)
  _check_unit_interval("b1", b1)
  _check_unit_interval("b2", b2)
  _validation.check_positive("eps", eps)
  return optax.chain(
    scale_by_zo_gradient(
      num_directions,
      smoothing,
      seed,
      distribution=distribution,
      scheme=scheme,
      probe_batch_size=probe_batch_size,
      has_aux=has_aux,
    ),
    optax.adam(learning_rate, b1=b1, b2=b2, eps=eps),
  )


def mezo(
  learning_rate: optax.ScalarOrSchedule,
  num_directions: int = 1,
  smoothing: float = 1e-3,
  seed: int = 0,
  *,
  momentum: float = 0.0,
  distribution: str = "gaussian",
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """MeZO: SGD on the SPSA estimate, directions regenerated from their keys (never stored).

  ``2m`` queries per step; peak memory independent of ``m`` (see :func:`spsa_direction`).

  References:
    Malladi et al., "Fine-Tuning Language Models with Just Forward Passes", NeurIPS 2023.
  """
  _check_learning_rate(learning_rate)
  _check_unit_interval("momentum", momentum)
  return optax.chain(
    scale_by_spsa(num_directions, smoothing, seed, distribution=distribution, has_aux=has_aux),
    optax.sgd(learning_rate, momentum=momentum or None),
  )


def zo_state(opt_state: Any) -> ZerothOrderState:
  """The :class:`ZerothOrderState` inside the state of any optimizer of this module (or a chain
  holding one), for reading ``value``, ``sigma`` and ``queries``."""
  if isinstance(opt_state, ZerothOrderState):
    return opt_state
  if isinstance(opt_state, tuple):
    for s in opt_state:
      try:
        return zo_state(s)
      except ValueError:
        pass
  raise ValueError("opt_state holds no ZerothOrderState (not a zosam_jax.zeroth_order optimizer).")
