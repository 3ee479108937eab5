"""Element-wise sparsity masks as pytrees, and the choice of prunable leaves.

Two kinds of masks appear in sparse training and this module keeps them apart:

* a *leaf mask* (``optax.masked``-style): a pytree of Python/NumPy bools, one per
  parameter leaf, saying which leaves may be pruned at all (the "prunable" leaves);
* a *weight mask*: a pytree of boolean arrays shaped like the parameters, ``True``
  on active weights and ``False`` on pruned ones. Non-prunable leaves carry an
  all-``True`` array so that the weight mask always has the structure of the
  parameters and can be handed to any transform (``weight_mask=`` of the
  sharpness-aware heads).

All selections by score are *exact*: they rank entries by index (``lax.top_k`` or
a stable ``argsort``) so that ties can never change the number of kept weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from zosam_jax._src import groups, validation
from zosam_jax._src.types import LeafSelection, PyTree

# The one exact top-k of the library (Sparse SAM's masks use it too).
keep_top_k = groups.keep_top_k

__all__ = [
  "count_active",
  "default_prunable",
  "dense_mask",
  "leaf_paths",
  "prunable_leaves",
  "select_highest",
  "select_lowest",
  "keep_top_k",
  "validate_mask",
]


def leaf_paths(params: PyTree) -> list[str]:
  """Names of the leaves of ``params`` in flatten order, ``"a/b/kernel"`` style.

  Args:
    params: any pytree (dict keys, attribute names and sequence indices make the names).

  Returns:
    One ``/``-joined path per leaf, in ``jax.tree`` flatten order.
  """
  flat, _ = jax.tree.flatten_with_path(params)
  names = []
  for path, _ in flat:
    parts = []
    for entry in path:
      for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
          parts.append(str(getattr(entry, attr)))
          break
      else:
        parts.append(str(entry))
    names.append("/".join(parts))
  return names


def default_prunable(params: PyTree) -> PyTree:
  """Default leaf mask: leaves with ``ndim >= 2`` (dense and conv kernels).

  Biases, BatchNorm/LayerNorm scales and offsets (``ndim <= 1``) are kept dense.

  Args:
    params: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).

  Returns:
    A pytree of Python bools with the structure of ``params``.
  """
  return jax.tree.map(lambda p: bool(np.ndim(p) >= 2), params)


def prunable_leaves(
  params: PyTree,
  prunable: LeafSelection = None,
  *,
  first_layer_dense: bool = False,
  last_layer_dense: bool = False,
) -> PyTree:
  """Resolves which parameter leaves a sparse method may prune.

  Args:
    params: the parameter pytree (arrays or ``jax.ShapeDtypeStruct``).
    prunable: ``None`` for :func:`default_prunable` (kernels with ``ndim >= 2``),
      an ``optax.masked``-style pytree of bools with the structure of ``params``,
      or a callable ``params -> bool pytree``.
    first_layer_dense: keep the first prunable leaf (in flatten order) dense.
    last_layer_dense: keep the last prunable leaf (in flatten order) dense.

  "First" and "last" follow ``jax.tree`` flatten order, which for Flax
  dicts is the alphabetical order of module names (``Conv_0`` < ``Dense_0`` <
  ``ResBlock_0``). Check with :func:`leaf_paths` and pass an explicit bool
  pytree or callable when the order does not match the network's layer order.

  Returns:
    A pytree of Python bools with the structure of ``params``.
  """
  flags = validation.resolve_leaf_selection(
    "prunable", prunable, params, default=lambda p: jax.tree.leaves(default_prunable(p))
  )
  on = [i for i, f in enumerate(flags) if f]
  if on and first_layer_dense:
    flags[on[0]] = False
  if on and last_layer_dense:
    flags[on[-1]] = False
  return jax.tree.unflatten(jax.tree.structure(params), flags)


def dense_mask(params: PyTree) -> PyTree:
  """All-``True`` weight mask shaped like ``params``.

  Args:
    params: the parameter pytree.

  Returns:
    A pytree of bool arrays, all ``True``, shaped like ``params``.
  """
  return jax.tree.map(lambda p: jnp.ones(jnp.shape(p), dtype=jnp.bool_), params)


def validate_mask(mask: PyTree, params: PyTree, argname: str = "mask") -> None:
  """Raises ``ValueError`` unless ``mask`` has the structure and shapes of ``params``.

  Args:
    mask: the weight mask to check.
    params: the parameter pytree it must match.
    argname: the name the error message gives ``mask`` (default ``"mask"``).
  """
  validation.check_mask_like(argname, mask, params)


def count_active(mask: PyTree) -> jax.Array:
  """Total number of active (``True``/nonzero) entries of a weight mask.

  Args:
    mask: a pytree of bool (or 0/1) arrays.

  Returns:
    An integer scalar array (a traced one under ``jit``).
  """
  leaves = jax.tree.leaves(mask)
  # cast: sum() is typed "| Literal[0]", the int 0 of an empty mask (a scalar to JAX).
  return cast(jax.Array, sum(jnp.count_nonzero(m) for m in leaves))


def select_lowest(scores: jax.Array, eligible: jax.Array, count: jax.Array | int) -> jax.Array:
  """Exactly ``min(count, #eligible)`` eligible entries with the lowest scores.

  ``count`` may be a traced integer (dynamic drop/grow counts under ``jit``).
  Ineligible entries are ranked after every eligible one; ties break by index.
  NaN scores rank last among the eligible entries. Scores compare as the backend compares
  floats (XLA:CPU treats subnormals as zero). No sort (see ``_src/groups.py``).

  Args:
    scores: a float array.
    eligible: a bool array shaped like ``scores``; only its ``True`` entries can be selected.
    count: how many to select (a Python int or a traced integer scalar).

  Returns:
    A bool array shaped like ``scores``.
  """
  return groups.select_lowest(scores, eligible, count)


def select_highest(scores: jax.Array, eligible: jax.Array, count: jax.Array | int) -> jax.Array:
  """Exactly ``min(count, #eligible)`` eligible entries with the highest scores.

  The mirror of :func:`select_lowest` (ties by index, ``count`` may be traced).

  Args:
    scores: a float array.
    eligible: a bool array shaped like ``scores``; only its ``True`` entries can be selected.
    count: how many to select (a Python int or a traced integer scalar).

  Returns:
    A bool array shaped like ``scores``.
  """
  return groups.select_highest(scores, eligible, count)


def split_like(flat: jax.Array, leaves: Sequence[Any]) -> list[jax.Array]:
  """Splits a 1-D array into pieces shaped like ``leaves`` (in order)."""
  return groups.split_like(flat, leaves)


def uniform_like(key: jax.Array, leaves: Sequence[Any], flags: Sequence[bool]) -> list[Any]:
  """Uniform [0, 1) draws shaped like the flagged ``leaves`` (``None`` elsewhere).

  One draw over the concatenation (cheaper to compile than one draw per leaf).
  """
  chosen = [x for x, f in zip(leaves, flags, strict=True) if f]
  total = sum(int(np.prod(np.shape(x))) for x in chosen)
  pieces = iter(split_like(jax.random.uniform(key, (total,)), chosen))
  return [next(pieces) if f else None for f in flags]
