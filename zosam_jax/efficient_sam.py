"""Efficient SAM variants, their zeroth-order versions, and an adaptive number of directions.

Same interface as :mod:`zosam_jax.sharpness`: each factory returns an
``optax.GradientTransformationExtraArgs`` that heads a chain, ignores the incoming updates, takes
``loss_fn=`` (ESAM: ``per_example_loss_fn=`` and ``batch=``) and keeps ``value``/``aux`` of its
last exact-gradient pass in the state.

* :func:`looksam` (Liu et al. 2022): every ``update_every`` steps a full SAM step, keeping
  ``g_v = g_s - (<g_s, g>/||g||^2) g``, the part of the SAM gradient ``g_s`` orthogonal to the plain
  gradient ``g``; in between, ``g + alpha ||g||/||g_v|| g_v`` (one forward-backward).
  ``ascent="zeroth_order"`` (ZO-LookSAM) makes the refresh a ZO-SAM step (no exact gradient at
  ``theta`` then), so it stores ``g_s`` itself and orthogonalises it against each later step's
  exact gradient. Both take ``probe_loss_fn=``: the refreshes' ascent (its probes, or the exact
  one's gradient) evaluates it instead of ``loss_fn``.
* :func:`gsam` (Zhuang et al. 2022): ``g_p - alpha g_perp`` with ``g_p`` the gradient at
  ``theta + eps`` and ``g_perp`` the part of ``g`` orthogonal to ``g_p``;
  ``rho_t = rho_min + (rho_max - rho_min)(lr_t - lr_min)/(lr_max - lr_min)``.
* :func:`esam` (Du et al. 2022): stochastic weight perturbation (each parameter leaf joins the
  perturbation with probability ``beta``, ``eps = rho/beta m (.) g/||g||``) and sharpness-sensitive
  data selection (the ``ceil(gamma B)`` examples whose loss rises most at ``theta + eps`` get the
  second forward-backward). ``ascent="zeroth_order"`` gives ZO-ESAM.
* :func:`adaptive_zo_sam`: ZO-SAM whose number of directions follows the measured probe noise.

References:
  Liu, Mai, Chen, Hsieh & You, "Towards Efficient and Scalable Sharpness-Aware Minimization",
  CVPR 2022 (arXiv 2203.02714).
  Zhuang et al., "Surrogate Gap Minimization Improves Sharpness-Aware Training", ICLR 2022
  (arXiv 2203.08065).
  Du et al., "Efficient Sharpness-aware Minimization for Improved Training of Neural Networks",
  ICLR 2022 (arXiv 2110.03141).
  Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115), section on open questions.

Every head here takes the same trailing keywords as :mod:`zosam_jax.sharpness`'s:
``ascent``, ``zeroth_order`` (a :class:`zosam_jax.ZerothOrderOptions`) where a zeroth-order ascent
applies, then ``perturb_leaves``, ``seed`` and ``has_aux``. With a zeroth-order ascent, ``update``
also takes ``probe_loss_fn=``: what the probes evaluate instead of the training loss (same
signature as ``loss_fn``, e.g. the loss on a sub-batch); the exact pass keeps the full loss.
Exact :func:`looksam` takes it too (its refreshes' ascent gradient); the other heads without
probes refuse it. Their states' ``gradient`` field is ``None`` unless requested
(see ``SharpnessAwareState``): then it holds the dense gradient of the step's exact pass.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from zosam_jax import estimators
from zosam_jax._src import control_flow, heads, losses, options, trees, validation
from zosam_jax._src import perturbation as perturb
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import Guidance, LeafSelection, LossAscent, LossFn, PyTree
from zosam_jax._src.validation import check_rho
from zosam_jax.sharpness import SharpnessAwareState  # ZO-ESAM's state: the public type


def _check_ascent(
  ascent: LossAscent, zeroth_order: ZerothOrderOptions | None, guidance: Guidance | None
) -> ZerothOrderOptions:
  validation.check_choice("ascent", ascent, perturb.LOSS_ASCENTS)
  perturb.check_guidance(guidance, ascent)
  return options.resolve(zeroth_order, ZerothOrderOptions())


# ----------------------------------------------------------------------------- LookSAM


class LookSAMState(NamedTuple):
  """State of :func:`looksam`.

  Attributes:
    count: steps taken; steps with ``count % update_every == 0`` are refresh (SAM) steps.
    key: PRNG key (zeroth-order refreshes), split every step.
    value: loss of the last exact-gradient pass (at ``theta + eps`` on refresh steps, at
      ``theta`` in between).
    aux: aux of that pass (``None`` after init; see ``SharpnessAwareState``).
    reused: float32 pytree kept between refreshes: ``g_v`` (exact ascent; with ``probe_loss_fn``,
      ``g_s`` orthogonal to the ascent's gradient ``grad probe_loss_fn(theta)``) or ``g_s`` (ZO
      ascent).
    prior: with ``guidance="previous_gradient"``, the last step's exact gradient (float32,
      restricted to ``weight_mask`` and the perturbed leaves), probed first by the next ZO
      refresh; ``None`` otherwise.
    gradient: ``None`` unless requested; then the dense gradient of the step's last exact pass
      (``g_s`` on refresh steps, ``g`` in between).
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  key: jax.Array
  value: jax.Array
  aux: Any
  reused: Any
  prior: Any = None
  gradient: Any = None


