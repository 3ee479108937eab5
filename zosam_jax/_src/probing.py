"""The probe loop: random directions drawn from keys and finite differences along them.

Every zeroth-order estimate in the library goes through :func:`probe` (or :func:`probe_dynamic`
for a traced number of directions): ``rge``, the ZO ascents of every head and the fully
zeroth-order optimizers.

Guided estimates (:func:`guide`, :func:`guided_direction`): direction 0 is a given prior, the
others are the same draws with their component along it removed.

Cost model. Directions are regenerated from ``jax.random`` keys inside a ``lax.scan`` that
carries the running sum ``sum_i c_i u_i``: each direction is drawn once per call and used for its
probes and for the accumulation; with ``probe_batch_size=1`` only one direction exists in memory
at a time. ``probe_batch_size=k`` draws and probes ``k`` directions together with ``jax.vmap``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp

from zosam_jax._src import losses, trees
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import DirectionDistribution, LossFn, PyTree

Loss = Callable[[PyTree], jax.Array]
# ``u -> (c, probe losses)``: one direction's finite difference (see ``_one_direction``).
OneDirection = Callable[[Sequence[jax.Array]], tuple[jax.Array, jax.Array]]


def packed_rademacher(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """+-1 signs from 32 random bits per word: 32x fewer PRNG evaluations than
  ``jax.random.rademacher``, which spends a full 32-bit draw on each sign."""
  size = math.prod(shape)
  words = jax.random.bits(key, (-(-size // 32),), jnp.uint32)
  bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
  return (2.0 * bits.reshape(-1)[:size].astype(jnp.float32) - 1.0).reshape(shape)


def active_count(flat: trees.Flat) -> jax.Array:
  """``d``, the number of coordinates directions live on (float32; traced under a mask)."""
  positions = flat.positions or tuple(None for _ in flat.active)
  # cast: sum() is typed "| Literal[0]", the int 0 of no active leaf (a scalar to JAX).
  return cast(
    jax.Array,
    sum(
      jnp.float32(math.prod(jnp.shape(flat.leaves[i])))
      if mk is None
      else (jnp.float32(pos.shape[0]) if pos is not None else jnp.sum(mk))
      for i, mk, pos in zip(flat.active, flat.masks, positions, strict=True)
    ),
  )


def draw_direction(
  key: jax.Array, flat: trees.Flat, distribution: DirectionDistribution
) -> list[jax.Array]:
  """Draws one direction on the active leaves (float32), zero on masked-out coordinates."""
  keys = jax.random.split(key, max(len(flat.active), 1))
  positions = flat.positions or tuple(None for _ in flat.active)

  def sample(k: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    if distribution == "rademacher":
      return packed_rademacher(k, shape)
    return jax.random.normal(k, shape, jnp.float32)  # gaussian, and sphere before normalising

  parts = []
  for j, i in enumerate(flat.active):
    shape = jnp.shape(flat.leaves[i])
    pos = positions[j]
    if pos is not None:
      # Sparse draw: only as many values as the mask has ones, scattered to their positions.
      values = sample(keys[j], pos.shape)
      u = (
        jnp.zeros((math.prod(shape),), jnp.float32)
        .at[pos]
        .set(values, indices_are_sorted=True, unique_indices=True)
      )
      u = u.reshape(shape)
    else:
      u = sample(keys[j], shape)
      mask = flat.masks[j]
      if mask is not None:
        u = u * mask
    parts.append(u)
  if distribution == "sphere":
    # Uniform on the sphere of radius sqrt(d_eff) in the active subspace, so that E[u u^T] = I
    # there, like the other two distributions.
    scale = jnp.sqrt(active_count(flat)) / jnp.maximum(
      trees.norm(parts), jnp.finfo(jnp.float32).tiny
    )
    parts = [p * scale for p in parts]
  # No optimization_barrier here: XLA:CPU already materialises the draw once for its three
  # consumers, and a barrier made it split the Gaussian transform and recompute its tail in each
  # consumer (a 2.1M-parameter draw went from 12 ms to 39 ms inside the probe).
  return parts


class Guide(NamedTuple):
  """A prior direction for the probe loop (see :func:`guide`).

  Attributes:
    unit: float32 list, one array per active leaf: the prior restricted to the active
      coordinates and normalised, ``p`` with ``||p|| = 1`` (all zeros when there is no prior).
    present: bool scalar, whether the prior is nonzero on the active coordinates.
    length: float32 ``sqrt(d)``, the expected norm of a random direction: the prior is probed
      as ``sqrt(d) p`` so that every probe moves ``theta`` by about the same length.
  """

  unit: list[jax.Array]
  present: jax.Array
  length: jax.Array


def guide(flat: trees.Flat, prior: PyTree) -> Guide:
  """The :class:`Guide` of ``prior`` (a float32 tree like the parameters) on ``flat``'s active
  coordinates. The prior is masked again here: coordinates pruned since it was stored drop out."""
  leaves = jax.tree.leaves(prior)
  parts = []
  for j, i in enumerate(flat.active):
    p = jnp.asarray(leaves[i], jnp.float32)
    mask = flat.masks[j]
    parts.append(p if mask is None else p * mask)
  size = trees.norm(parts)
  return Guide(trees.safe_divide(parts, size), size > trees.TINY, jnp.sqrt(active_count(flat)))


def guided_direction(
  index: jax.Array,
  key: jax.Array,
  flat: trees.Flat,
  distribution: DirectionDistribution,
  prior: Guide,
) -> list[jax.Array]:
  """Direction ``index`` of a guided estimate: ``sqrt(d) p`` for ``index == 0`` when the prior
  is present, else the direction drawn from ``key`` with its component along ``p`` removed,
  ``(I - p p^T) u`` (``u`` itself when there is no prior: the random fallback)."""

  def along_prior() -> list[jax.Array]:
    return [prior.length * p for p in prior.unit]

  def orthogonal() -> list[jax.Array]:
    u = draw_direction(key, flat, distribution)
    along = sum(jnp.vdot(ui, pi) for ui, pi in zip(u, prior.unit, strict=True))
    return [ui - along * pi for ui, pi in zip(u, prior.unit, strict=True)]

  return jax.lax.cond(jnp.logical_and(index == 0, prior.present), along_prior, orthogonal)


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
) -> tuple[OneDirection, jax.Array | None]:
  """Returns ``(u -> (c, probe losses), base)`` for the options' scheme (the forward scheme
  evaluates ``L(x)`` unless the caller already has it as ``base``)."""
  delta = options.smoothing
  if options.scheme == "central":

    def central(u: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
      plus = loss(trees.shifted(flat, u, delta))
      minus = loss(trees.shifted(flat, u, -delta))
      return (plus - minus) / (2.0 * delta), jnp.stack([plus, minus])

    return central, None
  if options.scheme == "forward":
    base = loss(trees.unflatten(flat)) if base is None else base

    def forward(u: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
      plus = loss(trees.shifted(flat, u, delta))
      return (plus - base) / delta, plus

    return forward, base
  theta = trees.unflatten(flat)

  def jvp(u: Sequence[jax.Array]) -> tuple[jax.Array, jax.Array]:
    c = jax.jvp(loss, (theta,), (trees.tangent(flat, u),))[1].astype(jnp.float32)
    return c, jnp.zeros([0], jnp.float32)

  return jvp, None


def probe(
  loss: Loss,
  flat: trees.Flat,
  key: jax.Array,
  options: ZerothOrderOptions,
  *,
  base: jax.Array | None = None,
  prior: Guide | None = None,
) -> ProbeResult:
  """Probes ``options.num_directions`` directions drawn from ``jax.random.split(key, m)``.

  ``loss`` returns a float32 scalar. Exactly ``options.queries`` evaluations of it at run time
  (one fewer for the forward scheme when ``base``, the float32 ``L(x)``, is given). With
  ``prior``, direction ``i`` is :func:`guided_direction` ``(i, keys[i])``: the prior first, the
  others orthogonal to it; without a present prior the same directions as unguided.
  """
  m, chunk = options.num_directions, options.chunk
  keys = jax.random.split(key, m)
  one, base = _one_direction(loss, flat, options, base)
  xs: jax.Array | tuple[jax.Array, jax.Array]
  if prior is None:
    xs = keys
    draw = lambda k: draw_direction(k, flat, options.distribution)  # noqa: E731
  else:
    xs = (jnp.arange(m), keys)
    draw = lambda x: guided_direction(x[0], x[1], flat, options.distribution, prior)  # noqa: E731

  def single(carry: list[jax.Array], x: Any) -> tuple[list[jax.Array], tuple[jax.Array, jax.Array]]:
    u = draw(x)
    c, ls = one(u)
    return [acc + c * ui for acc, ui in zip(carry, u, strict=True)], (c, ls)

  def batched(
    carry: list[jax.Array], x: Any
  ) -> tuple[list[jax.Array], tuple[jax.Array, jax.Array]]:
    us = jax.vmap(draw)(x)
    cs, ls = jax.vmap(one)(us)
    new = [acc + jnp.tensordot(cs, ui, axes=1) for acc, ui in zip(carry, us, strict=True)]
    return new, (cs, ls)

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  if chunk == 1:
    total, (coefficients, losses) = jax.lax.scan(single, zeros, xs)
    return ProbeResult(total, coefficients, losses, base)
  num_full, remainder = divmod(m, chunk)
  full = jax.tree.map(lambda a: a[: num_full * chunk].reshape((num_full, chunk) + a.shape[1:]), xs)
  total, (coefficients, losses) = jax.lax.scan(batched, zeros, full)
  coefficients = coefficients.reshape(-1)
  losses = losses.reshape((num_full * chunk,) + losses.shape[2:])
  if remainder:
    total, (c_rest, l_rest) = batched(total, jax.tree.map(lambda a: a[num_full * chunk :], xs))
    coefficients = jnp.concatenate([coefficients, c_rest])
    losses = jnp.concatenate([losses, l_rest])
  return ProbeResult(total, coefficients, losses, base)


# The operand of probe_dynamic's cond: (running sum, (direction index, its key)).
_DynamicCarry = tuple[list[jax.Array], tuple[jax.Array, jax.Array]]


def probe_dynamic(
  loss: Loss,
  flat: trees.Flat,
  key: jax.Array,
  options: ZerothOrderOptions,
  *,
  num_active: jax.Array,
  prior: Guide | None = None,
) -> tuple[list[jax.Array], jax.Array, jax.Array]:
  """Central probes of the first ``num_active`` (traced) of ``options.num_directions`` directions
  (the most; ``options.smoothing`` and ``options.distribution`` as in :func:`probe`).

  The loop has the fixed length ``max_directions`` (a changing count never retraces); directions
  ``i >= num_active`` are skipped by ``lax.cond``. One extra forward at ``theta`` gives each
  direction's second difference. With ``prior``, directions as in :func:`probe`. Returns
  ``(total, coefficients, second_differences)``.
  """
  max_directions, smoothing, distribution = (
    options.num_directions,
    options.smoothing,
    options.distribution,
  )
  base = loss(trees.unflatten(flat))
  keys = jax.random.split(key, max_directions)

  def active(carry: _DynamicCarry) -> tuple[list[jax.Array], jax.Array, jax.Array]:
    acc, (i, k) = carry
    if prior is None:
      u = draw_direction(k, flat, distribution)
    else:
      u = guided_direction(i, k, flat, distribution, prior)
    plus = loss(trees.shifted(flat, u, smoothing))
    minus = loss(trees.shifted(flat, u, -smoothing))
    c = (plus - minus) / (2.0 * smoothing)
    nu = (plus - 2.0 * base + minus) / (2.0 * smoothing)
    return [a + c * ui for a, ui in zip(acc, u, strict=True)], c, nu

  def skip(carry: _DynamicCarry) -> tuple[list[jax.Array], jax.Array, jax.Array]:
    return carry[0], jnp.float32(0.0), jnp.float32(0.0)

  def body(
    acc: list[jax.Array], xs: tuple[jax.Array, jax.Array]
  ) -> tuple[list[jax.Array], tuple[jax.Array, jax.Array]]:
    i, k = xs
    acc, c, nu = jax.lax.cond(i < num_active, active, skip, (acc, (i, k)))
    return acc, (c, nu)

  zeros = [jnp.zeros(jnp.shape(flat.leaves[i]), jnp.float32) for i in flat.active]
  total, (coefficients, second) = jax.lax.scan(body, zeros, (jnp.arange(max_directions), keys))
  return total, coefficients, second


def estimate(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  options: ZerothOrderOptions,
  *,
  has_aux: bool = False,
  weight_mask: PyTree | None = None,
  selection: list[bool] | None = None,
  weight_mask_counts: PyTree | None = None,
  prior: PyTree | None = None,
) -> tuple[PyTree, jax.Array]:
  """The random gradient estimate as a tree like ``params`` and its ``m`` coefficients; with
  ``prior`` (a float32 tree like ``params``) the guided estimate (see :func:`guided_direction`).

  Unchecked: the public :func:`zosam_jax.rge` validates; heads call this with checked inputs.
  """
  flat = trees.flatten(params, weight_mask, selection, weight_mask_counts)
  guided = None if prior is None else guide(flat, prior)
  result = probe(losses.scalar_loss(loss_fn, has_aux), flat, key, options, prior=guided)
  return trees.to_params(flat, result.total, 1.0 / options.num_directions), result.coefficients
