"""SAM's perturbation, and the ascent directions it can be built from (the exact pass at
``theta + eps`` that every SAM-family step ends with is ``heads.StepInputs.exact_pass``)."""

from __future__ import annotations

from typing import get_args

import jax
import jax.numpy as jnp

from zosam_jax._src import losses, probing, trees, validation
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import Ascent, Guidance, LossAscent, LossFn, PyTree

# Where the perturbation's direction comes from: the exact gradient at theta (SAM), a random
# gradient estimate (ZO-SAM), or a Gaussian direction that ignores the loss (the control).
ASCENTS: tuple[Ascent, ...] = get_args(Ascent)
# Those that read the loss (all but the random control): the ascents of sparse_sam, looksam, esam.
LOSS_ASCENTS: tuple[LossAscent, ...] = get_args(LossAscent)

# What a zeroth-order ascent may be guided by (None: nothing, the plain random estimate).
GUIDANCES: tuple[Guidance, ...] = get_args(Guidance)


def check_guidance(guidance: Guidance | None, ascent: Ascent) -> None:
  """``guidance`` is None or one of :data:`GUIDANCES`, and only with a zeroth-order ascent."""
  validation.check_choice("guidance", guidance, (None,) + GUIDANCES)
  if guidance is not None and ascent != "zeroth_order":
    raise ValueError(
      f"guidance must be None with ascent={ascent!r} (it aims zeroth-order directions), "
      f"got {guidance!r}; use ascent='zeroth_order'."
    )


def initial_prior(params: PyTree, guidance: Guidance | None) -> PyTree | None:
  """The prior a guided head starts from: zeros (float32, like ``params``), which the probe loop
  reads as "no prior yet"; ``None`` when unguided (the state then holds no extra tree)."""
  if guidance is None:
    return None
  return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)


def next_prior(
  guidance: Guidance | None,
  grads: PyTree,
  *,
  selection: list[bool],
  weight_mask: PyTree | None = None,
) -> PyTree | None:
  """The state's next ``prior``: ``None`` without guidance, else :func:`prior_from_gradient`."""
  if guidance is None:
    return None
  return prior_from_gradient(grads, selection=selection, weight_mask=weight_mask)


def prior_from_gradient(
  grads: PyTree, *, selection: list[bool], weight_mask: PyTree | None = None
) -> PyTree:
  """The exact gradient kept as the next step's prior: float32, restricted to ``weight_mask`` on
  the selected leaves, zero on the others (directions never live there)."""
  g_leaves, treedef = jax.tree.flatten(grads)
  w_leaves = [None] * len(g_leaves) if weight_mask is None else jax.tree.leaves(weight_mask)
  out = []
  for g, w, on in zip(g_leaves, w_leaves, selection, strict=True):
    g = jnp.asarray(g, jnp.float32)
    if not on:
      out.append(jnp.zeros(jnp.shape(g), jnp.float32))
    else:
      out.append(g if w is None else g * jnp.asarray(w, jnp.float32))
  return jax.tree.unflatten(treedef, out)


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


def ascent_direction(
  kind: Ascent,
  zeroth_order: ZerothOrderOptions | None,
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array | None,
  *,
  selection: list[bool],
  has_aux: bool,
  weight_mask: PyTree | None = None,
  weight_mask_counts: PyTree | None = None,
  prior: PyTree | None = None,
) -> PyTree:
  """The direction ``g`` the perturbation is built from, for one of :data:`ASCENTS`; a
  zeroth-order ascent is guided by ``prior`` when given (see ``probing.guided_direction``)."""
  if kind == "exact":
    return jax.grad(losses.scalar_loss(loss_fn, has_aux))(params)
  # The exact ascent needs neither options nor a key (``sam_gradient`` passes None for both).
  assert key is not None, f"ascent={kind!r} draws from a key"
  if kind == "random":
    flat = trees.flatten(params, weight_mask, selection, weight_mask_counts)
    return trees.to_params(flat, probing.draw_direction(key, flat, "gaussian"), dtype=jnp.float32)
  assert zeroth_order is not None, "a zeroth-order ascent needs its options"
  estimate, _ = probing.estimate(
    loss_fn,
    params,
    key,
    zeroth_order,
    has_aux=has_aux,
    weight_mask=weight_mask,
    selection=selection,
    weight_mask_counts=weight_mask_counts,
    prior=prior,
  )
  return estimate
