"""Shared helpers of the diagnostics: argument checks, flattening and masks.

Kept inside the package on purpose: the diagnostics import no underscore name from another
``zosam_jax`` module, so they can move or be vendored without dragging private helpers along.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

PyTree = Any


def check_int_at_least(name: str, value: Any, minimum: int, why: str = "") -> None:
  """Raises ``ValueError`` unless ``value`` is a static integer ``>= minimum``."""
  is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)
  if not is_int or value < minimum:
    suffix = f" ({why})" if why else ""
    raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}.")


def check_positive(name: str, value: Any) -> None:
  if not value > 0:  # also rejects NaN
    raise ValueError(f"{name} must be > 0, got {value!r}.")


def check_mask(mask: PyTree | None, params: PyTree, name: str = "mask") -> None:
  """Raises ``ValueError`` unless ``mask`` is None or has the tree structure and leaf shapes of
  ``params``."""
  if mask is None:
    return
  p_struct = jax.tree.structure(params)
  m_struct = jax.tree.structure(mask)
  if p_struct != m_struct:
    raise ValueError(
      f"{name} must be None or a 0/1 pytree with the tree structure of params; got {m_struct} "
      f"for params {p_struct}."
    )
  paths = jax.tree_util.tree_flatten_with_path(mask)[0]
  for (path, m_leaf), p_leaf in zip(paths, jax.tree.leaves(params), strict=True):
    if jnp.shape(m_leaf) != jnp.shape(p_leaf):
      raise ValueError(
        f"{name} leaf {jax.tree_util.keystr(path)} has shape {jnp.shape(m_leaf)}, but the "
        f"parameter has shape {jnp.shape(p_leaf)}; {name} must be shaped like params."
      )


def check_floating(params: PyTree) -> None:
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(
        f"params must have floating-point leaves only; leaf {jax.tree_util.keystr(path)} has "
        f"dtype {jnp.result_type(leaf)}. Close over integer state in loss_fn instead."
      )


def scalar_loss(loss_fn: Callable[..., Any], has_aux: bool) -> Callable[..., jax.Array]:
  """``loss_fn`` as a float32 scalar function (the aux output, if any, dropped)."""

  def fn(*args):
    out = loss_fn(*args)
    return jnp.asarray(out[0] if has_aux else out, jnp.float32)

  return fn


def to_float32(tree: PyTree) -> PyTree:
  return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)


def masked(tree: PyTree, mask: PyTree | None) -> PyTree:
  """``tree * mask`` in float32 (just float32 when ``mask`` is None)."""
  tree = to_float32(tree)
  if mask is None:
    return tree
  return jax.tree.map(lambda x, m: x * jnp.asarray(m, jnp.float32), tree, mask)


def vdot(a: PyTree, b: PyTree) -> jax.Array:
  """Float32 inner product of two pytrees with the same structure."""
  parts = jax.tree.map(
    lambda x, y: jnp.vdot(jnp.ravel(x).astype(jnp.float32), jnp.ravel(y).astype(jnp.float32)),
    a,
    b,
  )
  return sum(jax.tree.leaves(parts), jnp.float32(0.0))


def flat_setup(
  params: PyTree, mask: PyTree | None
) -> tuple[int, Callable[[jax.Array], PyTree], jax.Array | None]:
  """The flattened float32 view of ``params``: its size ``D``, ``unravel`` (flat vector -> float32
  pytree like params) and the flat float32 mask (None when dense)."""
  flat, unravel = ravel_pytree(to_float32(params))
  flat_mask = None if mask is None else ravel_pytree(to_float32(mask))[0]
  return flat.shape[0], unravel, flat_mask


def add_scaled(params: PyTree, direction: PyTree, scale: jax.Array | float) -> PyTree:
  """``params + scale * direction`` computed in float32, cast back to each leaf's dtype."""
  return jax.tree.map(
    lambda p, d: (jnp.asarray(p, jnp.float32) + scale * d).astype(jnp.result_type(p)),
    params,
    direction,
  )
