"""The heads with Flax's own training states: linen's ``TrainState`` and NNX's ``nnx.Optimizer``.

A head replaces the gradient by one it computes itself from ``loss_fn=`` (see
:mod:`zosam_jax.sharpness`), so it cannot run through ``TrainState.apply_gradients(grads=...)``,
which calls ``tx.update(grads, opt_state, params)`` without extra arguments. The two helpers here
make the same step, ``tx.update(None, opt_state, params, loss_fn=loss_fn, **extra)`` followed by
``optax.apply_updates``, and hand back what the head measured (the library's state protocol: the
loss ``value`` of the head's exact-gradient pass and that pass's ``aux``):

* linen: ``state, loss, aux = apply_loss(state, loss_fn)`` with ``loss_fn(params)`` closing over
  the batch. With BatchNorm, ``loss_fn`` returns ``(loss, new_batch_stats)`` (or a tuple holding
  them), the head is built with ``has_aux=True``, and ``state.replace(batch_stats=...)`` takes the
  statistics of the pass whose gradient was applied.
* NNX: ``loss, aux = nnx_apply_loss(optimizer, model, loss)`` with ``loss(model)`` closing over
  the batch. :func:`nnx_loss_fn` rewrites it as a function of the parameter state (``nnx.split``
  / ``nnx.merge``); ``optimizer.update`` passes ``loss_fn=`` to the chain (it forwards keyword
  arguments to ``tx.update``); the model's other state (``nnx.BatchStat``, RNG counts) is then
  set to what the head's exact-gradient pass left, and the zeroth-order probes and SAM's ascent
  pass never touch it.

Every probe of one step calls the same closure, so it sees the same batch and the same dropout
mask (NNX: the same RNG state; it advances once per step).

This module needs ``flax`` (``pip install flax``); ``import zosam_jax`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from flax.nnx.training.optimizer import to_opt_state
from flax.training import train_state

from zosam_jax._src.types import LossFn, PyTree

__all__ = ["apply_loss", "nnx_apply_loss", "nnx_loss_fn"]


def _require_head(opt_state: PyTree, where: str) -> None:
  """The chain must hold a zosam_jax head (a state with the protocol's ``value`` field)."""
  missing = object()
  if optax.tree_utils.tree_get(opt_state, "value", default=missing) is missing:
    raise ValueError(
      f"{where} needs a chain headed by a zosam_jax head (zj.sam, zj.zo_sam, "
      "zj.exact_gradient, ...: a transform taking loss_fn=), whose state has the fields value "
      "and aux; this chain's state has no field value."
    )


def apply_loss(
  state: train_state.TrainState, loss_fn: LossFn, **extra: Any
) -> tuple[train_state.TrainState, jax.Array, Any]:
  """One step of ``state.tx`` from ``loss_fn``: the ``TrainState.apply_gradients`` of the heads.

  ``updates, opt_state = state.tx.update(None, state.opt_state, state.params, loss_fn=loss_fn,
  **extra)``; ``params = optax.apply_updates(state.params, updates)``; ``step`` grows by one.

  Args:
    state: a ``flax.training.train_state.TrainState`` (or subclass, e.g. with ``batch_stats``)
      whose ``tx`` is headed by a zosam_jax head.
    loss_fn: ``params -> loss``, or ``(loss, aux)`` for a head built with ``has_aux=True``.
    **extra: other extra arguments of the head (ESAM and SSAM-F: ``per_example_loss_fn=``,
      ``batch=``).

  Returns:
    ``(new_state, value, aux)``: the float32 loss and the aux of the head's exact-gradient pass
    (at ``theta + eps`` for the SAM family; ``aux`` is ``None`` without ``has_aux``).

  The head's ``aux`` is ``None`` after ``tx.init``, so the first compiled step sees another
  state structure than the next ones (``jax.jit`` compiles twice). For one structure from the
  start (``lax.scan`` over steps), give ``TrainState.create`` an ``opt_state`` whose aux is set:
  ``state.replace(opt_state=optax.tree_utils.tree_set(state.opt_state, aux=example_aux))``.
  """
  _require_head(state.opt_state, "apply_loss")
  updates, opt_state = state.tx.update(
    None, state.opt_state, state.params, loss_fn=loss_fn, **extra
  )
  new_state = state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
  )
  value = optax.tree_utils.tree_get(opt_state, "value")
  return new_state, value, optax.tree_utils.tree_get(opt_state, "aux")


