"""Pytree arithmetic in float32, and parameters flattened onto the leaves directions live on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.typing import DTypeLike

from zosam_jax._src import validation
from zosam_jax._src.types import PyTree, TreeDef

TINY = 1e-12  # Added to norms before dividing: a zero direction gives zero, never NaN.


# ----------------------------------------------------------------------------- whole trees


def add(params: PyTree, delta: PyTree) -> PyTree:
  """``params + delta`` computed in float32, cast back to each parameter's dtype."""
  return jax.tree.map(lambda p, d: (p.astype(jnp.float32) + d).astype(p.dtype), params, delta)


def vdot(a: PyTree, b: PyTree) -> jax.Array:
  """``<a, b>`` over all leaves, in float32."""
  # cast: sum() is typed "| Literal[0]", the int 0 an empty tree gives (a scalar to JAX).
  return cast(
    jax.Array,
    sum(
      jnp.vdot(x.astype(jnp.float32), y.astype(jnp.float32))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    ),
  )


def to_float32(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def masked(tree: PyTree, mask: PyTree | None) -> PyTree:
  """``tree * mask`` in float32 (just float32 when ``mask`` is None)."""
  tree = to_float32(tree)
  if mask is None:
    return tree
  return jax.tree.map(lambda x, m: x * jnp.asarray(m, jnp.float32), tree, mask)


def add_scaled(params: PyTree, direction: PyTree, scale: jax.Array | float) -> PyTree:
  """``params + scale * direction`` computed in float32, cast back to each leaf's dtype."""
  return jax.tree.map(
    lambda p, d: (jnp.asarray(p, jnp.float32) + scale * d).astype(jnp.result_type(p)),
    params,
    direction,
  )


def flat_view(
  params: PyTree, mask: PyTree | None
) -> tuple[int, Callable[[jax.Array], PyTree], jax.Array | None]:
  """``(D, unravel, flat_mask)``: the size of the flattened float32 parameters, the map from a
  flat vector back to a float32 tree like them, and the flat float32 mask (None when dense)."""
  flat, unravel = ravel_pytree(to_float32(params))
  flat_mask = None if mask is None else ravel_pytree(to_float32(mask))[0]
  return flat.shape[0], unravel, flat_mask


def cast_like(tree: PyTree, params: PyTree) -> PyTree:
  """Each leaf of ``tree`` in the dtype of the matching parameter."""
  return jax.tree.map(lambda t, p: t.astype(p.dtype), tree, params)


def orthogonal(v: PyTree, onto: PyTree) -> PyTree:
  """``v - (<v, onto>/||onto||^2) onto`` in float32 (``v`` itself if ``onto`` is zero)."""
  coef = vdot(v, onto) / (vdot(onto, onto) + TINY)
  return jax.tree.map(lambda a, b: a.astype(jnp.float32) - coef * b.astype(jnp.float32), v, onto)


# ----------------------------------------------------------------------------- active leaves


class Flat(NamedTuple):
  """Parameters as a flat list, with the indices of the leaves that directions live on."""

  leaves: list[jax.Array]
  treedef: TreeDef
  active: tuple[int, ...]
  masks: tuple[jax.Array | None, ...]  # one per active leaf, float32 0/1 or None (dense)
  # With static mask counts: the flat positions of each mask's ones (None: draw densely).
  positions: tuple[jax.Array | None, ...] = ()


def _mask_counts(
  weight_mask_counts: PyTree, weight_mask: PyTree | None, params: PyTree
) -> list[int]:
  if weight_mask is None:
    raise ValueError(
      "weight_mask_counts needs weight_mask: it gives the number of ones of each mask leaf."
    )
  counts = jax.tree.leaves(weight_mask_counts)
  sizes = [int(jnp.size(p)) for p in jax.tree.leaves(params)]
  if len(counts) != len(sizes):
    raise ValueError(
      f"weight_mask_counts must have one int per parameter leaf ({len(sizes)}), got {len(counts)}."
    )
  for c, n in zip(counts, sizes, strict=True):
    if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= n:
      raise ValueError(
        f"weight_mask_counts leaves must be static Python ints in [0, leaf size]; got {c!r} "
        f"for a leaf of size {n}."
      )
  return counts


def flatten(
  params: PyTree,
  weight_mask: PyTree | None = None,
  selection: Sequence[bool] | None = None,
  weight_mask_counts: PyTree | None = None,
) -> Flat:
  """``params`` flattened, directions to live on the ``selection`` leaves where ``weight_mask``
  is 1 (with ``weight_mask_counts``: only those positions are ever drawn)."""
  leaves, treedef = jax.tree.flatten(params)
  if selection is None:
    selection = validation.floating_leaves(params)
  active = tuple(i for i, on in enumerate(selection) if on)
  mask_leaves: list[Any] = (
    [None] * len(leaves) if weight_mask is None else jax.tree.leaves(weight_mask)
  )
  masks = tuple(
    None if mask_leaves[i] is None else jnp.asarray(mask_leaves[i], jnp.float32) for i in active
  )
  positions: tuple[jax.Array | None, ...] = tuple(None for _ in active)
  if weight_mask_counts is not None:
    counts = _mask_counts(weight_mask_counts, weight_mask, params)
    # Found once per call, outside the probe loop; a dense leaf (count == size) stays dense.
    positions = tuple(
      None
      if counts[i] == jnp.size(leaves[i])
      else jnp.nonzero(jnp.ravel(mask_leaves[i]) != 0, size=counts[i], fill_value=0)[0]
      for i in active
    )
  return Flat(leaves, treedef, active, masks, positions)


def unflatten(flat: Flat) -> PyTree:
  return jax.tree.unflatten(flat.treedef, flat.leaves)


def to_params(
  flat: Flat,
  parts: Sequence[jax.Array],
  scale: float | jax.Array = 1.0,
  dtype: DTypeLike | None = None,
) -> PyTree:
  """``scale * parts`` on the active leaves and zeros elsewhere, as a tree like the parameters,
  in ``dtype`` (default: each parameter's own dtype)."""
  out = [jnp.zeros(jnp.shape(p), dtype or jnp.result_type(p)) for p in flat.leaves]
  for j, i in enumerate(flat.active):
    out[i] = (parts[j] * scale).astype(dtype or flat.leaves[i].dtype)
  return jax.tree.unflatten(flat.treedef, out)


def shifted_leaves(
  flat: Flat, direction: Sequence[jax.Array], scale: float | jax.Array
) -> list[jax.Array]:
  """The leaves of ``theta + scale * u``, cast back to each parameter's dtype."""
  leaves = list(flat.leaves)
  for j, i in enumerate(flat.active):
    p = leaves[i]
    leaves[i] = (p.astype(jnp.float32) + scale * direction[j]).astype(p.dtype)
  return leaves


def shifted(flat: Flat, direction: Sequence[jax.Array], scale: float | jax.Array) -> PyTree:
  """``theta + scale * u`` as a tree like the parameters."""
  return jax.tree.unflatten(flat.treedef, shifted_leaves(flat, direction, scale))


def tangent(flat: Flat, direction: Sequence[jax.Array]) -> PyTree:
  """The direction as a full tangent tree for ``jax.jvp`` (zeros on inactive leaves)."""
  tangents = []
  for p in flat.leaves:
    if jnp.issubdtype(jnp.result_type(p), jnp.inexact):
      tangents.append(jnp.zeros_like(p))
    else:
      tangents.append(jnp.zeros(jnp.shape(p), jax.dtypes.float0))
  for j, i in enumerate(flat.active):
    tangents[i] = direction[j].astype(flat.leaves[i].dtype)
  return jax.tree.unflatten(flat.treedef, tangents)


def norm(parts: Sequence[jax.Array]) -> jax.Array:
  return jnp.sqrt(sum(jnp.sum(jnp.square(p)) for p in parts) + 0.0)


def safe_divide(parts: Sequence[jax.Array], scale: jax.Array) -> list[jax.Array]:
  """``parts / scale``, and exactly zero where ``scale`` is zero (never NaN)."""
  ok = scale > TINY
  inv = jnp.where(ok, 1.0 / jnp.where(ok, scale, 1.0), 0.0)
  return [p * inv for p in parts]
