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


def get_method(name: str, **kwargs: Any) -> SparseMethod:
  """Builds the sparse method called ``name`` with its keyword arguments.

  Raises:
    ValueError: if ``name`` is not one of :func:`method_names`.
  """
  key = name.lower() if isinstance(name, str) else name
  if key not in _REGISTRY:
    raise ValueError(f"`name` must be one of {method_names()}, got {name!r}.")
  return _REGISTRY[key](**kwargs)


def register_method(name: str, factory: Callable[..., SparseMethod]) -> None:
  """Adds a method to the registry (raises ``ValueError`` if the name is taken)."""
  if name in _REGISTRY:
    raise ValueError(f"`name` {name!r} is already registered.")
  _REGISTRY[name] = factory
