"""Argument checks shared by every factory and pure function.

One message style: ``"<argument> must be <what is allowed>, got <value>."``. A bad configuration
fails at construction (or at the first trace, for checks that need the parameter tree) rather than
deep inside a compiled step.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, get_args

import jax
import jax.numpy as jnp

from zosam_jax._src.types import DirectionDistribution, LeafSelection, PyTree, Scheme, TreeDef

DIRECTION_DISTRIBUTIONS: tuple[DirectionDistribution, ...] = get_args(DirectionDistribution)
SCHEMES: tuple[Scheme, ...] = get_args(Scheme)


def _is_number(value: Any) -> bool:
  return not isinstance(value, bool) and isinstance(value, numbers.Real)


def check_choice(name: str, value: Any, allowed: tuple[str | None, ...]) -> None:
  if value not in allowed:
    raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}.")


def check_bool(name: str, value: Any) -> None:
  if not isinstance(value, bool):
    raise ValueError(f"{name} must be True or False, got {value!r}.")


def check_nonnegative(name: str, value: Any) -> None:
  if not (_is_number(value) and value >= 0 and math.isfinite(value)):
    raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")


def check_rho(name: str, rho: Any, adaptive_eta: float = 0.01) -> None:
  """A SAM radius and ASAM's ``adaptive_eta``: finite and >= 0."""
  check_nonnegative(name, rho)
  check_nonnegative("adaptive_eta", adaptive_eta)


def check_positive(name: str, value: Any) -> None:
  if not (_is_number(value) and value > 0 and math.isfinite(value)):
    raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")


def check_positive_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {value!r}.")


def check_int_at_least(name: str, value: Any, minimum: int, why: str = "") -> None:
  """Raises unless ``value`` is a static integer ``>= minimum`` (``why`` explains the bound)."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    suffix = f" ({why})" if why else ""
    raise ValueError(f"{name} must be an integer >= {minimum}{suffix}, got {value!r}.")


def check_floating(name: str, params: PyTree) -> None:
  """Every leaf of ``params`` is floating point (curvature needs differentiable leaves)."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise ValueError(
        f"{name} must have floating-point leaves only, got dtype {jnp.result_type(leaf)} at "
        f"leaf {jax.tree_util.keystr(path)}; close over integer state in loss_fn instead."
      )


def check_int(name: str, value: Any) -> None:
  if isinstance(value, bool) or not isinstance(value, int):
    raise ValueError(f"{name} must be an integer, got {value!r}.")


def check_interval(
  name: str, value: Any, low: float, high: float, *, low_open: bool, high_open: bool
) -> None:
  """``value`` in the interval from ``low`` to ``high`` (open or closed at each end)."""
  ok = _is_number(value) and (low < value if low_open else low <= value)
  ok = ok and (value < high if high_open else value <= high)
  if not ok:
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ValueError(f"{name} must be in {interval}, got {value!r}.")


def check_sparsity(name: str, value: Any) -> None:
  check_interval(name, value, 0.0, 1.0, low_open=False, high_open=True)


def check_learning_rate(value: Any) -> None:
  if callable(value) or isinstance(value, jax.Array):
    return  # a schedule, or a traced value inside a jitted run
  check_positive("learning_rate", value)


def check_mask_like(name: str, mask: PyTree | None, params: PyTree) -> None:
  """Checks that ``mask`` has the tree structure and leaf shapes of ``params``."""
  if mask is None:
    return
  p_struct: TreeDef = jax.tree.structure(params)
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
        f"{name} leaf {jax.tree_util.keystr(leaf_path)} must have the parameter's shape "
        f"{jnp.shape(p)}, got {jnp.shape(m_leaf)}."
      )


def floating_leaves(params: PyTree) -> list[bool]:
  return [jnp.issubdtype(jnp.result_type(p), jnp.floating) for p in jax.tree.leaves(params)]


def resolve_leaf_selection(
  name: str,
  selection: LeafSelection,
  params: PyTree,
  default: Callable[[PyTree], list[bool]] = floating_leaves,
) -> list[bool]:
  """Turns an ``optax.masked``-style leaf selection into one bool per parameter leaf.

  The one resolver for every leaf choice (``perturb_leaves`` of the heads, ``prunable`` of the
  sparse methods). ``None`` means ``default(params)`` (every floating-point leaf unless told
  otherwise). A callable is called on ``params`` and must return a pytree of bools with the
  structure of ``params``; such a pytree is used as is. Integer leaves are never selected.
  """
  floating = floating_leaves(params)
  if selection is None:
    return [bool(c) and f for c, f in zip(default(params), floating, strict=True)]
  tree = selection(params) if callable(selection) else selection
  tree_struct: TreeDef = jax.tree.structure(tree)
  if tree_struct != jax.tree.structure(params):
    raise ValueError(
      f"{name} must be a pytree of bools with the structure of params (or a callable returning "
      f"one), got structure {jax.tree.structure(tree)} for params {jax.tree.structure(params)}."
    )
  chosen = jax.tree.leaves(tree)
  for c in chosen:
    if not isinstance(c, bool | jnp.bool_) and not (hasattr(c, "dtype") and c.shape == ()):
      raise ValueError(f"{name} leaves must be bools (one per parameter leaf), got {c!r}.")
  return [bool(c) and f for c, f in zip(chosen, floating, strict=True)]
