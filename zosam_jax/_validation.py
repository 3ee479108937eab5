"""Argument checks shared by every factory and pure function.

Each check raises a ``ValueError`` that names the argument and the allowed values, so a bad
configuration fails at construction (or at the first trace, for checks that need the parameter
tree) rather than deep inside a compiled step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

DISTRIBUTIONS = ("gaussian", "rademacher", "sphere")
SCHEMES = ("central", "forward", "jvp")


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}.")


def check_nonnegative(name: str, value: float) -> None:
  if not value >= 0:  # also rejects NaN
    raise ValueError(f"{name} must be >= 0, got {value!r}.")


def check_positive(name: str, value: float) -> None:
  if not value > 0:
    raise ValueError(f"{name} must be > 0, got {value!r}.")


def check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_sparsity(name: str, value: float) -> None:
  if not 0.0 <= value < 1.0:
    raise ValueError(f"{name} must be in [0, 1), got {value!r}.")


def check_estimator_args(
  num_directions: int,
  smoothing: float,
  distribution: str,
  scheme: str,
  probe_batch_size: int | None,
) -> None:
  check_positive_int("num_directions", num_directions)
  check_positive("smoothing", smoothing)
  check_choice("distribution", distribution, DISTRIBUTIONS)
  check_choice("scheme", scheme, SCHEMES)
  if probe_batch_size is not None:
    check_positive_int("probe_batch_size (or None for all directions at once)", probe_batch_size)


def check_mask_like(name: str, mask: Any, params: Any) -> None:
  """Checks that ``mask`` has the tree structure and leaf shapes of ``params``."""
  if mask is None:
    return
  p_struct = jax.tree.structure(params)
  m_struct = jax.tree.structure(mask)
  if p_struct != m_struct:
    raise ValueError(
      f"{name} must have the same tree structure as params; got {m_struct} for params {p_struct}."
    )
  for (leaf_path, m_leaf), p in zip(
    jax.tree_util.tree_flatten_with_path(mask)[0], jax.tree.leaves(params), strict=True
  ):
    if jnp.shape(m_leaf) != jnp.shape(p):
      raise ValueError(
        f"{name} leaf {jax.tree_util.keystr(leaf_path)} has shape {jnp.shape(m_leaf)}, "
        f"but the parameter has shape {jnp.shape(p)}."
      )


def resolve_leaf_selection(
  name: str, selection: Any | Callable[[Any], Any] | None, params: Any
) -> list[bool]:
  """Turns an ``optax.masked``-style leaf selection into one bool per parameter leaf.

  ``None`` selects every floating-point leaf. A callable is called on ``params`` and must return a
  pytree of Python bools with the structure of ``params``; a pytree of bools is used as is.
  Integer leaves are never selected: they cannot be perturbed.
  """
  leaves = jax.tree.leaves(params)
  floating = [jnp.issubdtype(jnp.result_type(p), jnp.floating) for p in leaves]
  if selection is None:
    return floating
  tree = selection(params) if callable(selection) else selection
  if jax.tree.structure(tree) != jax.tree.structure(params):
    raise ValueError(
      f"{name} must be a pytree of bools with the structure of params (or a callable returning "
      f"one); got structure {jax.tree.structure(tree)} for params {jax.tree.structure(params)}."
    )
  chosen = jax.tree.leaves(tree)
  for c in chosen:
    if not isinstance(c, bool | jnp.bool_) and not (hasattr(c, "dtype") and c.shape == ()):
      raise ValueError(f"{name} leaves must be Python bools (one per parameter leaf), got {c!r}.")
  return [bool(c) and f for c, f in zip(chosen, floating, strict=True)]
