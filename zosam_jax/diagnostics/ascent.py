"""How good is an ascent direction for SAM's perturbation? (cosine to the gradient, loss increase)

SAM perturbs ``theta`` by ``eps = rho g / ||g||`` to (approximately) maximise the loss in a ball
of radius ``rho``; ZO-SAM replaces ``g`` by a zeroth-order estimate. :func:`ascent_quality`
measures how much of SAM's first-order loss increase a cheaper direction recovers.

References:
  Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization", ICLR 2021.
  Ji et al., "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient Sparse Training",
  CVPR 2026 (arXiv 2603.13115).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from zosam_jax import estimators
from zosam_jax._src import losses, options, trees, validation
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import LossFn, PyTree

AscentFn = Callable[[PyTree, jax.Array], PyTree]

_TINY = 1e-12


class AscentQuality(NamedTuple):
  """Result of :func:`ascent_quality` (float32).

  Attributes:
    cosine_mean: mean over the keys of ``cos(d, g)`` between the (masked) direction and the
      exact (masked) gradient.
    cosine_std: its sample standard deviation over the keys (ddof=1; 0 for one sample).
    increase_mean: the mean over the keys of ``L(theta + rho d/||d||) - L(theta)``.
    increase_std: its sample standard deviation (ddof=1; 0 for one sample).
    sam_increase: ``L(theta + rho g/||g||) - L(theta)``, SAM's increase.
    increase_ratio: ``increase_mean / sam_increase``.
    cosines: the per-key cosines, shape ``(num_samples,)``.
    increases: the per-key increases, shape ``(num_samples,)``.
  """

  cosine_mean: jax.Array
  cosine_std: jax.Array
  increase_mean: jax.Array
  increase_std: jax.Array
  sam_increase: jax.Array
  increase_ratio: jax.Array
  cosines: jax.Array
  increases: jax.Array


def _std(x: jax.Array) -> jax.Array:
  return jnp.std(x, ddof=1) if x.shape[0] > 1 else jnp.zeros([], jnp.float32)


def ascent_quality(
  loss_fn: LossFn,
  params: PyTree,
  ascent_fn: AscentFn,
  *,
  rho: float,
  key: jax.Array,
  weight_mask: PyTree | None = None,
  num_samples: int = 1,
  has_aux: bool = False,
) -> AscentQuality:
  r"""Cosine to the gradient and loss increase of ``ascent_fn``'s perturbation, against SAM's.

  With ``g = m \odot \nabla L(\theta)`` and, for each of ``num_samples`` keys ``k_s``,
  ``d_s = m \odot`` ``ascent_fn(params, k_s)`` (``m`` the weight_mask, 1 when dense):

  .. math::
     \cos_s = \frac{\langle d_s, g \rangle}{\|d_s\| \|g\|}, \quad
     \Delta_s = L\big(\theta + \rho \tfrac{d_s}{\|d_s\|}\big) - L(\theta), \quad
     \Delta_{SAM} = L\big(\theta + \rho \tfrac{g}{\|g\|}\big) - L(\theta)

  For small ``rho``, ``Delta_s ~ rho ||g|| cos_s``, so ``increase_ratio ~ E[cos]``; the exact
  gradient gives cosine 1 and ratio 1. A zero direction gives cosine 0 and no perturbation.

  Cost: one forward-backward (``g`` and ``L(theta)``), one forward for SAM's perturbed loss, and
  per key one ``ascent_fn`` call plus one forward; keys run one after the other (``lax.map``).

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``); it should close
      over one batch (and one dropout key) so every evaluation sees the same function.
    params: ``theta``.
    ascent_fn: ``(params, key) -> direction`` pytree like ``params``, e.g.
      :func:`rge_ascent_fn` (ZO-SAM) or :func:`gradient_ascent_fn` (SAM).
    rho: perturbation radius, ``> 0``.
    key: PRNG key; split into ``num_samples`` keys for ``ascent_fn``.
    weight_mask: optional 0/1 pytree like ``params``: cosines, norms and perturbations live on
      active coordinates.
    num_samples: number of keys, ``>= 1``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An :class:`AscentQuality`.

  Raises:
    ValueError: ``rho <= 0``, ``num_samples < 1`` or a bad ``mask``.

  References:
    Foret et al., ICLR 2021 (arXiv 2010.01412); Ji et al., ZO-SAM, CVPR 2026
    (arXiv 2603.13115).
  """
  validation.check_positive("rho", rho)
  validation.check_int_at_least("num_samples", num_samples, 1)
  validation.check_mask_like("weight_mask", weight_mask, params)
  loss = losses.scalar_loss(loss_fn, has_aux)
  base, grads = jax.value_and_grad(loss)(params)
  g = trees.masked(grads, weight_mask)
  g_norm = jnp.sqrt(trees.vdot(g, g))

  def increase_along(direction: PyTree, norm: jax.Array) -> jax.Array:
    scale = rho / (norm + _TINY)
    return loss(trees.add_scaled(params, direction, scale)) - base

  sam_increase = increase_along(g, g_norm)

  def one(k: jax.Array) -> tuple[jax.Array, jax.Array]:
    d = trees.masked(ascent_fn(params, k), weight_mask)
    d_norm = jnp.sqrt(trees.vdot(d, d))
    cosine = trees.vdot(d, g) / (d_norm * g_norm + _TINY)
    return cosine, increase_along(d, d_norm)

  cosines, increases = jax.lax.map(one, jax.random.split(key, num_samples))
  increase_mean = jnp.mean(increases)
  return AscentQuality(
    cosine_mean=jnp.mean(cosines),
    cosine_std=_std(cosines),
    increase_mean=increase_mean,
    increase_std=_std(increases),
    sam_increase=sam_increase,
    increase_ratio=increase_mean / sam_increase,
    cosines=cosines,
    increases=increases,
  )


def gradient_ascent_fn(loss_fn: LossFn, *, has_aux: bool = False) -> AscentFn:
  """SAM's ascent direction: ``(params, key) -> grad L(params)`` (the key is ignored).

  Cost: one forward-backward per call.

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    ``ascent_fn(params, key) -> grads``, for :func:`ascent_quality`.
  """
  loss = losses.scalar_loss(loss_fn, has_aux)

  def ascent_fn(params: PyTree, key: jax.Array) -> PyTree:
    del key
    return jax.grad(loss)(params)

  return ascent_fn


def rge_ascent_fn(
  loss_fn: LossFn,
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  weight_mask: PyTree | None = None,
  has_aux: bool = False,
  prior: PyTree | None = None,
) -> AscentFn:
  """ZO-SAM's ascent direction: ``(params, key) -> zosam_jax.rge(loss_fn, params, key, ...)``.

  The random gradient estimate (options as :func:`zosam_jax.rge`'s) drawn on the active
  coordinates of ``weight_mask``. Cost per call: ``2m`` forwards (central scheme), ``m + 1``
  (forward) or ``m`` JVPs (``"jvp"``). With ``prior`` (e.g. a guided head's state ``prior``),
  the guided estimate of ``guidance="previous_gradient"``: direction 0 along the prior, the
  others orthogonal to it.

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``).
    zeroth_order: the estimator's options (``None``: ``ZerothOrderOptions()``).
    num_directions: short form that overrides ``zeroth_order.num_directions``.
    smoothing: short form that overrides ``zeroth_order.smoothing``.
    weight_mask: optional 0/1 pytree like the parameters (directions on its ones only).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    prior: optional direction to probe first (see :func:`zosam_jax.rge`).

  Returns:
    ``ascent_fn(params, key) -> estimate``, for :func:`ascent_quality`.
  """
  opts = options.resolve(
    zeroth_order, ZerothOrderOptions(), num_directions=num_directions, smoothing=smoothing
  )

  def ascent_fn(params: PyTree, key: jax.Array) -> PyTree:
    return estimators.rge(
      loss_fn,
      params,
      key,
      zeroth_order=opts,
      weight_mask=weight_mask,
      has_aux=has_aux,
      prior=prior,
    )

  return ascent_fn
