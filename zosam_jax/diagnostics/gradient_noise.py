"""Variance of a (stochastic) update direction across mini-batches at fixed parameters.

References:
  Ji et al., "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient Sparse Training",
  CVPR 2026 (arXiv 2603.13115).
  McCandlish et al., "An Empirical Model of Large-Batch Training", 2018 (the gradient noise scale
  ``tr Sigma / |G|^2``, of which ``relative`` is the mini-batch version).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from zosam_jax._src import trees, validation
from zosam_jax._src.types import PyTree

GradFn = Callable[[PyTree, Any], PyTree]
# Welford's running (count, mean, sum of squared deviations).
_Welford = tuple[Any, PyTree, Any]


def _welford_update(state: _Welford, grads: PyTree, weight_mask: PyTree | None) -> _Welford:
  """One step of Welford's update of (count, mean, sum of squared deviations) on pytrees."""
  count, mean, m2 = state
  g = trees.masked(grads, weight_mask)
  count = count + 1.0
  delta = jax.tree.map(jnp.subtract, g, mean)
  mean = jax.tree.map(lambda m, d: m + d / count, mean, delta)
  delta_after = jax.tree.map(jnp.subtract, g, mean)
  return count, mean, m2 + trees.vdot(delta, delta_after)


def gradient_variance(
  grad_fn: GradFn,
  params: PyTree,
  batches: Any,
  *,
  weight_mask: PyTree | None = None,
) -> dict[str, jax.Array]:
  r"""Spread of ``grad_fn(params, batch)`` over ``B`` batches, at fixed ``params``.

  With ``g_b = grad_fn(params, b)`` restricted to active coordinates (multiplied by ``mask``) and
  ``g_mean = 1/B sum_b g_b``:

  .. math::
     \mathrm{variance} = \frac{1}{B} \sum_{b=1}^B \| g_b - \bar g \|^2, \quad
     \mathrm{mean\_norm\_sq} = \| \bar g \|^2, \quad
     \mathrm{relative} = \mathrm{variance} / \mathrm{mean\_norm\_sq}

  (population form: divide by ``B``, not ``B - 1``; the total variance, i.e. the trace of the
  covariance of the direction across batches). ``relative`` is ``inf``/``nan`` when the mean is 0.
  Accumulated in float32 with Welford's single-pass update, so only the running mean and one
  gradient are held at a time and no cancellation occurs when the variance is small.

  Cost: ``B`` calls of ``grad_fn`` (one forward-backward each for a plain gradient; see
  :func:`head_gradient_fn` for SAM and ZO-SAM directions).

  Args:
    grad_fn: ``(params, batch) -> grads`` pytree like ``params`` (e.g. ``jax.grad(loss)`` or
      :func:`head_gradient_fn`).
    params: the fixed point ``theta``.
    batches: either a Python ``list`` of batches (each any pytree; shapes may differ between
      batches; the loop is unrolled at trace time, fine for tens of batches), or any other pytree
      whose leaves share a leading batch axis of size ``B`` (stacked batches, e.g. ``(x, y)`` with
      ``x`` of shape ``[B, batch_size, ...]``; evaluated by ``lax.scan``, one batch at a time). A
      ``tuple`` is a stacked pytree, not a sequence of batches: pass ``list(...)`` for that.
    weight_mask: optional 0/1 pytree like ``params``; only active coordinates are counted.

  Returns:
    ``{"variance", "mean_norm_sq", "relative"}``, float32 scalars.

  Raises:
    ValueError: empty ``batches``, stacked leaves without a common leading axis, or a bad
      ``mask``.

  References:
    Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115); McCandlish et al., 2018.
  """
  validation.check_mask_like("weight_mask", weight_mask, params)
  zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
  state = (jnp.float32(0.0), zeros, jnp.float32(0.0))
  if isinstance(batches, list):
    if not batches:
      raise ValueError("batches must hold at least one batch, got an empty list.")
    for batch in batches:
      state = _welford_update(state, grad_fn(params, batch), weight_mask)
  else:
    leaves = jax.tree.leaves(batches)
    sizes = {jnp.shape(x)[0] if jnp.ndim(x) else None for x in leaves}
    if not leaves or len(sizes) != 1 or None in sizes:
      raise ValueError(
        "batches must be a non-empty list of batches or a pytree whose leaves share a leading "
        f"batch axis; got leading sizes {sorted(map(str, sizes))}."
      )
    if sizes == {0}:
      raise ValueError("batches must hold at least one batch, got a leading axis of size 0.")

    def body(carry: _Welford, batch: Any) -> tuple[_Welford, None]:
      return _welford_update(carry, grad_fn(params, batch), weight_mask), None

    state, _ = jax.lax.scan(body, state, batches)
  count, mean, m2 = state
  variance = m2 / count
  mean_norm_sq = trees.vdot(mean, mean)
  return {
    "variance": variance,
    "mean_norm_sq": mean_norm_sq,
    "relative": variance / mean_norm_sq,
  }


