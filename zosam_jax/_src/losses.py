"""Loss-function plumbing shared by every head: the ``(loss, aux)`` convention."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from zosam_jax._src.types import LossFn, PyTree


def scalar_loss(loss_fn: LossFn, has_aux: bool) -> Callable[[PyTree], jax.Array]:
  """``params -> float32 loss``, dropping the aux of a ``(loss, aux)`` function."""

  def fn(p: PyTree) -> jax.Array:
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


# The heads that accept ``probe_loss_fn``: zeroth-order ascents, and the plain exact ascents of
# sharpness_aware (SAM's ascent on a sub-batch) and looksam (its refreshes' ascent).
PROBING_HEADS = (
  "sam, zo_sam / sharpness_aware(ascent='exact' or 'zeroth_order'), sparse_sam, looksam "
  "(either ascent), esam with ascent='zeroth_order', adaptive_zo_sam"
)


def probe_loss(loss_fn: LossFn, probe_loss_fn: LossFn | None) -> LossFn:
  """What the probes evaluate: ``probe_loss_fn`` when given, else ``loss_fn``."""
  if probe_loss_fn is None:
    return loss_fn
  if not callable(probe_loss_fn):
    raise ValueError(
      "probe_loss_fn must be None or a callable with loss_fn's signature (params -> loss, or "
      f"(loss, aux) with has_aux=True), got {probe_loss_fn!r}."
    )
  return probe_loss_fn


def refuse_probe_loss_fn(
  name: str, probe_loss_fn: Any, why: str = "which does not evaluate it"
) -> None:
  """The error of a head whose ascent cannot see a sub-batch when it is given
  ``probe_loss_fn``."""
  if probe_loss_fn is not None:
    raise ValueError(
      f"probe_loss_fn must be None for {name}, {why} (it is taken only by {PROBING_HEADS}), "
      f"got {probe_loss_fn!r}."
    )
