"""Zeroth-order (random) gradient estimators.

The random gradient estimate (RGE) of ``L`` at ``theta`` averages finite differences along ``m``
random directions ``u_i``:

  central:  g = 1/m sum_i [L(theta + d u_i) - L(theta - d u_i)] / (2 d) * u_i   (2m forwards)
  forward:  g = 1/m sum_i [L(theta + d u_i) - L(theta)]         / d       * u_i   (m + 1 forwards)
  jvp:      g = 1/m sum_i <grad L(theta), u_i> * u_i                             (m jvps)

with ``d`` the smoothing radius. Every distribution here has ``E[u u^T] = I`` on the active
coordinates, so all three schemes are unbiased for the gradient of a quadratic (central differences
are exact for quadratics along each direction, and the forward-difference bias ``d/2 u^T H u u`` has
zero mean because the distributions are symmetric).

Cost model. Directions are regenerated from ``jax.random`` keys inside a ``lax.scan`` that carries
the running estimate: each direction is drawn exactly once per call and used both for its probes
and for the accumulation, and with ``probe_batch_size=1`` only one direction exists in memory at a
time. ``probe_batch_size=k`` draws and probes ``k`` directions together with ``jax.vmap`` (faster
for small dense models; on convolutions it becomes a grouped convolution and is usually slower).

Common random numbers: both probes of a direction call the same ``loss_fn`` closure, so they see
the same batch and the same dropout key; the difference measures the direction, not the noise.

References:
  Nesterov & Spokoiny, "Random Gradient-Free Minimization of Convex Functions", 2017.
  Ji et al., "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient Sparse Training",
  CVPR 2026 (arXiv 2603.13115).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from zosam_jax import _validation

PyTree = Any
LossFn = Callable[[PyTree], Any]


class _Flat(NamedTuple):
  """Parameters as a flat list, with the indices of the leaves that directions live on."""

  leaves: list[jax.Array]
  treedef: Any
  active: tuple[int, ...]
  masks: tuple[jax.Array | None, ...]  # one per active leaf, float32 0/1 or None (dense)
  # With static mask counts: the flat positions of each mask's ones (None: draw densely).
  positions: tuple[jax.Array | None, ...] = ()


def _check_mask_counts(mask_counts: PyTree, mask: PyTree | None, params: PyTree) -> list[int]:
  if mask is None:
    raise ValueError("mask_counts needs mask: it gives the number of ones of each mask leaf.")
  counts = jax.tree.leaves(mask_counts)
  sizes = [int(jnp.size(p)) for p in jax.tree.leaves(params)]
  if len(counts) != len(sizes):
    raise ValueError(
      f"mask_counts must have one int per parameter leaf ({len(sizes)}), got {len(counts)}."
    )
  for c, n in zip(counts, sizes, strict=True):
    if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= n:
      raise ValueError(
        f"mask_counts leaves must be static Python ints in [0, leaf size]; got {c!r} for a leaf "
        f"of size {n}."
      )
  return counts


def _flatten(
  params: PyTree,
  mask: PyTree | None,
  leaf_selection: Sequence[bool] | None,
  mask_counts: PyTree | None = None,
) -> _Flat:
  leaves, treedef = jax.tree.flatten(params)
  if leaf_selection is None:
    leaf_selection = [jnp.issubdtype(jnp.result_type(p), jnp.floating) for p in leaves]
  active = tuple(i for i, on in enumerate(leaf_selection) if on)
  mask_leaves = [None] * len(leaves) if mask is None else jax.tree.leaves(mask)
  masks = tuple(
    None if mask_leaves[i] is None else jnp.asarray(mask_leaves[i], jnp.float32) for i in active
  )
  positions = tuple(None for _ in active)
  if mask_counts is not None:
    counts = _check_mask_counts(mask_counts, mask, params)
    # Found once per call, outside the probe loop; a dense leaf (count == size) stays dense.
    positions = tuple(
      None
      if counts[i] == jnp.size(leaves[i])
      else jnp.nonzero(jnp.ravel(mask_leaves[i]) != 0, size=counts[i], fill_value=0)[0]
      for i in active
    )
  return _Flat(leaves, treedef, active, masks, positions)


def _packed_rademacher(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """+-1 signs from 32 random bits per word: 32x fewer PRNG evaluations than
  ``jax.random.rademacher``, which spends a full 32-bit draw on each sign."""
  size = math.prod(shape)
  words = jax.random.bits(key, (-(-size // 32),), jnp.uint32)
  bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
  return (2.0 * bits.reshape(-1)[:size].astype(jnp.float32) - 1.0).reshape(shape)


def draw_direction(key: jax.Array, flat: _Flat, distribution: str) -> list[jax.Array]:
  """Draws one direction on the active leaves (float32), zero on masked-out coordinates."""
  keys = jax.random.split(key, max(len(flat.active), 1))
  positions = flat.positions or tuple(None for _ in flat.active)

  def sample(k, shape):
    if distribution == "rademacher":
      return _packed_rademacher(k, shape)
    return jax.random.normal(k, shape, jnp.float32)  # gaussian, and sphere before normalising

  parts = []
  for j, i in enumerate(flat.active):
    shape = jnp.shape(flat.leaves[i])
    if positions[j] is not None:
      # Sparse draw: only as many values as the mask has ones, scattered to their positions.
      values = sample(keys[j], positions[j].shape)
      u = (
        jnp.zeros((math.prod(shape),), jnp.float32)
        .at[positions[j]]
        .set(values, indices_are_sorted=True, unique_indices=True)
      )
      u = u.reshape(shape)
    else:
      u = sample(keys[j], shape)
      if flat.masks[j] is not None:
        u = u * flat.masks[j]
    parts.append(u)
  if distribution == "sphere":
    # Uniform on the sphere of radius sqrt(d_eff) in the active subspace, so that E[u u^T] = I
    # there, like the other two distributions.
    d_eff = sum(
      jnp.float32(p.size)
      if mk is None
      else (jnp.float32(pos.shape[0]) if pos is not None else jnp.sum(mk))
      for p, mk, pos in zip(parts, flat.masks, positions, strict=True)
    )
    norm = jnp.sqrt(sum(jnp.sum(jnp.square(p)) for p in parts))
    scale = jnp.sqrt(d_eff) / jnp.maximum(norm, jnp.finfo(jnp.float32).tiny)
    parts = [p * scale for p in parts]
  # No optimization_barrier here: XLA:CPU already materialises the draw once for its three
  # consumers, and a barrier made it split the Gaussian transform and recompute its tail in each
  # consumer (a 2.1M-parameter draw went from 12 ms to 39 ms inside the probe).
  return parts


def _to_params(
  flat: _Flat, parts: list[jax.Array], scale: float | jax.Array = 1.0, dtype: Any = None
) -> PyTree:
  """``scale * parts`` on the active leaves and zeros elsewhere, as a tree like the parameters,
  in ``dtype`` (default: each parameter's own dtype)."""
  out = [jnp.zeros(jnp.shape(p), dtype or jnp.result_type(p)) for p in flat.leaves]
  for j, i in enumerate(flat.active):
    out[i] = (parts[j] * scale).astype(dtype or flat.leaves[i].dtype)
  return jax.tree.unflatten(flat.treedef, out)


def _shifted(flat: _Flat, direction: list[jax.Array], scale: float | jax.Array) -> PyTree:
  """theta + scale * u, cast back to each parameter's dtype."""
  leaves = list(flat.leaves)
  for j, i in enumerate(flat.active):
    p = leaves[i]
    leaves[i] = (p.astype(jnp.float32) + scale * direction[j]).astype(p.dtype)
  return jax.tree.unflatten(flat.treedef, leaves)


def _tangent(flat: _Flat, direction: list[jax.Array]) -> PyTree:
  """The direction as a full tangent tree for jax.jvp (zeros on inactive leaves)."""
  tangents = []
  for p in flat.leaves:
    if jnp.issubdtype(jnp.result_type(p), jnp.inexact):
      tangents.append(jnp.zeros_like(p))
    else:
      tangents.append(jnp.zeros(jnp.shape(p), jax.dtypes.float0))
  for j, i in enumerate(flat.active):
    tangents[i] = direction[j].astype(flat.leaves[i].dtype)
  return jax.tree.unflatten(flat.treedef, tangents)


def _scalar_loss(loss_fn: LossFn, has_aux: bool) -> Callable[[PyTree], jax.Array]:
  def fn(p):
    out = loss_fn(p)
    loss = out[0] if has_aux else out
    return jnp.asarray(loss, jnp.float32)

  return fn


def _directional_derivative_fn(
  loss: Callable[[PyTree], jax.Array], flat: _Flat, scheme: str, smoothing: float
) -> Callable[[list[jax.Array]], jax.Array]:
  """Returns u -> the scheme's estimate of the directional derivative <grad L, u>."""
  if scheme == "central":

    def coefficient(u):
      plus = loss(_shifted(flat, u, smoothing))
      minus = loss(_shifted(flat, u, -smoothing))
      return (plus - minus) / (2.0 * smoothing)
  elif scheme == "forward":
    base = loss(jax.tree.unflatten(flat.treedef, flat.leaves))

    def coefficient(u):
      return (loss(_shifted(flat, u, smoothing)) - base) / smoothing
  else:  # jvp
    theta = jax.tree.unflatten(flat.treedef, flat.leaves)

    def coefficient(u):
      return jax.jvp(loss, (theta,), (_tangent(flat, u),))[1].astype(jnp.float32)

  return coefficient


def sample_direction(
  key: jax.Array,
  params: PyTree,
  *,
  distribution: str = "gaussian",
  mask: PyTree | None = None,
  leaf_selection: Sequence[bool] | None = None,
  mask_counts: PyTree | None = None,
) -> PyTree:
  """The direction that :func:`rge` draws from ``key`` (one of the keys it splits), as a pytree.

  ``rge(..., key)`` uses ``jax.random.split(key, num_directions)[i]`` for direction ``i``; passing
  that key here regenerates it exactly. Float32 leaves; zero on masked-out coordinates and on
  unselected leaves.
  """
  _validation.check_choice("distribution", distribution, _validation.DISTRIBUTIONS)
  _validation.check_mask_like("mask", mask, params)
  flat = _flatten(params, mask, leaf_selection, mask_counts)
  parts = draw_direction(key, flat, distribution)
  return _to_params(flat, parts, dtype=jnp.float32)


def rge_with_coefficients(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  num_directions: int,
  smoothing: float,
  distribution: str = "gaussian",
  scheme: str = "central",
  probe_batch_size: int | None = 1,
  mask: PyTree | None = None,
  has_aux: bool = False,
  leaf_selection: Sequence[bool] | None = None,
  mask_counts: PyTree | None = None,
) -> tuple[PyTree, jax.Array]:
  """Like :func:`rge`, and also returns the ``m`` per-direction coefficients.

  The coefficients ``c_i`` (the finite-difference directional derivatives, so that the estimate is
  ``1/m sum_i c_i u_i``) are what a variance-adaptive rule or a diagnostic needs; returning them
  costs nothing extra.
  """
  _validation.check_estimator_args(
    num_directions, smoothing, distribution, scheme, probe_batch_size
  )
  _validation.check_mask_like("mask", mask, params)
  flat = _flatten(params, mask, leaf_selection, mask_counts)
  loss = _scalar_loss(loss_fn, has_aux)
  coefficient = _directional_derivative_fn(loss, flat, scheme, smoothing)
  m = num_directions
  chunk = m if probe_batch_size is None else min(probe_batch_size, m)
  keys = jax.random.split(key, m)

  def single(carry, k):
    u = draw_direction(k, flat, distribution)
    c = coefficient(u)
    return [acc + c * ui for acc, ui in zip(carry, u, strict=True)], c

  def batched(carry, ks):
    us = jax.vmap(lambda k: draw_direction(k, flat, distribution))(ks)
    cs = jax.vmap(coefficient)(us)
    new = [acc + jnp.tensordot(cs, ui, axes=1) for acc, ui in zip(carry, us, strict=True)]
    return new, cs

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  if chunk == 1:
    total, coefficients = jax.lax.scan(single, zeros, keys)
  else:
    num_full, remainder = divmod(m, chunk)
    full_keys = keys[: num_full * chunk].reshape((num_full, chunk) + keys.shape[1:])
    total, coefficients = jax.lax.scan(batched, zeros, full_keys)
    coefficients = coefficients.reshape(-1)
    if remainder:
      total, rest = batched(total, keys[num_full * chunk :])
      coefficients = jnp.concatenate([coefficients, rest])

  return _to_params(flat, total, 1.0 / m), coefficients


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
  smoothing: float,
  distribution: str = "gaussian",
  mask: PyTree | None = None,
  has_aux: bool = False,
  leaf_selection: Sequence[bool] | None = None,
  mask_counts: PyTree | None = None,
) -> tuple[PyTree, ProbeInfo]:
  """Central RGE over a traced number ``num_active`` of directions, at most ``max_directions``.

  The probe loop has the fixed length ``max_directions`` (so a changing count never retraces);
  directions ``i >= num_active`` are skipped by ``lax.cond`` and cost nothing but the branch. The
  estimate is ``1/num_active sum_{i < num_active} c_i u_i``. One extra forward at ``theta``
  (``L0``) gives every direction's second difference, a direct measurement of how noisy the
  probes are (see :class:`ProbeInfo`). Probes one direction at a time.
  """
  _validation.check_estimator_args(max_directions, smoothing, distribution, "central", 1)
  _validation.check_mask_like("mask", mask, params)
  flat = _flatten(params, mask, leaf_selection, mask_counts)
  loss = _scalar_loss(loss_fn, has_aux)
  base = loss(params)
  keys = jax.random.split(key, max_directions)

  def probe(carry):
    acc, k = carry
    u = draw_direction(k, flat, distribution)
    plus = loss(_shifted(flat, u, smoothing))
    minus = loss(_shifted(flat, u, -smoothing))
    c = (plus - minus) / (2.0 * smoothing)
    nu = (plus - 2.0 * base + minus) / (2.0 * smoothing)
    return [a + c * ui for a, ui in zip(acc, u, strict=True)], c, nu

  def skip(carry):
    return carry[0], jnp.float32(0.0), jnp.float32(0.0)

  def body(acc, xs):
    i, k = xs
    acc, c, nu = jax.lax.cond(i < num_active, probe, skip, (acc, k))
    return acc, (c, nu)

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  total, (coefficients, second) = jax.lax.scan(body, zeros, (jnp.arange(max_directions), keys))
  count = jnp.maximum(num_active, 1).astype(jnp.float32)
  return _to_params(flat, total, 1.0 / count), ProbeInfo(coefficients, second)