def looksam(
  rho: float = 0.05,
  update_every: int = 5,
  alpha: float = 0.7,
  *,
  ascent: LossAscent = "exact",
  zeroth_order: ZerothOrderOptions | None = None,
  guidance: Guidance | None = None,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """LookSAM / ZO-LookSAM head (see the module docstring). ``update_every=1`` is SAM / ZO-SAM.

  Cost per step: refresh ``2`` forward-backwards (exact) or ``2m`` forwards + 1 forward-backward
  (ZO); other steps 1 forward-backward. Refreshes are chosen by ``lax.cond`` (no retrace). The
  conditional part is the pass at ``theta + eps`` (exact) or only the ``2m`` forwards (ZO, whose
  one forward-backward per step stays outside control flow).

  ``update`` takes ``probe_loss_fn=`` (same signature as ``loss_fn``, e.g. the loss on a part of
  the batch): what a refresh's ascent evaluates instead of ``loss_fn``. ZO: the probes. Exact:
  the ascent gradient ``g_p = grad probe_loss_fn(theta)``, ``eps = rho g_p/||g_p||``, and the
  kept ``g_v`` is the full loss's gradient at ``theta + eps`` orthogonal to ``g_p`` (no
  full-batch gradient at ``theta`` on refresh steps: a refresh costs ``1 + f`` forward-backwards
  for a sub-batch of ``f`` of the batch, the conditional part being the ascent gradient). Steps
  between refreshes, and every update gradient, use ``loss_fn`` as without it.

  Args:
    rho: perturbation radius, ``>= 0`` (default 0.05).
    update_every: ``k >= 1``, steps between exact (or ZO) ascents; steps ``t`` with
      ``t % k == 0`` (step 0 included) are refreshes. ``1`` is SAM (ZO-SAM) at every step.
    alpha: weight ``>= 0`` of the reused component ``g_v`` between refreshes (``0``: plain
      gradient steps between refreshes).
    ascent: ``"exact"`` (LookSAM, default) or ``"zeroth_order"`` (ZO-LookSAM).
    zeroth_order: the estimator's options for ``ascent="zeroth_order"``, a
      :class:`~zosam_jax.ZerothOrderOptions` (``None``: ``ZerothOrderOptions()``).
    guidance: ``None`` or ``"previous_gradient"`` (ZO-LookSAM only): each refresh probes along
      the exact gradient of the step before it first (see :func:`zosam_jax.sharpness_aware`).
    perturb_leaves: which leaves are perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    seed: integer seed of the state's PRNG key (zeroth-order refreshes).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`LookSAMState`.

  Examples:
    Step 0 is a refresh, a full SAM step (on ``||w||^2 / 2`` with ``||w|| = 5`` and
    ``rho = 2.5`` the gradient at ``w + eps`` is ``1.5 w``); step 1 reuses its component
    orthogonal to the plain gradient, here zero:

    >>> import jax.numpy as jnp, zosam_jax as zj
    >>> params = {"w": jnp.array([3.0, 4.0])}
    >>> loss_fn = lambda p: 0.5 * jnp.sum(p["w"] ** 2)
    >>> tx = zj.looksam(rho=2.5, update_every=2, alpha=0.7)
    >>> state = tx.init(params)
    >>> grads, state = tx.update(None, state, params, loss_fn=loss_fn)
    >>> print(grads["w"])
    [4.5 6. ]
    >>> grads, state = tx.update(None, state, params, loss_fn=loss_fn)
    >>> print(grads["w"])
    [3. 4.]

  References:
    Liu et al., "Towards Efficient and Scalable Sharpness-Aware Minimization", CVPR 2022
    (arXiv 2203.02714); ``k = 5`` and ``alpha = 0.7`` are its defaults too.
  """
  check_rho("rho", rho)
  validation.check_positive_int("update_every", update_every)
  validation.check_nonnegative("alpha", alpha)
  validation.check_int("seed", seed)
  zo = _check_ascent(ascent, zeroth_order, guidance)

  def init_fn(params: PyTree) -> LookSAMState:
    return heads.new_state(
      LookSAMState,
      seed,
      reused=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params),
      prior=perturb.initial_prior(params, guidance),
    )

  def step(state: LookSAMState, inputs: heads.StepInputs) -> tuple[PyTree, LookSAMState]:
    params = inputs.params
    key, probe_key = jax.random.split(state.key)
    vag = jax.value_and_grad(inputs.loss_fn, has_aux=has_aux)
    is_refresh = state.count % update_every == 0

    def with_reused(g: PyTree, v: PyTree) -> PyTree:
      """``g + alpha ||g||/||v|| v``, the update between refreshes."""
      scale = alpha * jnp.sqrt(trees.vdot(g, g)) / (jnp.sqrt(trees.vdot(v, v)) + trees.TINY)
      return trees.cast_like(
        jax.tree.map(lambda a, b: a.astype(jnp.float32) + scale * b, g, v), params
      )

    if ascent == "exact" and inputs.probe_loss_fn is None:
      # The plain gradient is needed on every step, so it is taken at top level; only the pass
      # at theta + eps is conditional.
      out_plain, g = vag(params)

      def refresh() -> tuple[Any, PyTree, PyTree, PyTree]:
        out_s, g_s = inputs.exact_pass(g, rho=rho)
        return out_s, g_s, trees.orthogonal(g_s, g), g_s

      def reuse() -> tuple[Any, PyTree, PyTree, PyTree]:
        return out_plain, with_reused(g, state.reused), state.reused, g

      out, grads, kept, raw = control_flow.cond_with_backward(is_refresh, refresh, reuse)
    elif ascent == "exact":
      # The ascent on probe_loss_fn (a sub-batch): on refresh steps g_p = grad probe_loss_fn
      # (theta), eps from it, g_s the full loss's gradient at theta + eps, and the kept g_v is
      # g_s orthogonal to g_p (the gradient the ascent followed; with probe_loss_fn = loss_fn
      # this is LookSAM's g_v). No full-batch gradient at theta is taken on refresh steps, so a
      # refresh costs 1 + f forward-backwards, not 2. As in the ZO branch, the step's one
      # full forward-backward runs at top level (eps = 0 between refreshes) and only the
      # ascent is conditional; it back-propagates, hence cond_with_backward.
      def sub_batch_ascent() -> tuple[PyTree, PyTree]:
        g_p = inputs.ascent("exact", zo, probe_key)
        return inputs.perturbation(g_p, rho=rho), trees.to_float32(g_p)

      def no_ascent() -> tuple[PyTree, PyTree]:
        shapes = jax.eval_shape(sub_batch_ascent)
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

      eps, g_p = control_flow.cond_with_backward(is_refresh, sub_batch_ascent, no_ascent)
      out, g = vag(trees.add(params, eps))
      raw = g
      grads, kept = jax.lax.cond(
        is_refresh,
        lambda: (g, trees.orthogonal(g, g_p)),
        lambda: (with_reused(g, state.reused), state.reused),
      )
    else:
      # The ZO ascent is forward-only, so it alone sits under the cond, and the step's one
      # forward-backward runs at top level: at theta + eps on refresh steps, at theta (eps = 0)
      # in between. Why it matters: XLA:CPU canonicalises convolutions only outside control flow,
      # and a convolution's backward inside a cond ran about 18x slower there (docs/benchmarks).
      def ascent_step(_: None) -> PyTree:
        direction = inputs.ascent("zeroth_order", zo, probe_key, prior=state.prior)
        return inputs.perturbation(direction, rho=rho)

      def no_step(_: None) -> PyTree:
        shapes = jax.eval_shape(ascent_step, None)
        return jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)

      eps = jax.lax.cond(is_refresh, ascent_step, no_step, None)
      out, g = vag(trees.add(params, eps))
      raw = g
      # Elementwise only, so a cond is cheap here and skips the reuse arithmetic on refreshes.
      grads, kept = jax.lax.cond(
        is_refresh,
        lambda: (g, trees.to_float32(g)),
        lambda: (with_reused(g, trees.orthogonal(state.reused, g)), state.reused),
      )

    # raw, not grads: the exact gradient of this step's pass (grads may add the reused part); it
    # fills the gradient slot and, guided (ZO ascent only, where raw is g), seeds the next prior.
    return grads, inputs.advance(state, out, gradient=raw, key=key, reused=kept)

  return heads.transform(
    init_fn,
    step,
    name=f"looksam(ascent={ascent!r})",
    perturb_leaves=perturb_leaves,
    probes=True,  # Either ascent takes probe_loss_fn (the exact one on refresh steps).
    has_aux=has_aux,
    guidance=guidance,
  )


