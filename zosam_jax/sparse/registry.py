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
  """Names accepted by :func:`get_method`.

  Returns:
    The registered names in lower case, in registration order (the seven built-in methods
    first: ``lth``, ``snip``, ``grasp``, ``set``, ``dsr``, ``rigl``, ``mest``).
  """
  return tuple(_REGISTRY)


def _key(name: Any) -> Any:
  """Names are case-insensitive: ``"RigL"`` and ``"rigl"`` are one method."""
  return name.lower() if isinstance(name, str) else name


def get_method(name: str, **kwargs: Any) -> SparseMethod:
  """Builds the sparse method called ``name`` (any case) with its keyword arguments.

  Args:
    name: a registered name (see :func:`method_names`), in any case.
    **kwargs: the method's fields (``sparsity=``, ``end_step=``, ...).

  Returns:
    The :class:`~zosam_jax.sparse.SparseMethod`, e.g. ``get_method("rigl", sparsity=0.9,
    end_step=1000)`` is ``RigL(sparsity=0.9, end_step=1000)``.

  Raises:
    ValueError: if ``name`` is not one of :func:`method_names`.
  """
  if _key(name) not in _REGISTRY:
    raise ValueError(f"`name` must be one of {method_names()}, got {name!r}.")
  return _REGISTRY[_key(name)](**kwargs)


def register_method(name: str, factory: Callable[..., SparseMethod]) -> None:
  """Adds a method to the registry under ``name`` (any case; listed in lower case).

  Args:
    name: a non-empty string not yet registered (in any case).
    factory: ``**kwargs -> SparseMethod``, usually the method's class.

  Raises:
    ValueError: if ``name`` is not a non-empty string, or is taken (in any case).
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"`name` must be a non-empty string, got {name!r}.")
  if _key(name) in _REGISTRY:
    raise ValueError(f"`name` {name!r} is already registered.")
  _REGISTRY[_key(name)] = factory
