"""Weight gradients of kept output channels only: the backward pass of Sparse SAM's implicit form.

The explicit form differentiates the loss densely and multiplies the gradient by the perturbation
mask. For a channel mask, most of that work can be skipped: the weight gradient of a layer
``y = x W`` (or a convolution) is ``dW = x^T dy``, and its output channel ``c`` needs only
``dy[..., c]``. So for every kernel that keeps ``k`` of its ``C`` output channels the weight
gradient is computed as ``x^T dy[..., kept]``, a matmul (convolution) ``k / C`` the size; the input
gradient ``dx = dy W^T`` is still computed in full, since earlier layers need it.

Differentiating with respect to a gathered slice ``W[..., kept]`` does NOT do this: autodiff still
forms the dense ``dW`` and XLA gathers from it (``benchmarks/pattern_cost.py`` measures it). So the
loss function is traced to a jaxpr and evaluated again with every ``dot_general`` and
``conv_general_dilated`` whose kernel operand is a kept-channel leaf replaced by the same operation
under a ``jax.custom_vjp`` whose backward pass computes only the kept channels. This works for any
model written with ``lax.dot_general``/``lax.conv_general_dilated`` (Flax ``Dense``/``Conv``, plain
JAX), without changing it. A kernel is rewritten where it is the right-hand operand with its LAST
axis as the output feature (Flax's layout), ungrouped; every other use of a leaf is differentiated
as usual, so the result is always exact on the kept channels. Calls to ``jit``-ed functions are
inlined so kernels passed into them are found; other higher-order primitives (``scan``, ``cond``,
``remat``) are evaluated as they are, their kernels on the dense path.

For unstructured and N:M masks no such saving exists without sparse kernels: every entry of a
dense ``x^T dy`` costs the same, and picking scattered entries (a sampled dense-dense matmul) is no
XLA operation; the explicit form's dense gradient times the mask is what runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jex

DOT = "dot_general"
CONV = "conv_general_dilated"
INLINED = ("jit", "pjit", "closed_call", "core_call")
# What the kept-channel op saves for its backward pass: (x, w, kept indices).
_Residuals = tuple[jax.Array, jax.Array, jax.Array]


def _rewritable(name: str, params: dict[str, Any], kernel_ndim: int) -> int | None:
  """The output axis of the kernel's last axis if this op can be rewritten, else ``None``."""
  last = kernel_ndim - 1
  if name == DOT:
    (_, rhs_contract), (_, rhs_batch) = params["dimension_numbers"]
    if last in rhs_contract or last in rhs_batch:
      return None
    return -1  # rhs free dims come last in dot_general's output, the kernel's last one last
  if name == CONV:
    dims = params["dimension_numbers"]
    if params["feature_group_count"] != 1 or params["batch_group_count"] != 1:
      return None  # grouped channels are tied to groups of input channels
    if dims.rhs_spec[0] != last:
      return None
    return dims.out_spec[1]
  return None


def _sliced_weight_grad(
  primitive: jex.Primitive,
  params: dict[str, Any],
  x: jax.Array,
  w: jax.Array,
  kept: jax.Array,
  out_axis: int,
) -> jax.Array:
  """``primitive(x, w)`` whose backward pass computes ``dw`` only on the output channels
  ``kept`` (last axis of ``w``; zero elsewhere) and ``dx`` in full."""

  def apply(a: jax.Array, b: jax.Array) -> jax.Array:
    return primitive.bind(a, b, **params)

  @jax.custom_vjp
  def op(a: jax.Array, b: jax.Array, idx: jax.Array) -> jax.Array:
    return apply(a, b)

  def fwd(a: jax.Array, b: jax.Array, idx: jax.Array) -> tuple[jax.Array, _Residuals]:
    return apply(a, b), (a, b, idx)

  def bwd(res: _Residuals, ct: jax.Array) -> tuple[jax.Array, jax.Array, None]:
    a, b, idx = res
    (da,) = jax.vjp(lambda a_: apply(a_, b), a)[1](ct)
    b_kept = jnp.take(b, idx, axis=-1)
    ct_kept = jnp.take(ct, idx, axis=out_axis)
    (db_kept,) = jax.vjp(lambda b_: apply(a, b_), b_kept)[1](ct_kept)
    db = jnp.zeros_like(b).at[..., idx].set(db_kept.astype(b.dtype))
    return da, db, None

  op.defvjp(fwd, bwd)
  return op(x, w, kept)


