"""Sparse-training methods by name, for configs: ``get_method("rigl", sparsity=0.9, ...)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zosam_jax.sparse import dynamic, static
from zosam_jax.sparse.wrapper import SparseMethod

__all__ = ["get_method", "method_names", "register_method"]

_REGISTRY: dict[str, Callable[..., SparseMethod]] = {
  "lth": static.LTH,
  "snip": static.SNIP,
  "grasp": static.GraSP,
  "set": dynamic.SET,
  "dsr": dynamic.DSR,
  "rigl": dynamic.RigL,
  "mest": dynamic.MEST,
}


def method_names() -> tuple[str, ...]:
  """Names accepted by :func:`get_method`."""
  return tuple(_REGISTRY)


def _key(name: Any) -> Any:
  """Names are case-insensitive: ``"RigL"`` and ``"rigl"`` are one method."""
  return name.lower() if isinstance(name, str) else name


def get_method(name: str, **kwargs: Any) -> SparseMethod:
  """Builds the sparse method called ``name`` (any case) with its keyword arguments.

  Raises:
    ValueError: if ``name`` is not one of :func:`method_names`.
  """
  if _key(name) not in _REGISTRY:
    raise ValueError(f"`name` must be one of {method_names()}, got {name!r}.")
  return _REGISTRY[_key(name)](**kwargs)


def register_method(name: str, factory: Callable[..., SparseMethod]) -> None:
  """Adds a method to the registry under ``name`` (any case; listed in lower case).

  Raises:
    ValueError: if ``name`` is not a non-empty string, or is taken (in any case).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"`name` must be a non-empty string, got {name!r}.")
  if _key(name) in _REGISTRY:
    raise ValueError(f"`name` {name!r} is already registered.")
  _REGISTRY[_key(name)] = factory
