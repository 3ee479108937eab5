"""Zeroth-order (random) gradient estimators.

The random gradient estimate (RGE) of ``L`` at ``theta`` averages finite differences along ``m``
random directions ``u_i``::

  central:  g = 1/m sum_i [L(theta + d u_i) - L(theta - d u_i)] / (2 d) * u_i   (2m forwards)
  forward:  g = 1/m sum_i [L(theta + d u_i) - L(theta)]         / d       * u_i   (m + 1 forwards)
  jvp:      g = 1/m sum_i <grad L(theta), u_i> * u_i                             (m jvps)

with ``d`` the smoothing radius. Every distribution here has ``E[u u^T] = I`` on the active
coordinates, so all three schemes are unbiased for the gradient of a quadratic (central differences
are exact for quadratics along each direction, and the forward-difference bias ``d/2 u^T H u u`` has
zero mean because the distributions are symmetric).

Options travel as one :class:`zosam_jax.ZerothOrderOptions`; ``num_directions=`` and
``smoothing=`` are short forms on top of it. Directions are drawn once each, inside one
``lax.scan`` (see ``zosam_jax._src.probing`` for the cost model).

Common random numbers: both probes of a direction call the same ``loss_fn`` closure, so they see
the same batch and the same dropout key; the difference measures the direction, not the noise.

References:
  Nesterov & Spokoiny, "Random Gradient-Free Minimization of Convex Functions", Foundations of
  Computational Mathematics, 2017.
  Ji et al., "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient Sparse Training",
  CVPR 2026 (arXiv 2603.13115).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from zosam_jax._src import losses, options, probing, trees, validation
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import DirectionDistribution, LeafSelection, LossFn, PyTree


def _checked_flat_inputs(
  params: PyTree, weight_mask: PyTree | None, perturb_leaves: LeafSelection
) -> list[bool]:
  validation.check_mask_like("weight_mask", weight_mask, params)
  return validation.resolve_leaf_selection("perturb_leaves", perturb_leaves, params)


def sample_direction(
  key: jax.Array,
  params: PyTree,
  *,
  distribution: DirectionDistribution = "gaussian",
  weight_mask: PyTree | None = None,
  weight_mask_counts: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
) -> PyTree:
  """The direction that :func:`rge` draws from ``key`` (one of the keys it splits), as a pytree.

  ``rge(..., key)`` uses ``jax.random.split(key, num_directions)[i]`` for direction ``i``; passing
  that key here regenerates it exactly. Float32 leaves; zero on masked-out coordinates and on
  unselected leaves.

  Args:
    key: one direction's key (see above).
    params: the parameter pytree the direction is shaped like.
    distribution: ``"gaussian"`` (default, N(0, I)), ``"rademacher"`` (+-1) or ``"sphere"``
      (uniform on the sphere of radius ``sqrt(d)``, ``d`` the active coordinates).
    weight_mask: optional 0/1 pytree like ``params``; the direction is drawn on its ones only.
    weight_mask_counts: optional static ints like ``params``, the ones of each ``weight_mask``
      leaf (as :func:`rge` takes them; draws only that many values per leaf).
    perturb_leaves: which leaves get a direction: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.

  Returns:
    The direction, a float32 pytree like ``params``.
  """
  validation.check_choice("distribution", distribution, validation.DIRECTION_DISTRIBUTIONS)
  selection = _checked_flat_inputs(params, weight_mask, perturb_leaves)
  flat = trees.flatten(params, weight_mask, selection, weight_mask_counts)
  parts = probing.draw_direction(key, flat, distribution)
  return trees.to_params(flat, parts, dtype=jnp.float32)


def rge_with_coefficients(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  weight_mask: PyTree | None = None,
  weight_mask_counts: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
  prior: PyTree | None = None,
) -> tuple[PyTree, jax.Array]:
  """Like :func:`rge`, and also returns the ``m`` per-direction coefficients.

  The coefficients ``c_i`` (the finite-difference directional derivatives, so that the estimate is
  ``1/m sum_i c_i u_i``) are what a variance-adaptive rule or a diagnostic needs; returning them
  costs nothing extra. With ``prior``, ``c_0`` is measured along ``sqrt(d) p`` (see :func:`rge`).

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``), as in
      :func:`rge`.
    params: the point ``theta``.
    key: a ``jax.random`` key.
    zeroth_order: the estimator's options (``None``: ``ZerothOrderOptions()``).
    num_directions: short form that overrides ``zeroth_order.num_directions``.
    smoothing: short form that overrides ``zeroth_order.smoothing``.
    weight_mask: optional 0/1 pytree like ``params`` (directions on its ones only).
    weight_mask_counts: optional static ints, the ones of each ``weight_mask`` leaf.
    perturb_leaves: which leaves are probed (see :func:`rge`).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    prior: optional direction to probe first (see :func:`rge`).

  Returns:
    ``(estimate, coefficients)``: the estimate as :func:`rge` returns it, and a float32 array of
    the ``m`` coefficients ``c_i``.

  References:
    Nesterov & Spokoiny, 2017; Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115).
  """
  opts = options.resolve(
    zeroth_order, ZerothOrderOptions(), num_directions=num_directions, smoothing=smoothing
  )
  selection = _checked_flat_inputs(params, weight_mask, perturb_leaves)
  validation.check_mask_like("prior", prior, params)
  return probing.estimate(
    loss_fn,
    params,
    key,
    opts,
    has_aux=has_aux,
    weight_mask=weight_mask,
    selection=selection,
    weight_mask_counts=weight_mask_counts,
    prior=prior,
  )


def rge(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  weight_mask: PyTree | None = None,
  weight_mask_counts: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
  prior: PyTree | None = None,
) -> PyTree:
  r"""Random gradient estimate of ``loss_fn`` at ``params``.

  .. math::
    \hat g = \frac{1}{m} \sum_{i=1}^m
      \frac{L(\theta + \delta u_i) - L(\theta - \delta u_i)}{2\delta} u_i

  (central scheme; see the module docstring for ``forward`` and ``jvp``).

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``; aux is discarded).
      It should close over one batch and one dropout key so both probes of a direction see the
      same randomness.
    params: the point ``theta``; any pytree of arrays. Integer leaves are never perturbed.
    key: a ``jax.random`` key; the same key gives the same directions on every device.
    zeroth_order: the estimator's options (default ``ZerothOrderOptions()``: one Gaussian
      direction, central differences, ``delta = 1e-3``).
    num_directions, smoothing: short forms that override those fields of ``zeroth_order``.
    weight_mask: optional pytree of 0/1 arrays shaped like ``params``; directions live only where
      it is 1 and the estimate is exactly zero where it is 0.
    weight_mask_counts: optional pytree like ``params`` of static Python ints, the number of ones
      of each ``weight_mask`` leaf (the sparse-training wrappers keep these exact). With it only
      that many values are drawn per leaf and scattered to the mask's ones: at sparsity ``s`` the
      draw costs ``1 - s`` of a dense one. Same distribution, not the same values, as without it.
      A wrong count silently misplaces values.
    perturb_leaves: ``optax.masked``-style leaf selection (pytree of bools or a callable on
      params); unselected leaves get no direction (nothing is drawn for them) and a zero estimate.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    prior: optional pytree like ``params``, a direction to probe first (the guided estimate the
      heads' ``guidance="previous_gradient"`` uses). With ``p`` the prior restricted to the active
      coordinates and normalised, and ``d`` their number, direction 0 is ``w_0 = sqrt(d) p``
      and directions ``i >= 1`` are the draws made orthogonal to it, ``w_i = (I - p p^T) u_i``;
      the estimate is ``1/m sum_i c_i w_i`` with ``c_i`` the finite difference along ``w_i``.
      Its expectation (central or jvp scheme, exact for a quadratic) is
      ``1/m [d (g.p) p + (m - 1) (I - p p^T) g]``: biased towards ``p`` on purpose, since only
      its direction is used (docs/methods.md). A prior that is zero on the active coordinates
      gives the plain estimate, from the same directions.

  Returns:
    A pytree like ``params`` (same dtypes) holding the estimate; accumulated in float32.

  References:
    Nesterov & Spokoiny, 2017; Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115), eq. for RGE.
  """
  estimate, _ = rge_with_coefficients(
    loss_fn,
    params,
    key,
    zeroth_order=zeroth_order,
    num_directions=num_directions,
    smoothing=smoothing,
    weight_mask=weight_mask,
    weight_mask_counts=weight_mask_counts,
    perturb_leaves=perturb_leaves,
    has_aux=has_aux,
    prior=prior,
  )
  return estimate


class ProbeInfo(NamedTuple):
  """Per-direction by-products of :func:`rge_dynamic`.

  Attributes:
    coefficients: ``[max_directions]`` central-difference coefficients
      ``c_i = (L+ - L-)/(2 delta)`` (0 where skipped).
    second_differences: ``[max_directions]`` ``nu_i = (L+ - 2 L0 + L-)/(2 delta)`` (0 where
      skipped): ``delta/2 u^T H u`` for a smooth loss, but of the order of the evaluation noise
      over ``delta`` when the loss values are noisy. Noise of variance ``s^2`` on each evaluation
      gives ``nu_i`` three times the noise variance of ``c_i``.
  """

  coefficients: jax.Array
  second_differences: jax.Array


def rge_dynamic(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  max_directions: int,
  num_active: jax.Array,
  smoothing: float = 1e-3,
  distribution: DirectionDistribution = "gaussian",
  weight_mask: PyTree | None = None,
  weight_mask_counts: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
  prior: PyTree | None = None,
) -> tuple[PyTree, ProbeInfo]:
  """Central RGE over a traced number ``num_active`` of directions, at most ``max_directions``.

  The probe loop has the fixed length ``max_directions`` (so a changing count never retraces);
  directions ``i >= num_active`` are skipped by ``lax.cond`` and cost nothing but the branch. The
  estimate is ``1/num_active sum_{i < num_active} c_i u_i``. One extra forward at ``theta``
  (``L0``) gives every direction's second difference, a direct measurement of how noisy the
  probes are (see :class:`ProbeInfo`). Probes one direction at a time. ``prior`` as in
  :func:`rge` (direction 0 along it, the others orthogonal to it).

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``), as in
      :func:`rge`.
    params: the point ``theta``.
    key: a ``jax.random`` key; direction ``i`` comes from the same key whatever ``num_active``.
    max_directions: the static length of the probe loop, ``>= 1``.
    num_active: the number of directions probed, an integer scalar (may be traced) in
      ``[1, max_directions]``; the average is over the directions probed (a count outside the
      range is clipped into it).
    smoothing: finite-difference step ``delta > 0`` (default 1e-3).
    distribution: ``"gaussian"`` (default), ``"rademacher"`` or ``"sphere"``.
    weight_mask: optional 0/1 pytree like ``params`` (directions on its ones only).
    weight_mask_counts: optional static ints, the ones of each ``weight_mask`` leaf.
    perturb_leaves: which leaves are probed (see :func:`rge`).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    prior: optional direction to probe first (see :func:`rge`).

  Returns:
    ``(estimate, info)``: a pytree like ``params`` and a :class:`ProbeInfo` with each direction's
    coefficient and second difference.

  References:
    Nesterov & Spokoiny, 2017 (the estimator); the second differences as a noise measurement are
    this library's (used by :func:`zosam_jax.adaptive_zo_sam`).
  """
  options = ZerothOrderOptions(max_directions, smoothing, distribution)  # validates the fields
  selection = _checked_flat_inputs(params, weight_mask, perturb_leaves)
  validation.check_mask_like("prior", prior, params)
  return dynamic_estimate(
    loss_fn,
    params,
    key,
    options,
    num_active=num_active,
    weight_mask=weight_mask,
    weight_mask_counts=weight_mask_counts,
    selection=selection,
    has_aux=has_aux,
    prior=prior,
  )


def dynamic_estimate(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  options: ZerothOrderOptions,
  *,
  num_active: jax.Array,
  weight_mask: PyTree | None,
  weight_mask_counts: PyTree | None,
  selection: list[bool],
  has_aux: bool,
  prior: PyTree | None = None,
) -> tuple[PyTree, ProbeInfo]:
  """:func:`rge_dynamic` without the checks (heads call it with checked inputs), at most
  ``options.num_directions`` directions; ``prior`` as in :func:`rge`.

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``).
    params: the point ``theta``.
    key: a ``jax.random`` key.
    options: the estimator's options; ``options.num_directions`` is the loop's length (the
      scheme is central whatever ``options.scheme`` says).
    num_active: the number of directions probed (may be traced).
    weight_mask: 0/1 pytree like ``params``, or ``None``.
    weight_mask_counts: static ints, the ones of each ``weight_mask`` leaf, or ``None``.
    selection: one bool per parameter leaf, the probed leaves (already resolved).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    prior: optional direction to probe first.

  Returns:
    ``(estimate, info)`` as :func:`rge_dynamic` returns them.
  """
  flat = trees.flatten(params, weight_mask, selection, weight_mask_counts)
  total, coefficients, second = probing.probe_dynamic(
    losses.scalar_loss(loss_fn, has_aux),
    flat,
    key,
    options,
    num_active=num_active,
    prior=None if prior is None else probing.guide(flat, prior),
  )
  # The loop probes at most options.num_directions: average over the directions it probed (a
  # traced count cannot be refused at trace time, so one out of range is clipped, not trusted).
  count = jnp.clip(num_active, 1, options.num_directions).astype(jnp.float32)
  return trees.to_params(flat, total, 1.0 / count), ProbeInfo(coefficients, second)