# ----------------------------------------------------------------------------- GSAM


class GSAMState(NamedTuple):
  """State of :func:`gsam`.

  Attributes:
    count: int32, steps taken.
    value: float32 loss of the last step's pass at ``theta + eps``.
    aux: aux of that pass with ``has_aux=True`` (``None`` after init; see
      :class:`~zosam_jax.SharpnessAwareState`).
    rho: float32, the radius used at the last step (for logging the schedule).
    gradient: ``None`` unless requested; then the dense gradient ``g_p`` at ``theta + eps``.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  value: jax.Array
  aux: Any
  rho: jax.Array
  gradient: Any = None


def gsam(
  rho_max: float = 0.05,
  rho_min: float | None = None,
  alpha: float = 0.1,
  *,
  learning_rate: optax.ScalarOrSchedule | None = None,
  lr_max: float | None = None,
  lr_min: float = 0.0,
  perturb_leaves: LeafSelection = None,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """GSAM head: ``g_p - alpha g_perp`` (see the module docstring); two forward-backwards.

  Args:
    rho_max: the largest radius, ``>= 0`` (default 0.05); the radius when the learning rate is
      at ``lr_max``, and the constant radius when ``rho_min`` is ``None``.
    rho_min: the smallest radius, ``0 <= rho_min <= rho_max``, reached at ``lr_min``;
      ``None`` (default) means a constant ``rho_max``.
    alpha: weight ``>= 0`` of the ascent along ``g_perp`` (default 0.1; the paper tunes it in
      [0.01, 0.3]; 0 is SAM).
    learning_rate: the chain's learning-rate schedule (or constant); ``rho`` follows it linearly
      between ``(lr_min, rho_min)`` and ``(lr_max, rho_max)``, clipped to that range. Needed
      when ``rho_min != rho_max``, ignored otherwise.
    lr_max: the learning rate at which ``rho = rho_max``; ``None`` (default) is
      ``learning_rate(0)``. Must be ``> lr_min``.
    lr_min: the learning rate at which ``rho = rho_min``; defaults to 0 (cosine decay to zero).
    perturb_leaves: which leaves are perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`GSAMState`.

  References:
    Zhuang et al., "Surrogate Gap Minimization Improves Sharpness-Aware Training", ICLR 2022
    (arXiv 2203.08065).
  """
  check_rho("rho_max", rho_max)
  rho_min = rho_max if rho_min is None else rho_min
  validation.check_nonnegative("rho_min", rho_min)
  if rho_min > rho_max:
    raise ValueError(f"rho_min must be <= rho_max ({rho_max}), got {rho_min}.")
  validation.check_nonnegative("alpha", alpha)
  schedule = None
  if rho_min != rho_max:
    if learning_rate is None:
      raise ValueError(
        "learning_rate must be the chain's schedule (or a number) when rho_min != rho_max, "
        "got None."
      )
    schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)
    lr_max = float(schedule(0)) if lr_max is None else lr_max
    if not lr_max > lr_min:
      raise ValueError(f"lr_max must be > lr_min ({lr_min}), got {lr_max}.")

  def rho_at(count: jax.Array) -> jax.Array:
    if schedule is None:
      return jnp.float32(rho_max)
    assert lr_max is not None  # set with the schedule
    frac = (schedule(count) - lr_min) / (lr_max - lr_min)
    return jnp.float32(rho_min) + (rho_max - rho_min) * jnp.clip(frac, 0.0, 1.0)

  def init_fn(params: PyTree) -> GSAMState:
    del params
    return GSAMState(
      jnp.zeros([], jnp.int32), jnp.zeros([], jnp.float32), None, jnp.float32(rho_max)
    )

  def step(state: GSAMState, inputs: heads.StepInputs) -> tuple[PyTree, GSAMState]:
    _, g = jax.value_and_grad(inputs.loss_fn, has_aux=has_aux)(inputs.params)
    rho = rho_at(state.count)
    out, g_p = inputs.exact_pass(g, rho=rho)
    g_perp = trees.orthogonal(g, g_p)
    update = jax.tree.map(lambda a, b: a.astype(jnp.float32) - alpha * b, g_p, g_perp)
    new_state = inputs.advance(state, out, gradient=g_p, rho=rho)
    return trees.cast_like(update, inputs.params), new_state

  return heads.transform(
    init_fn, step, name="gsam", perturb_leaves=perturb_leaves, probes=False, has_aux=has_aux
  )


# ----------------------------------------------------------------------------- ESAM


def esam(
  rho: float = 0.05,
  beta: float = 0.6,
  gamma: float = 0.5,
  *,
  ascent: LossAscent = "exact",
  zeroth_order: ZerothOrderOptions | None = None,
  guidance: Guidance | None = None,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ESAM / ZO-ESAM head. ``beta = gamma = 1`` is SAM (ZO-SAM with ``ascent="zeroth_order"``).

  ``update(updates, state, params, *, per_example_loss_fn, batch, weight_mask=None)`` where
  ``per_example_loss_fn(params, batch)`` returns one loss per example (shape ``[B]``; with
  ``has_aux=True``, ``(losses, aux)``) and ``batch`` has a leading example axis of static size
  ``B``. The training loss is their mean. With ``ascent="zeroth_order"``, ``probe_loss_fn=``
  (``params -> loss``, or ``(loss, aux)`` with ``has_aux=True``) replaces that mean in the probes,
  e.g. the mean over a part of the batch; refused with the exact ascent.

  Steps: (1) ascent direction ``g`` at ``theta`` (exact: one forward-backward, which also gives
  the per-example losses; ZO: the estimator's forwards plus, when ``gamma < 1``, one forward for
  the per-example losses at ``theta``); (2) ``eps = rho/beta m (.) g/||g||`` with ``m`` one
  Bernoulli(beta) draw per parameter leaf; (3) when ``gamma < 1``, one forward at ``theta + eps``
  over the batch, and the ``ceil(gamma B)`` examples with the largest loss increase are gathered;
  (4) the forward-backward at ``theta + eps`` on those examples gives the update. ``value`` is the
  mean loss of the selected examples at ``theta + eps``.

  ``guidance="previous_gradient"`` (ZO-ESAM only) keeps step (4)'s gradient in the state's
  ``prior`` and probes along it first at the next step (see :func:`zosam_jax.sharpness_aware`).

  Args:
    rho: perturbation radius, ``>= 0`` (default 0.05); the perturbed leaves' radius is
      ``rho / beta`` so that its expectation over the leaf draws matches SAM's.
    beta: probability in ``(0, 1]`` that a parameter leaf joins the perturbation (stochastic
      weight perturbation; default 0.6). ``1`` perturbs every leaf.
    gamma: fraction in ``(0, 1]`` of the batch that gets the update's forward-backward
      (sharpness-sensitive data selection; default 0.5). ``1`` uses the whole batch and skips
      the selection's extra forward.
    ascent: ``"exact"`` (ESAM, default) or ``"zeroth_order"`` (ZO-ESAM).
    zeroth_order: the estimator's options for ``ascent="zeroth_order"``, a
      :class:`~zosam_jax.ZerothOrderOptions` (``None``: ``ZerothOrderOptions()``).
    guidance: ``None`` or ``"previous_gradient"`` (ZO-ESAM only; see above).
    perturb_leaves: which leaves may be perturbed: ``None`` (every floating-point leaf), an
      ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    seed: integer seed of the state's PRNG key (leaf draws, zeroth-order directions).
    has_aux: whether ``per_example_loss_fn`` returns ``(losses, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a
    :class:`~zosam_jax.SharpnessAwareState`.

  Examples:
    Least squares on a batch of four examples; the update's pass sees the two whose loss rises
    most at ``theta + eps``:

    >>> import jax.numpy as jnp, zosam_jax as zj
    >>> params = {"w": jnp.array([0.5, -0.5])}
    >>> batch = (jnp.eye(4, 2), jnp.array([1.0, 2.0, 0.0, 0.0]))
    >>> def per_example_loss_fn(p, b):
    ...     x, y = b
    ...     return 0.5 * (x @ p["w"] - y) ** 2
    >>> tx = zj.esam(rho=0.05, beta=1.0, gamma=0.5)
    >>> state = tx.init(params)
    >>> grads, state = tx.update(
    ...     None, state, params, per_example_loss_fn=per_example_loss_fn, batch=batch)
    >>> grads["w"].shape
    (2,)

  References:
    Du et al., "Efficient Sharpness-aware Minimization for Improved Training of Neural
    Networks", ICLR 2022 (arXiv 2110.03141); beta = 0.6 and gamma = 0.5 are its CIFAR settings.
  """
  check_rho("rho", rho)
  validation.check_interval("beta", beta, 0.0, 1.0, low_open=True, high_open=False)
  validation.check_interval("gamma", gamma, 0.0, 1.0, low_open=True, high_open=False)
  zo = _check_ascent(ascent, zeroth_order, guidance)

  def init_fn(params: PyTree) -> SharpnessAwareState:
    state = heads.init_state(SharpnessAwareState, seed, perturbation_mask=None)
    return state._replace(prior=perturb.initial_prior(params, guidance))

  def update_fn(
    updates: PyTree,
    state: SharpnessAwareState,
    params: PyTree | None = None,
    *,
    per_example_loss_fn: Callable[[PyTree, PyTree], Any] | None = None,
    batch: PyTree = None,
    weight_mask: PyTree | None = None,
    weight_mask_counts: PyTree | None = None,
    probe_loss_fn: LossFn | None = None,
    **extra: Any,
  ) -> tuple[PyTree, SharpnessAwareState]:
    del updates, extra
    if ascent == "exact":
      losses.refuse_probe_loss_fn("esam(ascent='exact')", probe_loss_fn)
    if per_example_loss_fn is None or batch is None or params is None:
      raise ValueError(
        "esam needs params and the extra arguments per_example_loss_fn= (params, batch) -> "
        "losses[B] and batch=."
      )
    selection = validation.resolve_leaf_selection("perturb_leaves", perturb_leaves, params)
    key, step_key = jax.random.split(state.key)
    swp_key, probe_key = jax.random.split(step_key)

    def mean_loss(p: PyTree, b: PyTree) -> tuple[jax.Array, tuple[jax.Array, Any]]:
      out = per_example_loss_fn(p, b)
      per_example, aux = out if has_aux else (out, None)
      return jnp.mean(per_example), (per_example, aux)

    def train_loss(
      p: PyTree,
    ) -> Any:  # the batch mean, in the loss_fn convention of the other heads
      mean, (_, aux) = mean_loss(p, batch)
      return (mean, aux) if has_aux else mean

    inputs = heads.StepInputs(
      params,
      train_loss,
      selection,
      weight_mask,
      weight_mask_counts,
      probe_loss_fn,
      has_aux=has_aux,
      guidance=guidance,
    )
    if ascent == "exact":
      (_, (losses0, _)), g = jax.value_and_grad(mean_loss, has_aux=True)(params, batch)
    else:
      g = inputs.ascent("zeroth_order", zo, probe_key, prior=state.prior)
      losses0 = mean_loss(params, batch)[1][0] if gamma < 1.0 else None

    leaves, treedef = jax.tree.flatten(params)
    joins = jax.random.bernoulli(swp_key, beta, (len(leaves),))
    swp = jax.tree.unflatten(treedef, [joins[i] for i in range(len(leaves))])
    adv = trees.add(params, inputs.perturbation(g, rho=rho / beta, perturbation_mask=swp))
    chosen = batch
    if gamma < 1.0:
      size = {x.shape[0] for x in jax.tree.leaves(batch)}
      if len(size) != 1:
        raise ValueError(
          f"batch leaves must share one leading example axis, got sizes {sorted(size)}."
        )
      (num,) = size
      keep = max(1, math.ceil(gamma * num))
      rise = mean_loss(adv, batch)[1][0] - losses0
      _, idx = jax.lax.top_k(rise, keep)
      chosen = jax.tree.map(lambda x: x[idx], batch)
    (value, (_, aux)), grads = jax.value_and_grad(mean_loss, has_aux=True)(adv, chosen)
    out = (value, aux) if has_aux else value
    return grads, inputs.advance(state, out, gradient=grads, key=key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# ----------------------------------------------------------------------------- adaptive m


class AdaptiveZOSAMState(NamedTuple):
  """State of :func:`adaptive_zo_sam`.

  Attributes:
    count: int32, steps taken.
    key: PRNG key (raw uint32 key data), split every step.
    value: float32 loss of the last step's pass at ``theta + eps``.
    aux: aux of that pass with ``has_aux=True`` (``None`` after init; see
      :class:`~zosam_jax.SharpnessAwareState`).
    num_directions: int32, the ``m`` the NEXT step will use (log it for the trace of m).
    noise: float32 running average of the relative probe noise ``kappa``.
    prior: with ``guidance="previous_gradient"``, the last exact gradient (as in
      ``SharpnessAwareState``); ``None`` otherwise.
    gradient: ``None`` unless requested; then the dense gradient at ``theta + eps``.
  """

  count: jax.Array  # type: ignore[assignment]  # shadows tuple.count, as optax's states do
  key: jax.Array
  value: jax.Array
  aux: Any
  num_directions: jax.Array
  noise: jax.Array
  prior: Any = None
  gradient: Any = None


def adaptive_zo_sam(
  rho: float = 0.05,
  max_directions: int = 8,
  *,
  noise_decay: float = 0.8,
  zeroth_order: ZerothOrderOptions | None = None,
  num_directions: int | None = None,
  smoothing: float | None = None,
  guidance: Guidance | None = None,
  perturb_leaves: LeafSelection = None,
  seed: int = 0,
  has_aux: bool = False,
) -> optax.GradientTransformationExtraArgs:
  """ZO-SAM whose number of directions follows the probes' own noise.

  ``zeroth_order.num_directions`` is the least ``m`` (``m_0``), ``max_directions`` the most; the
  scheme must be ``"central"`` and directions are probed one at a time.

  Each direction gives a central coefficient ``c_i`` and, with one extra forward at ``theta`` per
  step, a second difference ``nu_i`` (:class:`zosam_jax.ProbeInfo`). For a smooth loss ``nu_i``
  is ``O(delta)``; with evaluation noise it carries three times the noise variance of ``c_i``. So

  .. math:: kappa = (mean(nu^2)/3) / max(mean(c^2) - mean(nu^2)/3, 1e-12)

  is the ratio of noise to signal in the coefficients, and the estimate's variance is inflated by
  about ``1 + kappa`` over a noise-free one. The next step uses
  ``m = clip(round(m_0 (1 + kappa_bar)), m_0, max_directions)``, with ``kappa_bar`` an
  exponential average (``noise_decay``): the estimate keeps the variance of a noise-free
  ``m_0``-direction estimate while ``max_directions`` allows. The probe loop always has length
  ``max_directions`` (fixed shapes, no retrace); unused directions are skipped by ``lax.cond``.
  Cost: ``2m + 1`` forwards and one forward-backward.

  ``guidance="previous_gradient"``: direction 0 is the last exact gradient and the others are
  orthogonal to it (see :func:`zosam_jax.sharpness_aware`). ``kappa`` is computed over all active
  directions as above: the prior's probe has the same length ``delta sqrt(d)`` as a random one,
  so its second difference measures the same noise, while its coefficient is larger (it carries
  ``sqrt(d) |g.p|``); a good prior therefore lowers ``kappa`` and keeps ``m`` small, where extra
  random directions add little to the direction's quality.

  Args:
    rho: perturbation radius, ``>= 0`` (default 0.05).
    max_directions: the most directions a step may probe, ``>= m_0`` (default 8); also the
      length of the probe loop.
    noise_decay: weight in ``[0, 1)`` of the old average in ``kappa_bar`` (default 0.8; ``0``
      follows the last step's ``kappa`` alone).
    zeroth_order: the estimator's options, a :class:`~zosam_jax.ZerothOrderOptions`; its
      ``num_directions`` is ``m_0``, its scheme must be ``"central"``. ``None``:
      ``ZerothOrderOptions()`` (``m_0 = 1``).
    num_directions: short form that overrides ``zeroth_order.num_directions`` (``m_0``).
    smoothing: short form that overrides ``zeroth_order.smoothing`` (``delta > 0``).
    guidance: ``None`` (default) or ``"previous_gradient"`` (see above).
    perturb_leaves: which leaves are probed and perturbed: ``None`` (every floating-point leaf),
      an ``optax.masked``-style pytree of bools, or a callable ``params -> bools``.
    seed: integer seed of the state's PRNG key.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is an
    :class:`AdaptiveZOSAMState` (its ``num_directions`` is the next step's ``m``).

  References:
    Ji et al., ZO-SAM, CVPR 2026 (arXiv 2603.13115): the ZO-SAM step; the rule for ``m`` is this
    library's, not the paper's.
  """
  check_rho("rho", rho)
  zo = options.resolve(
    zeroth_order, ZerothOrderOptions(), num_directions=num_directions, smoothing=smoothing
  )
  min_directions = zo.num_directions
  validation.check_positive_int("max_directions", max_directions)
  if max_directions < min_directions:
    raise ValueError(
      f"max_directions must be >= num_directions ({min_directions}), got {max_directions}."
    )
  validation.check_choice("zeroth_order.scheme", zo.scheme, ("central",))
  perturb.check_guidance(guidance, "zeroth_order")
  validation.check_interval("noise_decay", noise_decay, 0.0, 1.0, low_open=False, high_open=True)
  validation.check_int("seed", seed)
  # The probe loop always has max_directions steps; the state's num_directions of them run.
  probe_options = dataclasses.replace(zo, num_directions=max_directions)

  def init_fn(params: PyTree) -> AdaptiveZOSAMState:
    return heads.new_state(
      AdaptiveZOSAMState,
      seed,
      num_directions=jnp.int32(min_directions),
      noise=jnp.zeros([], jnp.float32),
      prior=perturb.initial_prior(params, guidance),
    )

  def step(
    state: AdaptiveZOSAMState, inputs: heads.StepInputs
  ) -> tuple[PyTree, AdaptiveZOSAMState]:
    key, probe_key = jax.random.split(state.key)
    g_hat, info = estimators.dynamic_estimate(
      losses.probe_loss(inputs.loss_fn, inputs.probe_loss_fn),
      inputs.params,
      probe_key,
      probe_options,
      num_active=state.num_directions,
      weight_mask=inputs.weight_mask,
      weight_mask_counts=inputs.weight_mask_counts,
      selection=inputs.selection,
      has_aux=inputs.has_aux,
      prior=state.prior,
    )
    out, grads = inputs.exact_pass(g_hat, rho=rho)

    m = state.num_directions.astype(jnp.float32)
    noise_power = jnp.sum(info.second_differences**2) / m / 3.0
    signal = jnp.sum(info.coefficients**2) / m - noise_power
    kappa = noise_power / jnp.maximum(signal, trees.TINY)
    noise = noise_decay * state.noise + (1 - noise_decay) * kappa
    m_next = jnp.clip(
      jnp.round(min_directions * (1.0 + noise)), min_directions, max_directions
    ).astype(jnp.int32)
    return grads, inputs.advance(
      state,
      out,
      gradient=grads,
      key=key,
      num_directions=m_next,
      noise=noise,
    )

  return heads.transform(
    init_fn,
    step,
    name="adaptive_zo_sam",
    perturb_leaves=perturb_leaves,
    probes=True,
    has_aux=has_aux,
    guidance=guidance,
  )
