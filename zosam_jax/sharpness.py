"""The SAM family as pure functions and as optax transforms that head a chain.

Sharpness-aware minimisation takes the gradient at a perturbed point::

  eps     = rho * g_hat / (||g_hat|| + tiny)            (SAM)
  eps     = rho * T^2 g_hat / (||T g_hat|| + tiny),  T = |theta| + eta   (adaptive, ASAM)
  eps     = eps (.) m                                    (Sparse SAM: a binary perturbation mask)
  update  = grad L(theta + eps)

``g_hat`` is the *ascent direction*: the exact gradient at ``theta`` (SAM, two forward-backward
passes) or a zeroth-order random gradient estimate (ZO-SAM: ``2m`` forward passes plus one
forward-backward). The update always uses the exact gradient at ``theta + eps``. The control
head :func:`random_perturbation` takes ``g_hat`` Gaussian, ignoring the loss: it costs what ZO-SAM
with one direction costs, less the two forwards, and tells whether the zeroth-order information
matters at all.

In sparse training (``weight_mask``), the ascent direction is restricted to active weights before
it is normalised, so pruned weights are never perturbed and ``||eps|| = rho`` holds on the active
subspace. A Sparse SAM perturbation mask is applied after normalisation, as in SSAM's objective
``f(theta + rho g/||g|| (.) m)``. A zero ascent direction gives ``eps = 0``, never NaN.

The transforms replace the incoming updates (which may be ``None``) by the gradient at
``theta + eps``; put them first in an ``optax.chain``::

  tx = optax.chain(zosam_jax.zo_sam(rho=0.05, num_directions=4, seed=0),
                   optax.sgd(0.05, momentum=0.9))
  updates, opt_state = tx.update(None, opt_state, params, loss_fn=loss_fn)

References:
  Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
  Generalization", ICLR 2021 (arXiv 2010.01412).
  Kwon, Kim, Park & Choi, "ASAM: Adaptive Sharpness-Aware Minimization for Scale-Invariant
  Learning of Deep Neural Networks", ICML 2021 (arXiv 2102.11600).
  Ji, Li, Deng, Afghah & Ma, "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient
  Sparse Training", CVPR 2026 (arXiv 2603.13115).
  Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation Approach",
  NeurIPS 2022 (arXiv 2210.05177).
  Bisla et al., "Low-Pass Filtering SGD for Recovering Flat Optima in the Deep Learning
  Optimization Landscape", AISTATS 2022 (random weight perturbation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import optax

from zosam_jax import perturbation_masks as pmasks
from zosam_jax._src import groups, heads, implicit, losses, options, validation
from zosam_jax._src import perturbation as perturb
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import (
  Ascent,
  Guidance,
  LeafSelection,
  LossAscent,
  LossFn,
  MaskForm,
  MaskMethod,
  Pattern,
  PyTree,
)
from zosam_jax._src.validation import check_rho

#: The values of :func:`sharpness_aware`'s ``ascent``.
ASCENTS = perturb.ASCENTS


# ----------------------------------------------------------------------------- pure functions


def perturbation(
  params: PyTree,
  ascent: PyTree,
  *,
  rho: float,
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  weight_mask: PyTree | None = None,
  perturbation_mask: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
) -> PyTree:
  """The SAM perturbation ``eps`` for the ascent direction ``ascent`` (see the module docstring).

  ``eps = rho g / ||g||`` with ``g = ascent`` restricted to the active weights of the selected
  leaves (ASAM: ``rho T^2 g / ||T g||``), then multiplied by ``perturbation_mask``. A zero
  direction gives ``eps = 0``.

  Args:
    params: ``theta``, the parameter pytree (for the shapes, and ASAM's ``T = |theta| + eta``).
    ascent: the ascent direction ``g``, a pytree like ``params`` (an exact gradient, a random
      gradient estimate, or any direction).
    rho: perturbation radius, ``>= 0``: ``||eps|| = rho`` over the active coordinates of the
      perturbed leaves (before a perturbation mask; ASAM's norm is ``||T^-1 eps||``).
    adaptive: ASAM's element-wise scaling of the ascent by ``T = |theta| + adaptive_eta``;
      ``False`` (default) is SAM's Euclidean ball.
    adaptive_eta: ASAM's ``eta >= 0`` (default 0.01), so that zero weights are perturbed too;
      read only with ``adaptive=True``.
    weight_mask: optional 0/1 pytree like ``params`` of active weights (sparse training):
      ``g`` is restricted to them before it is normalised, so pruned weights get ``eps = 0``.
      ``None``: every weight is active.
    perturbation_mask: optional 0/1 (or bool) pytree like ``params`` applied to ``eps`` after
      normalisation (Sparse SAM's mask); ``None``: no mask.
    perturb_leaves: which leaves are perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools shaped like ``params``, or a callable
      ``params -> such a pytree``. Integer leaves are never perturbed.

  Returns:
    ``eps``, a float32 pytree like ``params``; zero on unselected leaves and pruned weights.

  References:
    Foret et al., ICLR 2021 (arXiv 2010.01412), eq. 2; Kwon et al., ICML 2021
    (arXiv 2102.11600), for ``adaptive=True``.
  """
  validation.check_mask_like("weight_mask", weight_mask, params)
  validation.check_mask_like("perturbation_mask", perturbation_mask, params)
  return perturb.perturbation(
    params,
    ascent,
    rho=rho,
    selection=validation.resolve_leaf_selection("perturb_leaves", perturb_leaves, params),
    adaptive=adaptive,
    adaptive_eta=adaptive_eta,
    weight_mask=weight_mask,
    perturbation_mask=perturbation_mask,
  )


def _sam_family_gradient(
  kind: Ascent,
  zo: ZerothOrderOptions | None,
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array | None,
  *,
  rho: float,
  adaptive: bool,
  adaptive_eta: float,
  weight_mask: PyTree | None,
  perturbation_mask: PyTree | None,
  perturb_leaves: LeafSelection,
  has_aux: bool,
  probe_loss_fn: LossFn | None = None,
) -> tuple[Any, PyTree]:
  check_rho("rho", rho, adaptive_eta)
  validation.check_mask_like("weight_mask", weight_mask, params)
  validation.check_mask_like("perturbation_mask", perturbation_mask, params)
  selection = validation.resolve_leaf_selection("perturb_leaves", perturb_leaves, params)
  inputs = heads.StepInputs(
    params, loss_fn, selection, weight_mask, probe_loss_fn=probe_loss_fn, has_aux=has_aux
  )
  return inputs.exact_pass(
    inputs.ascent(kind, zo, key),
    rho=rho,
    adaptive=adaptive,
    adaptive_eta=adaptive_eta,
    perturbation_mask=perturbation_mask,
  )


def sam_gradient(
  loss_fn: LossFn,
  params: PyTree,
  *,
  rho: float,
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  weight_mask: PyTree | None = None,
  perturbation_mask: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
) -> tuple[Any, PyTree]:
  """SAM: the exact gradient at ``theta + eps``, ``eps`` from the exact gradient at ``theta``.

  Args:
    loss_fn: ``params -> loss`` (or ``(loss, aux)`` with ``has_aux=True``), closing over one
      batch; called twice (a forward-backward at ``theta``, one at ``theta + eps``).
    params: ``theta``, a pytree of arrays.
    rho: perturbation radius, ``>= 0`` (``0``: the plain gradient at ``theta``).
    adaptive: ASAM's element-wise ``|theta| + adaptive_eta`` scaling (default ``False``: SAM).
    adaptive_eta: ASAM's ``eta >= 0`` (default 0.01); read only with ``adaptive=True``.
    weight_mask: optional 0/1 pytree of active weights (sparse training): the perturbation lives
      on them. ``None``: all weights are active.
    perturbation_mask: optional 0/1 pytree applied to ``eps`` after normalisation (Sparse SAM);
      ``None``: no mask.
    perturb_leaves: which leaves are perturbed at all: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)`` (default ``False``).

  Returns:
    ``(value, grads)`` shaped like ``jax.value_and_grad(loss_fn, has_aux=has_aux)``. Both come from
    the SAME pass, the forward-backward at ``theta + eps``: ``value`` is the loss (and aux) at the
    perturbed point, ``grads`` the exact gradient there (dense, not multiplied by ``weight_mask``).

  References:
    Foret et al., ICLR 2021 (arXiv 2010.01412); Kwon et al., ICML 2021 (arXiv 2102.11600).
  """
  return _sam_family_gradient(
    "exact",
    None,
    loss_fn,
    params,
    None,
    rho=rho,
    adaptive=adaptive,
    adaptive_eta=adaptive_eta,
    weight_mask=weight_mask,
    perturbation_mask=perturbation_mask,
    perturb_leaves=perturb_leaves,
    has_aux=has_aux,
  )


def zo_sam_gradient(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  rho: float,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  weight_mask: PyTree | None = None,
  perturbation_mask: PyTree | None = None,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
  probe_loss_fn: LossFn | None = None,
) -> tuple[Any, PyTree]:
  """ZO-SAM: the exact gradient at ``theta + eps``, ``eps`` from a random gradient estimate.

  Cost: the estimator's forward passes (``2m`` for the central scheme) plus ONE forward-backward,
  against SAM's two forward-backwards. Directions are drawn from ``key`` on the active weights
  (``weight_mask``) of the selected leaves (``perturb_leaves``) only.

  Args:
    loss_fn: ``params -> loss`` (or ``(loss, aux)`` with ``has_aux=True``), closing over one
      batch (and one dropout key: both probes of a direction must see the same function).
    params: ``theta``, a pytree of arrays.
    key: a ``jax.random`` key for the directions.
    rho: perturbation radius, ``>= 0``.
    zeroth_order: the estimator's options, a :class:`~zosam_jax.ZerothOrderOptions`; ``None``:
      ``ZerothOrderOptions()`` (one Gaussian direction, central differences, smoothing 1e-3).
      The maths is :func:`zosam_jax.rge`'s.
    num_directions: short form that overrides ``zeroth_order.num_directions`` (``m >= 1``).
    smoothing: short form that overrides ``zeroth_order.smoothing`` (``delta > 0``).
    adaptive: ASAM's element-wise ``|theta| + adaptive_eta`` scaling of the estimate.
    adaptive_eta: ASAM's ``eta >= 0`` (default 0.01); read only with ``adaptive=True``.
    weight_mask: optional 0/1 pytree of active weights: directions are drawn, and the
      perturbation lives, on them only.
    perturbation_mask: optional 0/1 pytree applied to ``eps`` after normalisation (Sparse SAM).
    perturb_leaves: which leaves are probed and perturbed (as in :func:`sam_gradient`).
    has_aux: whether ``loss_fn`` (and ``probe_loss_fn``) return ``(loss, aux)``.
    probe_loss_fn: optional; what the probes evaluate instead of ``loss_fn`` (same signature,
      e.g. the loss on a sub-batch); the exact pass at ``theta + eps`` still uses ``loss_fn``.

  Returns:
    ``(value, grads)`` like ``jax.value_and_grad(loss_fn, has_aux)``, both from the single
    forward-backward pass at ``theta + eps``; probe outputs (and their aux) are discarded.

  References:
    Ji et al., "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient Sparse Training",
    CVPR 2026 (arXiv 2603.13115).
  """
  zo = options.resolve(
    zeroth_order, ZerothOrderOptions(), num_directions=num_directions, smoothing=smoothing
  )
  return _sam_family_gradient(
    "zeroth_order",
    zo,
    loss_fn,
    params,
    key,
    rho=rho,
    adaptive=adaptive,
    adaptive_eta=adaptive_eta,
    weight_mask=weight_mask,
    perturbation_mask=perturbation_mask,
    perturb_leaves=perturb_leaves,
    has_aux=has_aux,
    probe_loss_fn=probe_loss_fn,
  )


# ----------------------------------------------------------------------------- transforms


class SharpnessAwareState(NamedTuple):
  """State of every head transform in this module (and of ZO-ESAM in ``efficient_sam``).

  Attributes:
    count: number of updates taken (int32).
    key: PRNG key (raw uint32 key data, checkpoint-friendly), split every step.
    value: float32 loss of the exact-gradient pass of the last step (at ``theta + eps``).
    aux: aux output of that same pass when ``has_aux=True``; ``None`` after ``init``. For a
      jit-stable state structure set it once with
      ``optax.tree_utils.tree_set(tx.init(params), aux=example_aux)``.
    perturbation_mask: Sparse SAM's bool mask, a pytree like params (``None`` otherwise).
    prior: with ``guidance="previous_gradient"``, the last exact gradient (float32 tree like
      params, restricted to ``weight_mask`` and the perturbed leaves; zeros after ``init``), the
      direction the next zeroth-order ascent probes first; ``None`` otherwise.
    gradient: ``None`` unless requested (the sparse wrapper of RigL/MEST does): then the dense
      exact gradient of the last step's update pass, a float tree like params.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  key: jax.Array
  value: jax.Array
  aux: Any
  perturbation_mask: Any
  prior: Any = None
  gradient: Any = None


def init_state(seed: int, perturbation_mask: Any = None) -> SharpnessAwareState:
  """A fresh :class:`SharpnessAwareState`, as the heads' ``init`` makes it.

  Args:
    seed: integer seed of the state's PRNG key (checked: a ``ValueError`` otherwise).
    perturbation_mask: the Sparse SAM mask to start from, or ``None``.

  Returns:
    ``count`` 0, ``key`` ``jax.random.PRNGKey(seed)``, ``value`` 0.0, ``aux`` ``None``, the
    given ``perturbation_mask``, and no ``prior`` or ``gradient``.
  """
  return heads.init_state(SharpnessAwareState, seed, perturbation_mask=perturbation_mask)


def _selected_shapes(params: PyTree, selection: Sequence[bool]) -> list[tuple[int, ...]]:
  return [jnp.shape(p) for p, s in zip(jax.tree.leaves(params), selection, strict=True) if s]


def _mask_tree(params: PyTree, selection: Sequence[bool], parts: Iterable[jax.Array]) -> PyTree:
  """Bool mask tree like params: the parts on selected leaves, False elsewhere."""
  leaves, treedef = jax.tree.flatten(params)
  it = iter(parts)
  out = [
    next(it) if s else jnp.zeros(jnp.shape(p), bool) for p, s in zip(leaves, selection, strict=True)
  ]
  return jax.tree.unflatten(treedef, out)


def _mask_parts(mask_tree: PyTree, selection: Sequence[bool]) -> list[jax.Array]:
  return [m for m, s in zip(jax.tree.leaves(mask_tree), selection, strict=True) if s]


def _refresh_mask(
  spec: pmasks.MaskSpec,
  mask_parts: list[jax.Array],
  *,
  step: jax.Array,
  key: jax.Array,
  params: PyTree,
  ascent_fn: Callable[[], PyTree],
  selection: Sequence[bool],
  extra: dict[str, Any],
) -> list[jax.Array]:
  """Computes the new Sparse SAM mask (called inside ``lax.cond`` on refresh steps).

  ``ascent_fn()`` gives the dense ascent gradient SSAM-D ranks by (called only by it).
  """
  shapes = [m.shape for m in mask_parts]
  if spec.method == "random":
    return pmasks.random_mask(
      key, shapes, sparsity=spec.sparsity, pattern=spec.pattern, n_m=spec.n_m
    )
  if spec.method == "fisher":
    fisher = pmasks.empirical_fisher(
      extra["per_example_loss_fn"],
      params,
      extra["batch"],
      num_samples=spec.num_fisher_samples,
      chunk_size=spec.fisher_chunk_size,
    )
    scores = [f for f, s in zip(jax.tree.leaves(fisher), selection, strict=True) if s]
    return pmasks.top_k_mask(scores, sparsity=spec.sparsity, pattern=spec.pattern, n_m=spec.n_m)
  # dynamic (SSAM-D): N_drop = f(t) (1 - s) d, per pattern
  grads = [g for g, s in zip(jax.tree.leaves(ascent_fn()), selection, strict=True) if s]
  assert spec.end_step is not None  # sparse_sam requires it with mask_method="dynamic"
  fraction = pmasks.cosine_drop_fraction(step, spec.drop_fraction, spec.end_step)
  return pmasks.dynamic_update(
    key,
    mask_parts,
    grads,
    fraction=fraction,
    sparsity=spec.sparsity,
    pattern=spec.pattern,
    n_m=spec.n_m,
  )


def _implicit_ascent(
  loss_fn: LossFn,
  params: PyTree,
  mask: PyTree,
  selection: Sequence[bool],
  spec: pmasks.MaskSpec,
  has_aux: bool,
) -> PyTree:
  """The ascent gradient on the perturbed coordinates only, ``grad L (.) m`` (zero elsewhere).

  Channel masks keep a static number of channels per leaf, ``num_kept(C, s)``, so the kept
  channels' indices have a static size and the weight gradients of kept channels alone are computed
  (``zosam_jax._src.implicit``). Unstructured and N:M masks: the dense gradient times the mask.
  """
  leaves, treedef = jax.tree.flatten(params)
  m_leaves = jax.tree.leaves(mask)
  chosen = [i for i, s in enumerate(selection) if s]
  kept: list[jax.Array | None] = []
  for i in chosen:
    if spec.pattern == "channel" and jnp.ndim(leaves[i]) >= 1:
      active = groups.channel_active(m_leaves[i])
      size = pmasks.num_kept(active.shape[0], spec.sparsity)
      kept.append(jnp.nonzero(active, size=size, fill_value=0)[0].astype(jnp.int32))
    else:
      kept.append(None)
  scalar = losses.scalar_loss(loss_fn, has_aux)

  def loss_of_chosen(*chosen_leaves: jax.Array) -> jax.Array:
    full = list(leaves)
    for i, x in zip(chosen, chosen_leaves, strict=True):
      full[i] = x
    return scalar(jax.tree.unflatten(treedef, full))

  args = [leaves[i] for i in chosen]
  if any(k is not None for k in kept):
    grads = implicit.kept_channel_grad(loss_of_chosen, args, kept)
  else:
    grads = jax.grad(loss_of_chosen, argnums=tuple(range(len(args))))(*args)
  out = [jnp.zeros(jnp.shape(x), jnp.float32) for x in leaves]
  for i, g in zip(chosen, grads, strict=True):
    out[i] = g.astype(jnp.float32) * m_leaves[i].astype(jnp.float32)
  return jax.tree.unflatten(treedef, out)


def sharpness_aware(
  rho: float,
  *,
  ascent: Ascent = "exact",
  zeroth_order: ZerothOrderOptions | None = None,
  guidance: Guidance | None = None,
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  mask_spec: pmasks.MaskSpec | None = None,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """The general SAM-family head; :func:`sam`, :func:`zo_sam`, :func:`random_perturbation` and
  :func:`sparse_sam` build on it.

  ``update(updates, state, params, *, loss_fn, weight_mask=None, **extra)`` ignores ``updates``
  and returns the exact gradient at ``theta + eps`` (see the module docstring). Extra arguments:

  * ``loss_fn`` (required): ``params -> loss`` or ``(loss, aux)``; closes over the batch.
  * ``weight_mask``: 0/1 pytree of active weights (passed by the sparse-training wrappers).
  * ``weight_mask_counts``: static ints, the number of ones of each ``weight_mask`` leaf; with it
    zeroth-order and random directions are drawn only on active weights (see :func:`rge`).
  * ``per_example_loss_fn`` ``(params, batch) -> losses[B]`` (or ``(losses, aux)``, aux
    ignored) and ``batch``: needed by ``mask_spec.method == "fisher"`` (see
    :func:`zosam_jax.perturbation_masks.empirical_fisher`).
  * ``probe_loss_fn``: ``ascent="zeroth_order"`` or ``"exact"`` (refused with ``"random"``, which
    evaluates no loss): what the ascent evaluates instead of ``loss_fn``, with its signature;
    typically ``loss_fn`` closed over a part of the batch. The zeroth-order probes evaluate it;
    the exact ascent differentiates it, ``g = grad probe_loss_fn(theta)`` (SAM whose ascent sees
    a fraction ``f`` of the batch: a step costs about ``(1 + f)`` forward-backwards instead of
    2). The exact pass at ``theta + eps`` still uses ``loss_fn``.

  Args:
    rho: perturbation radius ``>= 0``.
    ascent: ``"exact"`` (SAM, the default), ``"zeroth_order"`` (ZO-SAM) or ``"random"`` (the
      control: a Gaussian direction, no loss evaluated).
    zeroth_order: the estimator's options for ``ascent="zeroth_order"``, a
      :class:`~zosam_jax.ZerothOrderOptions` (``None``: ``ZerothOrderOptions()``); ignored by the
      other ascents.
    guidance: ``None`` (plain random directions) or ``"previous_gradient"`` (only with
      ``ascent="zeroth_order"``): the state keeps the last exact gradient (the one at
      ``theta + eps`` the update used, restricted to ``weight_mask`` and the perturbed leaves) and
      the next ascent probes along it first, the other ``m - 1`` directions drawn at random and
      orthogonal to it. With the central or jvp scheme the estimate's expectation is
      ``(1/m) [d (g.p) p + (m - 1) (I - p p^T) g]`` (``p`` the unit prior, ``d`` the active
      coordinates; exact for a quadratic): the exact projection on ``p`` plus a shrunk random
      rest, deliberately not unbiased (see docs/methods.md, "Prior-guided directions"). ``m = 1``
      probes the prior alone; the first step, with no prior yet, is plain ZO-SAM's. Memory: one
      float32 tree like params in the state.
    adaptive: ASAM's element-wise ``|theta| + adaptive_eta`` scaling of the ascent (default
      ``False``).
    adaptive_eta: ASAM's ``eta >= 0`` (default 0.01); read only with ``adaptive=True``.
    mask_spec: a :class:`~zosam_jax.perturbation_masks.MaskSpec` for a Sparse SAM mask held in
      the state (built by :func:`sparse_sam`, which checks it), or ``None`` (no mask).
    perturb_leaves: which leaves are perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    seed: integer seed of the state's PRNG key (directions, mask draws).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux of the exact pass is kept in
      the state's ``aux``.

  Per step the state's key is split once; the step key drives the zeroth-order directions and the
  Sparse SAM mask refresh, so two replicas with the same state draw the same directions.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SharpnessAwareState`.

  References:
    Foret et al., ICLR 2021 (arXiv 2010.01412); Ji et al., ZO-SAM, CVPR 2026
    (arXiv 2603.13115); Mi et al., NeurIPS 2022 (arXiv 2210.05177), for ``mask_spec``.
  """
  check_rho("rho", rho, adaptive_eta)
  validation.check_choice("ascent", ascent, ASCENTS)
  perturb.check_guidance(guidance, ascent)
  validation.check_int("seed", seed)
  zo = options.resolve(zeroth_order, ZerothOrderOptions())

  def init_fn(params: PyTree) -> SharpnessAwareState:
    key = jax.random.PRNGKey(seed)
    mask = None
    if mask_spec is not None:
      selection = validation.resolve_leaf_selection("perturb_leaves", perturb_leaves, params)
      shapes = _selected_shapes(params, selection)
      if not shapes:
        raise ValueError(
          "perturb_leaves must select at least one floating-point parameter leaf for sparse_sam, "
          "got none."
        )
      if mask_spec.pattern == "n:m":
        pmasks.check_n_m_shapes(shapes, mask_spec.n_m)
      key, init_key = jax.random.split(key)
      parts = pmasks.random_mask(
        init_key,
        shapes,
        sparsity=mask_spec.sparsity,
        pattern=mask_spec.pattern,
        n_m=mask_spec.n_m,
      )
      mask = _mask_tree(params, selection, parts)
    return init_state(seed)._replace(
      key=key, perturbation_mask=mask, prior=perturb.initial_prior(params, guidance)
    )

  def step(
    state: SharpnessAwareState, inputs: heads.StepInputs
  ) -> tuple[PyTree, SharpnessAwareState]:
    key, step_key = jax.random.split(state.key)
    probe_key, mask_key = jax.random.split(step_key)
    implicit_form = mask_spec is not None and mask_spec.form == "implicit"

    def dense_ascent() -> PyTree:
      return inputs.ascent(ascent, zo, probe_key, prior=state.prior)

    # The implicit form refreshes the mask first, then differentiates on it; SSAM-D's refresh then
    # takes its own dense gradient (on refresh steps only).
    ascent_dir = None if implicit_form else dense_ascent()
    mask = state.perturbation_mask
    if mask_spec is not None:
      extra = inputs.extra
      if mask_spec.method == "fisher" and (
        extra.get("per_example_loss_fn") is None or extra.get("batch") is None
      ):
        raise ValueError(
          "sparse_sam(mask_method='fisher') needs the extra arguments per_example_loss_fn= "
          "(params, batch) -> per-example losses [B], and batch= (leading example axis)."
        )
      parts = _mask_parts(mask, inputs.selection)
      refresh = lambda: _refresh_mask(  # noqa: E731
        mask_spec,
        parts,
        step=state.count,
        key=mask_key,
        params=inputs.params,
        ascent_fn=dense_ascent if implicit_form else lambda: ascent_dir,
        selection=inputs.selection,
        extra=extra,
      )
      parts = jax.lax.cond(state.count % mask_spec.update_every == 0, refresh, lambda: parts)
      mask = _mask_tree(inputs.params, inputs.selection, parts)
    if implicit_form:
      assert mask_spec is not None  # implicit_form says so
      ascent_dir = _implicit_ascent(
        losses.probe_loss(inputs.loss_fn, inputs.probe_loss_fn),
        inputs.params,
        mask,
        inputs.selection,
        mask_spec,
        has_aux,
      )

    out, grads = inputs.exact_pass(
      ascent_dir,
      rho=rho,
      adaptive=adaptive,
      adaptive_eta=adaptive_eta,
      perturbation_mask=mask,
    )
    return grads, inputs.advance(
      state,
      out,
      gradient=grads,
      key=key,
      perturbation_mask=mask,
    )

  return heads.transform(
    init_fn,
    step,
    name=f"sharpness_aware(ascent={ascent!r})",
    perturb_leaves=perturb_leaves,
    probes=ascent != "random",  # The exact ascent may see a sub-batch too.
    has_aux=has_aux,
    guidance=guidance,
  )


def exact_gradient(*, has_aux: bool = False) -> optax.GradientTransformationExtraArgs:
  """Head that replaces the updates by ``grad loss_fn(theta)`` (plain SGD/Adam chains).

  Gives non-SAM chains the same interface (``loss_fn=`` extra argument, ``value``/``aux`` in the
  state) so a training script and the sparse-training wrappers treat every chain alike. One
  forward-backward per step.

  Args:
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux is kept in the state's ``aux``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SharpnessAwareState`
    (``value``: the loss at ``theta``).
  """

  def init_fn(params: PyTree) -> SharpnessAwareState:
    del params
    return init_state(0)

  def step(
    state: SharpnessAwareState, inputs: heads.StepInputs
  ) -> tuple[PyTree, SharpnessAwareState]:
    out, grads = jax.value_and_grad(inputs.loss_fn, has_aux=has_aux)(inputs.params)
    return grads, inputs.advance(state, out, gradient=grads)

  return heads.transform(
    init_fn, step, name="exact_gradient", perturb_leaves=None, probes=False, has_aux=has_aux
  )


def sam(
  rho: float = 0.05,
  *,
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """SAM head: the exact gradient at ``theta + eps``, ``eps = rho g/||g||`` with ``g`` the exact
  gradient at ``theta``.

  Two forward-backward passes per step; :func:`sam_gradient` is the same step as a pure
  function. ``update(None, state, params, loss_fn=loss_fn)`` returns the gradient at the
  perturbed point, for the rest of the chain.

  Args:
    rho: perturbation radius, ``>= 0`` (default 0.05).
    adaptive: ASAM instead of SAM: the ascent is scaled element-wise by
      ``T = |theta| + adaptive_eta`` (``eps = rho T^2 g / ||T g||``). Default ``False``.
    adaptive_eta: ASAM's ``eta >= 0`` (default 0.01); read only with ``adaptive=True``.
    perturb_leaves: which leaves are perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux of the pass at ``theta + eps``
      is kept in the state's ``aux``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SharpnessAwareState`.

  Examples:
    On ``L(w) = ||w||^2 / 2`` the gradient at ``w + eps`` is ``w (1 + rho/||w||)``:

    >>> import jax.numpy as jnp, optax, zosam_jax as zj
    >>> params = {"w": jnp.array([3.0, 4.0])}
    >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
    >>> tx = zj.sam(rho=2.5)  # ||w|| = 5: the gradient at w + eps is 1.5 w
    >>> state = tx.init(params)
    >>> grads, state = tx.update(None, state, params, loss_fn=loss_fn)
    >>> print(grads["w"])
    [4.5 6. ]

    In a training chain the head comes first and the optimizer after it:

    >>> tx = optax.chain(zj.sam(rho=0.05), optax.sgd(0.1, momentum=0.9))

  References:
    Foret et al., "Sharpness-Aware Minimization for Efficiently Improving Generalization",
    ICLR 2021 (arXiv 2010.01412); Kwon et al., "ASAM", ICML 2021 (arXiv 2102.11600), for
    ``adaptive=True``.
  """
  return sharpness_aware(
    rho,
    adaptive=adaptive,
    adaptive_eta=adaptive_eta,
    perturb_leaves=perturb_leaves,
    has_aux=has_aux,
  )


def zo_sam(
  rho: float = 0.05,
  *,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  guidance: Guidance | None = None,
  adaptive: bool = False,
  adaptive_eta: float = 0.01,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZO-SAM head: zeroth-order ascent direction, exact update gradient.

  ``eps = rho g_hat/||g_hat||`` with ``g_hat`` a random gradient estimate at ``theta``
  (:func:`zosam_jax.rge`: ``2m`` forward passes with the central scheme), then one
  forward-backward at ``theta + eps``; :func:`zo_sam_gradient` is the same step as a pure
  function. ``zo_sam(0.05, num_directions=4)`` is short for
  ``zo_sam(0.05, zeroth_order=ZerothOrderOptions(num_directions=4))``.

  Args:
    rho: perturbation radius, ``>= 0`` (default 0.05).
    zeroth_order: the estimator's options, a :class:`~zosam_jax.ZerothOrderOptions`; ``None``:
      ``ZerothOrderOptions()`` (one Gaussian direction, central differences, smoothing 1e-3).
    num_directions: short form that overrides ``zeroth_order.num_directions`` (``m >= 1``).
    smoothing: short form that overrides ``zeroth_order.smoothing`` (``delta > 0``).
    guidance: ``None`` (default: plain random directions) or ``"previous_gradient"``: probe along
      the last exact gradient first (see :func:`sharpness_aware`).
    adaptive: ASAM's element-wise ``|theta| + adaptive_eta`` scaling of the estimate.
    adaptive_eta: ASAM's ``eta >= 0`` (default 0.01); read only with ``adaptive=True``.
    perturb_leaves: which leaves are probed and perturbed: ``None`` (every floating-point leaf),
      an ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    seed: integer seed of the state's PRNG key, split once per step for the directions.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``; the aux of the pass at ``theta + eps``
      is kept in the state's ``aux`` (the probes' aux is discarded).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SharpnessAwareState`.
    Its ``update`` also takes ``probe_loss_fn=`` (what the probes evaluate instead of
    ``loss_fn``, e.g. the loss on a sub-batch).

  Examples:
    On ``L(w) = ||w||^2 / 2`` the update gradient is ``w + eps`` whatever the direction, so
    ``||updates - w|| = rho``:

    >>> import jax.numpy as jnp, zosam_jax as zj
    >>> params = {"w": jnp.array([3.0, 4.0])}
    >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
    >>> tx = zj.zo_sam(rho=0.5, num_directions=4, seed=0)
    >>> state = tx.init(params)
    >>> grads, state = tx.update(None, state, params, loss_fn=loss_fn)
    >>> print(jnp.linalg.norm(grads["w"] - params["w"]).round(3))
    0.5

  References:
    Ji et al., "ZO-SAM: Zero-Order Sharpness-Aware Minimization for Efficient Sparse Training",
    CVPR 2026 (arXiv 2603.13115).
  """
  return sharpness_aware(
    rho,
    ascent="zeroth_order",
    zeroth_order=options.resolve(
      zeroth_order, ZerothOrderOptions(), num_directions=num_directions, smoothing=smoothing
    ),
    adaptive=adaptive,
    adaptive_eta=adaptive_eta,
    perturb_leaves=perturb_leaves,
    seed=seed,
    has_aux=has_aux,
    guidance=guidance,
  )


def random_perturbation(
  rho: float = 0.05,
  *,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """The control head: the gradient at ``theta + rho u/||u||``, ``u`` Gaussian on active weights.

  Random weight perturbation with SAM's radius and one forward-backward per step: it costs what
  ZO-SAM with one direction costs, less its two probe forwards. If ZO-SAM does no better than
  this head, the zeroth-order information in its direction is not what helps.

  Args:
    rho: perturbation radius, ``>= 0`` (default 0.05).
    perturb_leaves: which leaves are perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    seed: integer seed of the state's PRNG key, split once per step for ``u``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SharpnessAwareState`.

  References:
    Bisla et al., AISTATS 2022 (low-pass filtering SGD); Ji et al., ZO-SAM, CVPR 2026
    (arXiv 2603.13115), whose ascent this head controls for.
  """
  return sharpness_aware(
    rho, ascent="random", perturb_leaves=perturb_leaves, seed=seed, has_aux=has_aux
  )


def sparse_sam(
  rho: float = 0.1,
  sparsity: float = 0.5,
  *,
  mask_method: MaskMethod = "fisher",
  pattern: Pattern = "unstructured",
  n_m: tuple[int, int] = (2, 4),
  update_every: int = 100,
  num_fisher_samples: int = 128,
  fisher_chunk_size: int = 16,
  drop_fraction: float = 0.5,
  end_step: int | None = None,
  ascent: LossAscent = "exact",
  zeroth_order: ZerothOrderOptions | None = None,
  guidance: Guidance | None = None,
  form: MaskForm = "explicit",
  adaptive: bool = False,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """Sparse SAM head: SAM or ZO-SAM whose perturbation is multiplied by a binary mask.

  The mask (SSAM-F ``"fisher"``, SSAM-D ``"dynamic"`` or ``"random"``; patterns
  ``"unstructured"``, ``"channel"``, ``"n:m"``, for every method) lives in the state and is
  refreshed inside the compiled step with ``lax.cond`` at steps ``t % update_every == 0`` (step 0
  included); it starts uniformly random. See :mod:`zosam_jax.perturbation_masks` for the rules.

  Args:
    rho: perturbation radius.
    sparsity: fraction of perturbable coordinates NOT perturbed, in ``[0, 1)`` (ignored by
      ``"n:m"``, whose sparsity is ``1 - N/M``).
    mask_method: ``"fisher"``, ``"dynamic"`` or ``"random"``.
    pattern: ``"unstructured"``, ``"channel"`` (whole output channels, the last axis of each leaf)
      or ``"n:m"`` (``N`` of every ``M`` consecutive weights along the input axis).
    n_m: ``(N, M)`` with ``1 <= N <= M``.
    update_every: ``T_m``, steps between mask refreshes.
    num_fisher_samples: ``N_F`` (the paper's default is 128).
    fisher_chunk_size: per-example gradients computed at once.
    drop_fraction: SSAM-D's ``alpha`` in ``(0, 1)``.
    end_step: SSAM-D's ``T``, the horizon of its cosine decay (required for ``"dynamic"``).
    ascent: ``"exact"`` (SSAM) or ``"zeroth_order"`` (Sparse ZO-SAM, options in
      ``zeroth_order``).
    zeroth_order: the estimator's options for ``ascent="zeroth_order"``, a
      :class:`~zosam_jax.ZerothOrderOptions` (``None``: ``ZerothOrderOptions()``).
    guidance: ``None`` or ``"previous_gradient"`` (Sparse ZO-SAM only; see
      :func:`sharpness_aware`).
    form: where the mask acts (SSAM TPAMI's two forms; ``g = grad L(theta)``, ``m`` the mask):

      * ``"explicit"``: the dense ascent gradient, the mask applied to the perturbation,
        ``eps = rho g / ||g|| (.) m``.
      * ``"implicit"``: the mask applied inside the ascent's backward pass, so only the perturbed
        coordinates' gradient ``g (.) m`` is formed, ``eps = rho (g (.) m) / ||g (.) m||``: the
        explicit form's direction with ``||eps|| = rho`` (the full ``||g||`` is never computed).
        With ``pattern="channel"`` the weight gradients of ``Dense``/``Conv`` kernels are
        computed for the kept output channels only (a matmul or convolution ``k/C`` the size);
        unstructured and N:M masks gain nothing without sparse kernels, so the dense gradient
        times the mask is what runs (``benchmarks/pattern_cost.py`` measures both). On mask
        refresh steps SSAM-D takes the dense gradient it ranks by. Needs ``ascent="exact"``.
    adaptive: ASAM's element-wise ``|theta| + 0.01`` scaling of the ascent (default ``False``).
    perturb_leaves: which leaves are perturbed (and masked): ``None`` (every floating-point
      leaf), an ``optax.masked``-style pytree of bools, or a callable ``params -> bools``. With
      ``"n:m"`` every selected leaf's input axis must split into blocks of ``M``.
    seed: integer seed of the state's PRNG key (the initial random mask, SSAM-D's regrowth,
      zeroth-order directions).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SharpnessAwareState`
    holding the mask in ``perturbation_mask``. With ``mask_method="fisher"`` its ``update`` needs
    ``per_example_loss_fn=`` and ``batch=`` too (see :func:`sharpness_aware`).

  Examples:
    A random mask that perturbs half of the coordinates, refreshed every 10 steps:

    >>> import jax.numpy as jnp, zosam_jax as zj
    >>> params = {"w": jnp.array([1.0, -2.0, 3.0, -4.0])}
    >>> tx = zj.sparse_sam(rho=0.1, sparsity=0.5, mask_method="random", update_every=10)
    >>> state = tx.init(params)
    >>> grads, state = tx.update(
    ...     None, state, params, loss_fn=lambda p: 0.5 * jnp.sum(p["w"] ** 2))
    >>> int(state.perturbation_mask["w"].sum())
    2

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177; Algorithms 1-2, eq. 5-9); Mi et al.,
    "Systematic Investigation of Sparse Perturbed Sharpness-Aware Minimization Optimizer",
    TPAMI 2025 (patterns, the implicit form).
  """
  validation.check_choice("mask_method", mask_method, pmasks.MASK_METHODS)
  pmasks.check_pattern(pattern, n_m)
  validation.check_sparsity("sparsity", sparsity)
  validation.check_positive_int("update_every", update_every)
  validation.check_positive_int("num_fisher_samples", num_fisher_samples)
  validation.check_positive_int("fisher_chunk_size", fisher_chunk_size)
  validation.check_choice("ascent", ascent, perturb.LOSS_ASCENTS)
  perturb.check_guidance(guidance, ascent)
  validation.check_choice("form", form, pmasks.FORMS)
  if form == "implicit" and ascent != "exact":
    raise ValueError(
      f"form='implicit' needs ascent='exact' (it masks the exact ascent's backward pass), got "
      f"ascent={ascent!r}."
    )
  if mask_method == "dynamic":
    validation.check_interval(
      "drop_fraction", drop_fraction, 0.0, 1.0, low_open=True, high_open=True
    )
    if end_step is None:
      raise ValueError("end_step must be an integer >= 1 with mask_method='dynamic', got None.")
    validation.check_positive_int("end_step", end_step)
  spec = pmasks.MaskSpec(
    mask_method,
    sparsity,
    pattern,
    cast(tuple[int, int], tuple(n_m)),  # two ints with "n:m" (checked above), unused otherwise
    update_every,
    num_fisher_samples,
    fisher_chunk_size,
    drop_fraction,
    end_step,
    form,
  )
  return sharpness_aware(
    rho,
    ascent=ascent,
    zeroth_order=zeroth_order,
    adaptive=adaptive,
    mask_spec=spec,
    perturb_leaves=perturb_leaves,
    seed=seed,
    has_aux=has_aux,
    guidance=guidance,
  )
