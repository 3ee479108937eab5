"""Loss along filter-normalised random directions (Li et al., 2018).

References:
  Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
  NeurIPS 2018 (and its code, ``github.com/tomgoldstein/loss-landscape``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from zosam_jax._src import losses as loss_lib
from zosam_jax._src import trees, validation
from zosam_jax._src.types import LossFn, PyTree


def filter_normalized_direction(
  key: jax.Array, params: PyTree, *, weight_mask: PyTree | None = None
) -> PyTree:
  r"""A Gaussian direction rescaled filter by filter to the norms of ``params``' filters.

  For every leaf with ``ndim >= 2`` a filter is a slice along the LAST axis (Flax layouts: a conv
  kernel ``[H, W, in, out]`` and a dense kernel ``[in, out]`` have one filter per output unit).
  With ``d ~ N(0, I)`` drawn per leaf,

  .. math:: d_f \leftarrow \frac{d_f}{\|d_f\|} \, \|\theta_f\|

  for every filter ``f``. With ``mask``, ``d`` is masked first and ``\theta_f`` is replaced by
  ``\theta_f \odot m_f``: the direction lives on active weights and matches the norm of the active
  weights (a fully pruned filter gets zero). Leaves with ``ndim < 2`` (biases, BatchNorm/LayerNorm
  scales and offsets) get zero, as ``ignore='biasbn'`` does in the loss-landscape code.

  Cost: one Gaussian draw per leaf; no forward pass.

  Args:
    key: PRNG key (split into one key per leaf).
    params: ``theta``, the parameter pytree.
    weight_mask: optional 0/1 pytree like ``params`` (active weights).

  Returns:
    A float32 pytree like ``params``.

  Raises:
    ValueError: ``mask`` not shaped like ``params``.

  References:
    Li et al., NeurIPS 2018, sec. 4 ("filter normalization").
  """
  validation.check_mask_like("weight_mask", weight_mask, params)
  leaves, treedef = jax.tree.flatten(params)
  mask_leaves = [None] * len(leaves) if weight_mask is None else jax.tree.leaves(weight_mask)
  keys = jax.random.split(key, max(len(leaves), 1))
  out = []
  for k, p, m in zip(keys, leaves, mask_leaves, strict=True):
    if jnp.ndim(p) < 2:
      out.append(jnp.zeros(jnp.shape(p), jnp.float32))
      continue
    theta = jnp.asarray(p, jnp.float32)
    d = jax.random.normal(k, jnp.shape(p), jnp.float32)
    if m is not None:
      m = jnp.asarray(m, jnp.float32)
      theta, d = theta * m, d * m
    axes = tuple(range(jnp.ndim(p) - 1))
    theta_norm = jnp.sqrt(jnp.sum(jnp.square(theta), axis=axes, keepdims=True))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=axes, keepdims=True))
    scale = jnp.where(d_norm > 0, theta_norm / jnp.where(d_norm > 0, d_norm, 1.0), 0.0)
    out.append(d * scale)
  return jax.tree.unflatten(treedef, out)


class LossLandscape(NamedTuple):
  """Losses on a 1-D line or 2-D plane through ``params``.

  Attributes:
    alphas: ``(num_points,)`` coefficients along the first direction.
    betas: ``(num_points,)`` coefficients along the second direction (``None`` in 1-D).
    losses: ``(num_points,)`` with ``losses[i] = L(theta + alphas[i] d1)``, or
      ``(num_points, num_points)`` with ``losses[i, j] = L(theta + alphas[i] d1 + betas[j] d2)``.
    directions: ``(d1,)`` or ``(d1, d2)``, the filter-normalised directions (float32 pytrees).
  """

  alphas: jax.Array
  betas: jax.Array | None
  losses: jax.Array
  directions: tuple[PyTree, ...]


def loss_landscape(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  num_points: int = 21,
  span: float = 1.0,
  two_dimensional: bool = False,
  weight_mask: PyTree | None = None,
  has_aux: bool = False,
  chunk_size: int = 4,
) -> LossLandscape:
  r"""The loss on a grid along one or two filter-normalised directions.

  .. math:: f(\alpha) = L(\theta + \alpha d_1), \qquad
     f(\alpha, \beta) = L(\theta + \alpha d_1 + \beta d_2)

  with ``d_1, d_2`` from :func:`filter_normalized_direction` (independent keys) and
  ``alpha, beta`` on ``jnp.linspace(-span, span, num_points)``. An odd ``num_points`` puts the
  centre on the grid, where the loss equals ``loss_fn(params)`` exactly. Grid points are evaluated
  inside one ``jax.lax.map`` with ``batch_size=chunk_size`` (``chunk_size`` points vmapped at a
  time; larger is faster and takes ``chunk_size`` times the activation memory of one forward).

  Cost: ``num_points`` (1-D) or ``num_points**2`` (2-D) forward passes.

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``). Evaluate it in
      inference mode (e.g. BatchNorm with running statistics) for a deterministic landscape.
    params: the centre ``theta``.
    key: PRNG key for the directions.
    num_points: grid points per axis, ``>= 2``.
    span: the grid covers ``[-span, span]`` on each axis; ``> 0``.
    two_dimensional: a plane (two directions) instead of a line.
    weight_mask: optional 0/1 pytree like ``params`` (directions on active weights only).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    chunk_size: grid points evaluated together, ``>= 1``.

  Returns:
    A :class:`LossLandscape`.

  Raises:
    ValueError: ``num_points < 2``, ``span <= 0``, ``chunk_size < 1`` or a bad ``mask``.

  References:
    Li et al., NeurIPS 2018.
  """
  validation.check_int_at_least("num_points", num_points, 2)
  validation.check_positive("span", span)
  validation.check_int_at_least("chunk_size", chunk_size, 1)
  validation.check_mask_like("weight_mask", weight_mask, params)
  loss = loss_lib.scalar_loss(loss_fn, has_aux)
  key1, key2 = jax.random.split(key)
  d1 = filter_normalized_direction(key1, params, weight_mask=weight_mask)
  axis = jnp.linspace(-span, span, num_points, dtype=jnp.float32)
  if not two_dimensional:

    def at(a: jax.Array) -> jax.Array:
      return loss(trees.add_scaled(params, d1, a))

    losses = jax.lax.map(at, axis, batch_size=chunk_size)
    return LossLandscape(axis, None, losses, (d1,))

  d2 = filter_normalized_direction(key2, params, weight_mask=weight_mask)
  alphas, betas = (x.reshape(-1) for x in jnp.meshgrid(axis, axis, indexing="ij"))

  def at2(ab: tuple[jax.Array, jax.Array]) -> jax.Array:
    a, b = ab
    shifted = jax.tree.map(lambda x, y: a * x + b * y, d1, d2)
    return loss(trees.add_scaled(params, shifted, 1.0))

  losses = jax.lax.map(at2, (alphas, betas), batch_size=chunk_size)
  return LossLandscape(axis, axis, losses.reshape(num_points, num_points), (d1, d2))