def nnx_loss_fn(
  model: nnx.Module,
  loss: Callable[..., Any],
  *,
  wrt: Any = nnx.Param,
  has_aux: bool = False,
  graph: bool | None = None,
) -> Callable[[PyTree], tuple[jax.Array, tuple[PyTree, Any]]]:
  """``loss(model, *args)`` as a function of the parameter state, the form the heads call.

  The model is split once (``nnx.split(model, wrt, ...)``): ``loss_fn(params, *args)`` merges
  ``params`` (a pure ``nnx.State`` of arrays, as ``nnx.Optimizer.update`` passes it) with a
  copy of the rest of the state, calls ``loss(copy, *args)`` and returns
  ``(loss, (rest_after, aux))``: ``rest_after`` is the copy's non-``wrt`` state after the call
  (updated ``nnx.BatchStat``, advanced RNG counts), as pure arrays. ``model`` is never modified.
  With ``args`` it also gives ESAM's and SSAM-F's ``per_example_loss_fn(params, batch)``
  (``loss(model, batch) -> losses[B]``).

  Args:
    model: the NNX module.
    loss: ``(model, *args) -> loss`` (or ``(loss, aux)`` with ``has_aux=True``); the head's
      ``loss_fn`` takes no ``args`` and closes over the batch.
    wrt: the filter of the trained variables (the ``wrt`` of the ``nnx.Optimizer``).
    has_aux: whether ``loss`` returns ``(loss, aux)`` (``aux`` is ``None`` otherwise).
    graph: NNX graph mode of the split (the ``graph`` of the ``nnx.Optimizer``).

  Returns:
    ``loss_fn(params, *args) -> (loss, (rest_after, aux))``; the head must be built with
    ``has_aux=True``.
  """
  # Two filters, two states; flax annotates the states after the first as variadic.
  graphdef, _, *rests = nnx.split(model, wrt, ..., graph=graph)
  (rest,) = rests
  # Pure arrays: each call merges fresh Variables (those of `model` cannot be mutated under the
  # head's jax.grad / vmap traces), so every probe starts from the same state.
  rest = nnx.as_pure(rest)

  def loss_fn(params: PyTree, *args: Any) -> tuple[jax.Array, tuple[PyTree, Any]]:
    copy = nnx.merge(graphdef, params, rest)
    out = loss(copy, *args)
    value, aux = out if has_aux else (out, None)
    rest_after = nnx.as_pure(nnx.state(copy, nnx.Not(wrt), graph=graph))
    return value, (rest_after, aux)

  return loss_fn


def nnx_apply_loss(
  optimizer: nnx.Optimizer,
  model: nnx.Module,
  loss: Callable[[nnx.Module], Any],
  *,
  has_aux: bool = False,
  **extra: Any,
) -> tuple[jax.Array, Any]:
  """One step of ``optimizer`` from ``loss(model)``; the model is updated in place.

  Runs ``optimizer.update(model, None, loss_fn=nnx_loss_fn(model, loss, ...), **extra)``
  (``nnx.Optimizer.update`` forwards keyword arguments to ``tx.update``; the heads ignore the
  ``None`` gradient), then sets the model's non-parameter state (BatchNorm statistics, RNG
  counts) to what the head's exact-gradient pass left. Works eagerly and under ``nnx.jit``.

  Args:
    optimizer: an ``nnx.Optimizer`` whose ``tx`` is headed by a zosam_jax head built with
      ``has_aux=True`` (the aux carries the model's state back).
    model: the module ``optimizer`` was built for.
    loss: ``model -> loss`` (or ``(loss, aux)`` with ``has_aux=True``), closing over the batch.
    has_aux: whether ``loss`` returns ``(loss, aux)``.
    **extra: other extra arguments of the head. ESAM and SSAM-F take
      ``per_example_loss_fn=nnx_loss_fn(model, per_example_loss, has_aux=has_aux)`` (with
      ``per_example_loss(model, batch) -> losses[B]``, or ``(losses, aux)``) and ``batch=``.

  Returns:
    ``(value, aux)``: the float32 loss and ``loss``'s aux of the head's exact-gradient pass
    (``None`` without ``has_aux``).

  The first call fills the head's ``aux`` slot of ``optimizer.opt_state`` (``None`` after
  ``tx.init``) with zeros of the right structure, so under ``nnx.jit`` the first step compiles
  twice and every later one reuses the second program.
  """
  pure_state = nnx.as_pure(optimizer.opt_state)
  _require_head(pure_state, "nnx_apply_loss")
  loss_fn = nnx_loss_fn(model, loss, wrt=optimizer.wrt, has_aux=has_aux, graph=optimizer.graph)
  if optax.tree_utils.tree_get(pure_state, "aux") is None:
    # nnx.Optimizer writes the new opt_state into the old one's structure: the aux slot must
    # already hold arrays shaped like loss_fn's aux. The model's own state (RNG keys included)
    # is its current value; the user's aux starts as zeros.
    params = nnx.as_pure(nnx.state(model, optimizer.wrt, graph=optimizer.graph))
    try:  # Once, abstractly: a head built without has_aux fails here with a clear message.
      jax.eval_shape(
        lambda p, s: optimizer.tx.update(None, s, p, loss_fn=loss_fn, **extra), params, pure_state
      )
    except (TypeError, ValueError) as e:
      raise ValueError(
        "nnx_apply_loss: the chain's update failed on a loss_fn returning (loss, aux); build the "
        f"head with has_aux=True. The error was: {type(e).__name__}: {e}"
      ) from e
    user_aux = jax.eval_shape(loss_fn, params)[1][1]
    rest = nnx.as_pure(nnx.state(model, nnx.Not(optimizer.wrt), graph=optimizer.graph))
    aux = (rest, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), user_aux))
    optimizer.opt_state = nnx.data(to_opt_state(optax.tree_utils.tree_set(pure_state, aux=aux)))
  optimizer.update(model, None, loss_fn=loss_fn, **extra)
  new_state = nnx.as_pure(optimizer.opt_state)
  rest_after, aux = optax.tree_utils.tree_get(new_state, "aux")
  nnx.update(model, rest_after)
  return optax.tree_utils.tree_get(new_state, "value"), aux
