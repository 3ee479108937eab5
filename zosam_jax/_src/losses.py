"""Loss-function plumbing shared by every head: the ``(loss, aux)`` convention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any


def scalar_loss(loss_fn: Callable[[PyTree], Any], has_aux: bool) -> Callable[[PyTree], jax.Array]:
  """``params -> float32 loss``, dropping the aux of a ``(loss, aux)`` function."""

  def fn(p):
    out = loss_fn(p)
    return jnp.asarray(out[0] if has_aux else out, jnp.float32)

  return fn


def split_value_aux(out: Any, has_aux: bool) -> tuple[jax.Array, Any]:
  """``(float32 value, aux)`` of a loss output (aux is ``None`` without ``has_aux``)."""
  value, aux = out if has_aux else (out, None)
  return jnp.asarray(value, jnp.float32), aux


def require_loss_fn(name: str, loss_fn: Any, params: Any) -> None:
  """The error every head raises when ``update`` was not given ``params`` and ``loss_fn=``."""
  if loss_fn is None or params is None:
    raise ValueError(
      f"{name} needs params and the extra argument loss_fn=: "
      "tx.update(None, opt_state, params, loss_fn=loss_fn)."
    )
