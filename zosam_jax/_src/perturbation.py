"""SAM's perturbation and the one exact pass at ``theta + eps`` that every SAM-family step ends
with; and the ascent directions the perturbation can be built from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from zosam_jax._src import losses, probing, trees
from zosam_jax._src.options import ZerothOrderOptions

PyTree = Any

# Where the perturbation's direction comes from: the exact gradient at theta (SAM), a random
# gradient estimate (ZO-SAM), or a Gaussian direction that ignores the loss (the control).
ASCENTS = ("exact", "zeroth_order", "random")


def perturbation(
  params: PyTree,
  ascent: PyTree,
  *,
  rho: float | jax.Array,
  selection: list[bool],
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  weight_mask: PyTree | None = None,
  perturbation_mask: PyTree | None = None,
) -> PyTree:
  """``eps`` for the ascent direction (float32 tree like ``params``; zero on unselected leaves).

  ``eps = rho g/(||g|| + tiny)``, ASAM ``rho T^2 g/||T g||`` with ``T = |theta| + eta``; ``g`` is
  restricted to ``weight_mask`` before normalising and ``perturbation_mask`` is applied after.
  """
  p_leaves, treedef = jax.tree.flatten(params)
  g_leaves = jax.tree.leaves(ascent)
  n = len(p_leaves)
  w_leaves = [None] * n if weight_mask is None else jax.tree.leaves(weight_mask)
  m_leaves = [None] * n if perturbation_mask is None else jax.tree.leaves(perturbation_mask)

  directions = {}
  for i in range(n):
    if not selection[i]:
      continue
    g = g_leaves[i].astype(jnp.float32)
    if w_leaves[i] is not None:
      g = g * jnp.asarray(w_leaves[i], jnp.float32)
    if adaptive:
      g = (jnp.abs(p_leaves[i].astype(jnp.float32)) + adaptive_eta) * g
    directions[i] = g
  scale = rho / (trees.norm(list(directions.values())) + trees.TINY)

  out = []
  for i in range(n):
    if i not in directions:
      out.append(jnp.zeros(jnp.shape(p_leaves[i]), jnp.float32))
      continue
    e = scale * directions[i]
    if adaptive:
      e = (jnp.abs(p_leaves[i].astype(jnp.float32)) + adaptive_eta) * e
    if m_leaves[i] is not None:
      e = e * jnp.asarray(m_leaves[i], jnp.float32)
    out.append(e)
  return jax.tree.unflatten(treedef, out)


def value_and_grad_at_perturbed(
  loss_fn: Callable, params: PyTree, ascent: PyTree, *, has_aux: bool, **perturbation_kwargs
):
  """The one exact forward-backward of a SAM-family step, at ``theta + eps(ascent)``."""
  eps = perturbation(params, ascent, **perturbation_kwargs)
  return jax.value_and_grad(loss_fn, has_aux=has_aux)(trees.add(params, eps))


def ascent_direction(
  kind: str,
  zeroth_order: ZerothOrderOptions,
  loss_fn: Callable,
  params: PyTree,
  key: jax.Array,
  *,
  selection: list[bool],
  has_aux: bool,
  weight_mask: PyTree | None = None,
  weight_mask_counts: PyTree | None = None,
) -> PyTree:
  """The direction ``g`` the perturbation is built from, for one of :data:`ASCENTS`."""
  if kind == "exact":
    return jax.grad(losses.scalar_loss(loss_fn, has_aux))(params)
  if kind == "random":
    flat = trees.flatten(params, weight_mask, selection, weight_mask_counts)
    return trees.to_params(flat, probing.draw_direction(key, flat, "gaussian"), dtype=jnp.float32)
  estimate, _ = probing.estimate(
    loss_fn,
    params,
    key,
    zeroth_order,
    has_aux=has_aux,
    weight_mask=weight_mask,
    selection=selection,
    weight_mask_counts=weight_mask_counts,
  )
  return estimate