def _key_data(key: jax.Array) -> jax.Array:
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    return jax.random.key_data(key)
  return key


def head_gradient_fn(
  tx: optax.GradientTransformationExtraArgs,
  loss_fn_of_batch: Callable[[PyTree, Any], Any],
  *,
  key: jax.Array | None = None,
  pass_batch: bool = False,
  **extra: Any,
) -> GradFn:
  """Turns a head of an optax chain into ``grad_fn(params, batch)`` for :func:`gradient_variance`.

  ``grad_fn(params, batch)`` returns what ``tx`` would hand the rest of the chain for that batch:
  ``tx.update(None, state, params, loss_fn=lambda p: loss_fn_of_batch(p, batch), **extra)[0]``,
  with ``state = tx.init(params)``, optionally with its ``key`` field(s) set to ``key``. The
  state is the same for every batch (it is initialised from ``params`` each call, a pure
  function of them, and the new state is discarded), so differences between batches come from
  the data alone: for ``zosam_jax.exact_gradient()`` the mini-batch gradient (SGD's direction),
  for ``zosam_jax.sam(rho)`` the gradient at the SAM-perturbed point, for
  ``zosam_jax.zo_sam(...)`` the gradient at the point perturbed along the zeroth-order estimate
  with the same directions for every batch (fixed key). Measured with :func:`gradient_variance`,
  this is the variance of the stochastic update direction across mini-batches at fixed
  parameters, the "gradient variance" whose reduction the ZO-SAM paper reports for ZO-SAM against
  SGD in sparse training (we did not find a formula in the paper; this is the quantity its
  wording describes, measured the same way for every head).

  Pass the head alone, not a whole chain: a chain would return its final updates (learning rate,
  momentum) rather than the head's gradient. With ``key=None`` the head's own seeded initial key
  is used. Cost: one call of ``tx.update`` per batch (SGD one forward-backward, SAM two, ZO-SAM
  ``2m`` forwards plus one forward-backward).

  Args:
    tx: a head such as ``zosam_jax.exact_gradient``, ``sam``, ``zo_sam``, ``sparse_sam``, ``gsam``.
    loss_fn_of_batch: ``(params, batch) -> loss`` (or ``(loss, aux)`` if the head was built with
      ``has_aux=True``).
    key: optional PRNG key written into every ``key`` field of the initial state (typed or raw
      keys; the state stores raw ``uint32`` key data). Raises ``ValueError`` at the first call if
      the state has no ``key`` field.
    pass_batch: also pass ``batch=batch`` to ``tx.update`` (ESAM and SSAM-F heads need it).
    **extra: further keyword arguments of every ``tx.update`` call (e.g. ``weight_mask=``,
      ``per_example_loss_fn=``).

  Returns:
    ``grad_fn(params, batch) -> pytree like params``.

  References:
    Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115).
  """

  def grad_fn(params: PyTree, batch: Any) -> PyTree:
    state = tx.init(params)
    if key is not None:
      try:
        state = optax.tree_utils.tree_set(state, key=_key_data(key))
      except KeyError as err:
        raise ValueError(
          "key was given but the head's state has no 'key' field; pass key=None for heads that "
          "draw no random numbers."
        ) from err
    call_extra = dict(extra, batch=batch) if pass_batch else extra

    def loss_fn(p: PyTree) -> Any:
      return loss_fn_of_batch(p, batch)

    updates, _ = tx.update(None, state, params, loss_fn=loss_fn, **call_extra)
    return updates

  return grad_fn