def rge(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  num_directions: int,
  smoothing: float,
  distribution: str = "gaussian",
  scheme: str = "central",
  probe_batch_size: int | None = 1,
  mask: PyTree | None = None,
  has_aux: bool = False,
  leaf_selection: Sequence[bool] | None = None,
  mask_counts: PyTree | None = None,
) -> PyTree:
  r"""Random gradient estimate of ``loss_fn`` at ``params`` from ``num_directions`` directions.

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
    num_directions: ``m >= 1``.
    smoothing: ``delta > 0``.
    distribution: ``"gaussian"`` (N(0, I)), ``"rademacher"`` (+-1) or ``"sphere"`` (uniform on the
      sphere of radius ``sqrt(d)``, ``d`` the number of active coordinates).
    scheme: ``"central"``, ``"forward"`` or ``"jvp"`` (exact directional derivative by forward-mode
      autodiff along the same directions).
    probe_batch_size: directions probed together with ``jax.vmap``; ``1`` probes one at a time
      (never more than one direction in memory), ``None`` probes all ``m`` at once.
    mask: optional pytree of 0/1 arrays shaped like ``params``; directions live only where it is 1
      and the estimate is exactly zero where it is 0.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    leaf_selection: optional sequence with one bool per leaf of ``params``; unselected leaves get no
      direction (nothing is drawn for them) and a zero estimate.
    mask_counts: optional pytree like ``params`` of static Python ints, the number of ones of each
      ``mask`` leaf (sparse-training wrappers keep these counts exact). With it only that many
      values are drawn per leaf and scattered to the mask's ones: at sparsity ``s`` the draw costs
      ``1 - s`` of a dense one. The directions have the same distribution (not the same values)
      as without it. The counts must be right: a wrong count silently misplaces values.

  Returns:
    A pytree like ``params`` (same dtypes) holding the estimate; accumulated in float32.

  References:
    Nesterov & Spokoiny, 2017; Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115), eq. for RGE.
  """
  estimate, _ = rge_with_coefficients(
    loss_fn,
    params,
    key,
    num_directions=num_directions,
    smoothing=smoothing,
    distribution=distribution,
    scheme=scheme,
    probe_batch_size=probe_batch_size,
    mask=mask,
    has_aux=has_aux,
    leaf_selection=leaf_selection,
    mask_counts=mask_counts,
  )
  return estimate
