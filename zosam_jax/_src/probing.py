"""The probe loop: random directions drawn from keys and finite differences along them.

Every zeroth-order estimate in the library goes through :func:`probe` (or :func:`probe_dynamic`
for a traced number of directions): ``rge``, the ZO ascents of every head and the fully
zeroth-order optimizers.

Cost model. Directions are regenerated from ``jax.random`` keys inside a ``lax.scan`` that
carries the running sum ``sum_i c_i u_i``: each direction is drawn once per call and used for its
probes and for the accumulation; with ``probe_batch_size=1`` only one direction exists in memory
at a time. ``probe_batch_size=k`` draws and probes ``k`` directions together with ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from zosam_jax._src import losses, trees
from zosam_jax._src.options import ZerothOrderOptions

PyTree = Any
Loss = Callable[[PyTree], jax.Array]


def packed_rademacher(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """+-1 signs from 32 random bits per word: 32x fewer PRNG evaluations than
  ``jax.random.rademacher``, which spends a full 32-bit draw on each sign."""
  size = math.prod(shape)
  words = jax.random.bits(key, (-(-size // 32),), jnp.uint32)
  bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
  return (2.0 * bits.reshape(-1)[:size].astype(jnp.float32) - 1.0).reshape(shape)


def draw_direction(key: jax.Array, flat: trees.Flat, distribution: str) -> list[jax.Array]:
  """Draws one direction on the active leaves (float32), zero on masked-out coordinates."""
  keys = jax.random.split(key, max(len(flat.active), 1))
  positions = flat.positions or tuple(None for _ in flat.active)

  def sample(k, shape):
    if distribution == "rademacher":
      return packed_rademacher(k, shape)
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
    scale = jnp.sqrt(d_eff) / jnp.maximum(trees.norm(parts), jnp.finfo(jnp.float32).tiny)
    parts = [p * scale for p in parts]
  # No optimization_barrier here: XLA:CPU already materialises the draw once for its three
  # consumers, and a barrier made it split the Gaussian transform and recompute its tail in each
  # consumer (a 2.1M-parameter draw went from 12 ms to 39 ms inside the probe).
  return parts


class ProbeResult(NamedTuple):
  """What one pass of the probe loop returns.

  Attributes:
    total: float32 list, one array per active leaf: ``sum_i c_i u_i`` (not yet divided by m).
    coefficients: float32 ``[m]``, the directional derivatives ``c_i``.
    losses: float32 ``[m]`` (forward: ``L(x + delta u_i)``), ``[m, 2]`` (central: ``L(x + delta
      u_i), L(x - delta u_i)``) or ``[m, 0]`` (jvp).
    base: float32 ``L(x)`` for the forward scheme, else ``None``.
  """

  total: list[jax.Array]
  coefficients: jax.Array
  losses: jax.Array
  base: jax.Array | None


def _one_direction(
  loss: Loss, flat: trees.Flat, options: ZerothOrderOptions, base: jax.Array | None = None
):
  """Returns ``(u -> (c, probe losses), base)`` for the options' scheme (the forward scheme
  evaluates ``L(x)`` unless the caller already has it as ``base``)."""
  delta = options.smoothing
  if options.scheme == "central":

    def one(u):
      plus = loss(trees.shifted(flat, u, delta))
      minus = loss(trees.shifted(flat, u, -delta))
      return (plus - minus) / (2.0 * delta), jnp.stack([plus, minus])

    return one, None
  if options.scheme == "forward":
    base = loss(trees.unflatten(flat)) if base is None else base

    def one(u):
      plus = loss(trees.shifted(flat, u, delta))
      return (plus - base) / delta, plus

    return one, base
  theta = trees.unflatten(flat)

  def one(u):
    c = jax.jvp(loss, (theta,), (trees.tangent(flat, u),))[1].astype(jnp.float32)
    return c, jnp.zeros([0], jnp.float32)

  return one, None


def probe(
  loss: Loss,
  flat: trees.Flat,
  key: jax.Array,
  options: ZerothOrderOptions,
  *,
  base: jax.Array | None = None,
) -> ProbeResult:
  """Probes ``options.num_directions`` directions drawn from ``jax.random.split(key, m)``.

  ``loss`` returns a float32 scalar. Exactly ``options.queries`` evaluations of it at run time
  (one fewer for the forward scheme when ``base``, the float32 ``L(x)``, is given).
  """
  m, chunk = options.num_directions, options.chunk
  keys = jax.random.split(key, m)
  one, base = _one_direction(loss, flat, options, base)
  draw = lambda k: draw_direction(k, flat, options.distribution)  # noqa: E731

  def single(carry, k):
    u = draw(k)
    c, ls = one(u)
    return [acc + c * ui for acc, ui in zip(carry, u, strict=True)], (c, ls)

  def batched(carry, ks):
    us = jax.vmap(draw)(ks)
    cs, ls = jax.vmap(one)(us)
    new = [acc + jnp.tensordot(cs, ui, axes=1) for acc, ui in zip(carry, us, strict=True)]
    return new, (cs, ls)

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  if chunk == 1:
    total, (coefficients, losses) = jax.lax.scan(single, zeros, keys)
    return ProbeResult(total, coefficients, losses, base)
  num_full, remainder = divmod(m, chunk)
  full = keys[: num_full * chunk].reshape((num_full, chunk) + keys.shape[1:])
  total, (coefficients, losses) = jax.lax.scan(batched, zeros, full)
  coefficients = coefficients.reshape(-1)
  losses = losses.reshape((num_full * chunk,) + losses.shape[2:])
  if remainder:
    total, (c_rest, l_rest) = batched(total, keys[num_full * chunk :])
    coefficients = jnp.concatenate([coefficients, c_rest])
    losses = jnp.concatenate([losses, l_rest])
  return ProbeResult(total, coefficients, losses, base)


def probe_dynamic(
  loss: Loss,
  flat: trees.Flat,
  key: jax.Array,
  *,
  max_directions: int,
  num_active: jax.Array,
  smoothing: float,
  distribution: str,
):
  """Central probes of the first ``num_active`` (traced) of ``max_directions`` directions.

  The loop has the fixed length ``max_directions`` (a changing count never retraces); directions
  ``i >= num_active`` are skipped by ``lax.cond``. One extra forward at ``theta`` gives each
  direction's second difference. Returns ``(total, coefficients, second_differences)``.
  """
  base = loss(trees.unflatten(flat))
  keys = jax.random.split(key, max_directions)

  def active(carry):
    acc, k = carry
    u = draw_direction(k, flat, distribution)
    plus = loss(trees.shifted(flat, u, smoothing))
    minus = loss(trees.shifted(flat, u, -smoothing))
    c = (plus - minus) / (2.0 * smoothing)
    nu = (plus - 2.0 * base + minus) / (2.0 * smoothing)
    return [a + c * ui for a, ui in zip(acc, u, strict=True)], c, nu

  def skip(carry):
    return carry[0], jnp.float32(0.0), jnp.float32(0.0)

  def body(acc, xs):
    i, k = xs
    acc, c, nu = jax.lax.cond(i < num_active, active, skip, (acc, k))
    return acc, (c, nu)

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  total, (coefficients, second) = jax.lax.scan(body, zeros, (jnp.arange(max_directions), keys))
  return total, coefficients, second


def estimate(
  loss_fn: Callable[[PyTree], Any],
  params: PyTree,
  key: jax.Array,
  options: ZerothOrderOptions,
  *,
  has_aux: bool = False,
  weight_mask: PyTree | None = None,
  selection: list[bool] | None = None,
  weight_mask_counts: PyTree | None = None,
) -> tuple[PyTree, jax.Array]:
  """The random gradient estimate as a tree like ``params`` and its ``m`` coefficients.

  Unchecked: the public :func:`zosam_jax.rge` validates; heads call this with checked inputs.
  """
  flat = trees.flatten(params, weight_mask, selection, weight_mask_counts)
  result = probe(losses.scalar_loss(loss_fn, has_aux), flat, key, options)
  return trees.to_params(flat, result.total, 1.0 / options.num_directions), result.coefficients