def _evaluate(
  jaxpr: jex.Jaxpr, consts: Sequence[Any], args: Sequence[Any], kept: dict[Any, jax.Array]
) -> list[Any]:
  """Evaluates ``jaxpr``, rewriting the ops whose kernel operand is a variable in ``kept``."""
  env: dict[Any, Any] = {}

  def read(v: Any) -> Any:
    return v.val if isinstance(v, jex.Literal) else env[v]

  def tracked(v: Any) -> bool:
    return not isinstance(v, jex.Literal) and v in kept

  for v, x in zip(jaxpr.constvars, consts, strict=True):
    env[v] = x
  for v, x in zip(jaxpr.invars, args, strict=True):
    env[v] = x
  for eqn in jaxpr.eqns:
    invals = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    out_axis = None
    if name in (DOT, CONV) and tracked(eqn.invars[1]):
      out_axis = _rewritable(name, eqn.params, invals[1].ndim)
    outs: list[Any]
    if out_axis is not None:
      idx = kept[eqn.invars[1]]
      x, w = invals  # dot_general and conv_general_dilated take two operands
      outs = [_sliced_weight_grad(eqn.primitive, eqn.params, x, w, idx, out_axis)]
    elif name in INLINED and "jaxpr" in eqn.params and any(tracked(v) for v in eqn.invars):
      sub = eqn.params["jaxpr"]
      sub_jaxpr, sub_consts = (sub.jaxpr, sub.consts) if hasattr(sub, "consts") else (sub, ())
      sub_kept = {
        s: kept[v] for s, v in zip(sub_jaxpr.invars, eqn.invars, strict=True) if tracked(v)
      }
      outs = _evaluate(sub_jaxpr, sub_consts, invals, sub_kept)
    else:
      bind_params = eqn.primitive.get_bind_params(eqn.params)
      subfuns = ()
      if isinstance(bind_params, tuple):  # older JAX: (subfuns, params)
        subfuns, bind_params = bind_params
      outs = eqn.primitive.bind(*subfuns, *invals, **bind_params)
      if not eqn.primitive.multiple_results:
        outs = [outs]
    for v, x in zip(eqn.outvars, outs, strict=True):
      if not isinstance(v, jex.DropVar):
        env[v] = x
  return [read(v) for v in jaxpr.outvars]


def kept_channel_grad(
  loss: Callable[..., jax.Array],
  leaves: Sequence[jax.Array],
  kept: Sequence[jax.Array | None],
) -> list[jax.Array]:
  """Gradient of the scalar ``loss(*leaves)`` with the weight gradients of kept channels only.

  Args:
    loss: a function of the leaves returning a scalar.
    leaves: the arrays to differentiate with respect to.
    kept: per leaf, ``None`` (a dense gradient) or the int32 indices ``(k,)`` of its kept output
      channels (last axis); ``k`` is static.

  Returns:
    One gradient per leaf: exact everywhere for leaves without ``kept``; for the others exact on
    the kept channels, and on the other channels holding only the contributions of uses that were
    not rewritten: multiply by the channel mask.
  """
  closed = jax.make_jaxpr(loss)(*leaves)
  var_kept = {v: idx for v, idx in zip(closed.jaxpr.invars, kept, strict=True) if idx is not None}

  def rewritten(*args: jax.Array) -> jax.Array:
    return _evaluate(closed.jaxpr, closed.consts, args, var_kept)[0]

  grads = jax.grad(rewritten, argnums=tuple(range(len(leaves))))(*leaves)
  return list(grads)
