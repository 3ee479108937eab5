"""The sparse-training wrapper: an optax transform that owns the weight mask.

``sparse_wrapper(tx, ...)`` turns any optax transform ``tx`` (an SGD chain, or a
chain headed by ``zosam_jax.sam``/``zo_sam``/``sparse_sam``) into a sparse one.
At every step, with current mask ``m`` and parameters ``theta``:

1. ``tx`` is called on the masked gradient ``m * g`` (when gradients are given),
   the masked parameters ``m * theta``, with ``weight_mask=m`` and every extra
   argument (``loss_fn``, ``probe_loss_fn`` ...) passed through;
2. if the step is a mask-update step, the method computes a new mask ``m'``
   (inside ``jax.lax.cond``: no retrace, no host round trip); otherwise ``m' = m``. A method
   that reads the dense gradient (RigL, MEST) takes the one step 1 already computed: the head's
   (its state's ``gradient`` slot, requested by ``init``), else the incoming
   gradients; only a chain with neither (a fully zeroth-order head) makes the
   wrapper compute ``jax.grad(loss_fn)`` itself, inside the cond;
3. the returned update is ``u_i`` (from ``tx``) on the kept set ``K = m and m'`` (weights
   active before and after the update) and ``-theta_i`` elsewhere, so that after
   ``optax.apply_updates`` every pruned weight is exactly 0 and every new connection
   (``m'_i and not m_i``) starts at exactly 0;
4. on mask-update steps every array of the inner state shaped like a parameter
   (momentum ``trace``, Adam ``mu``/``nu``, ...) is zeroed outside ``K``, so new
   connections start with fresh optimizer moments.

A weight that an update drops and grows back (growth ranks every weight inactive after the
drop, the dropped ones included) is in ``K``: it keeps its value and its moments, as in the
RigL reference implementation, which treats only weights inactive before the update as new
connections. ``K`` lies in both masks, so on it the update is the one ``tx`` computed on
the network of mask ``m``: on a mask-update step the same pass gives the step and
the growth gradient (as in RigL implementations that step, then update the mask).
Because step 3 applies from the first call, a dense initial ``params`` becomes
sparse after the first update: there is no separate "apply mask" call to forget.
The sharpness-aware head at the start of ``tx`` evaluates ``loss_fn`` at the
masked parameters, so even the first step's gradient is that of the sparse net.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zosam_jax._src import gradient_slot, groups
from zosam_jax._src.types import LeafSelection, Pattern, PyTree, SparsityDistribution, TreeDef
from zosam_jax.sparse import distributions as dist_lib
from zosam_jax.sparse import masks as mask_lib
from zosam_jax.sparse.schedules import UpdateSchedule

__all__ = ["MaskUpdate", "SparseMethod", "SparseState", "sparse_wrapper"]


class SparseState(NamedTuple):
  """State of a sparse-training wrapper.

  Attributes:
    sparse_step: int32 scalar, number of updates made so far.
    weight_mask: pytree of bool arrays shaped like the parameters, ``True`` on
      active weights (all ``True`` on non-prunable leaves).
    sparse_rng: PRNG key (``uint32[2]``) for random growth, split at every mask update.
    method_state: method-specific pytree (DSR: the magnitude threshold; MEST with a
      soft memory bound: the base count per leaf; ``()`` otherwise).
    inner_state: state of the wrapped transformation.
  """

  sparse_step: jax.Array
  weight_mask: PyTree
  sparse_rng: jax.Array
  method_state: PyTree
  inner_state: optax.OptState


class MaskUpdate(NamedTuple):
  """Result of one mask update.

  Attributes:
    weight_mask: the new mask.
    grown: bool pytree, ``True`` on the weights the update's growth selected (among those
      inactive after its drop, so it may hold weights it dropped). The wrapper does not read
      it: it restarts the weights inactive before the update and active after (at 0, with
      zero optimizer moments), and only those.
    method_state: the method's new state.
  """

  weight_mask: PyTree
  grown: PyTree
  method_state: PyTree


# (step, mask, masked_params, grads or None, key, method_state) -> MaskUpdate
UpdateMaskFn = Callable[[jax.Array, PyTree, PyTree, PyTree, jax.Array, PyTree], MaskUpdate]
# The mask update's cond: (mask, rng, method_state, dense gradient or None) in,
# (new mask, kept weights, rng, method_state) out.
_CondOperand = tuple[PyTree, jax.Array, PyTree, PyTree | None]
_CondResult = tuple[PyTree, PyTree, jax.Array, PyTree]


def _param_like(params: PyTree) -> Callable[[Any], bool]:
  params_def = jax.tree.structure(params)
  shapes = [tuple(np.shape(p)) for p in jax.tree.leaves(params)]

  def is_param_like(node: Any) -> bool:
    node_def: TreeDef = jax.tree.structure(node)
    if node_def != params_def:
      return False
    leaves = jax.tree.leaves(node)
    return all(
      hasattr(x, "shape")
      and tuple(x.shape) == s
      # jax.numpy's stub omits the None that issubdtype accepts (a leaf without a dtype).
      and jnp.issubdtype(getattr(x, "dtype", None), jnp.inexact)  # type: ignore[arg-type]
      for x, s in zip(leaves, shapes, strict=True)
    )

  return is_param_like


def reset_moments(inner_state: PyTree, keep: PyTree, params: PyTree) -> PyTree:
  """Zeroes every parameter-shaped subtree of ``inner_state`` where ``keep`` is False.

  A subtree is parameter-shaped when it has the tree structure of ``params``, the
  same leaf shapes and floating dtypes (optax's ``TraceState.trace``,
  ``ScaleByAdamState.mu``/``nu``...); boolean masks (e.g. Sparse SAM's) are left alone.

  Args:
    inner_state: an optimizer state (any pytree).
    keep: a bool pytree shaped like ``params``: where moments survive.
    params: the parameters, for the structure, shapes and dtypes to look for.

  Returns:
    ``inner_state`` with those subtrees zeroed where ``keep`` is ``False``.
  """
  is_param_like = _param_like(params)

  def reset(node: Any) -> Any:
    if is_param_like(node):
      return jax.tree.map(lambda x, k: jnp.where(k, x, jnp.zeros_like(x)), node, keep)
    return node

  return jax.tree.map(reset, inner_state, is_leaf=is_param_like)


def _where(mask: PyTree, a: PyTree, b: Callable[[jax.Array], jax.Array]) -> PyTree:
  return jax.tree.map(lambda m, x: jnp.where(m, x, b(x)), mask, a)


def sparse_wrapper(
  tx: optax.GradientTransformation,
  *,
  init_mask: Callable[[PyTree, jax.Array], PyTree],
  update_mask: UpdateMaskFn | None = None,
  schedule: UpdateSchedule | None = None,
  init_method_state: Callable[[PyTree], PyTree] | None = None,
  needs_gradient: bool = False,
  has_aux: bool = False,
  seed: int = 0,
  mask_counts: PyTree | None = None,
) -> optax.GradientTransformationExtraArgs:
  """Wraps ``tx`` so that it trains a sparse network (see the module docstring).

  Args:
    tx: the inner transformation; plain ``GradientTransformation`` are given
      extra-argument support, so they ignore ``loss_fn``/``weight_mask``.
    init_mask: ``(params, key) -> weight mask`` called by ``init``.
    update_mask: the dynamic method's mask update, or ``None`` for a static mask.
    schedule: when ``update_mask`` runs (required with ``update_mask``).
    init_method_state: ``initial mask -> method_state`` (default: ``()``).
    needs_gradient: whether ``update_mask`` needs the dense gradient. It is the
      gradient the head of ``tx`` computed in the same step (``init`` requests the
      head state's ``gradient`` slot), else the incoming ``updates`` when they are
      given, else ``jax.grad(loss_fn)`` at the masked parameters, computed only on
      mask-update steps.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)`` (for that last case).
    seed: seed of the PRNG key for the initial mask and random growth.
    mask_counts: static Python ints like ``params``, the number of ones of every mask leaf,
      when the method keeps them fixed. They are passed on as ``weight_mask_counts=`` so
      zeroth-order heads draw directions only on active weights (``zosam_jax.rge``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose state is a :class:`SparseState`.
  """
  if update_mask is not None and schedule is None:
    raise ValueError("`schedule` is required when `update_mask` is given.")
  inner = optax.with_extra_args_support(tx)

  def init_fn(params: PyTree) -> SparseState:
    key_mask, key_run = jax.random.split(jax.random.PRNGKey(seed))
    mask = jax.jit(init_mask)(params, key_mask)  # one compiled program, also when eager
    mask_lib.validate_mask(mask, params)
    mask = jax.tree.map(lambda m: jnp.asarray(m, dtype=jnp.bool_), mask)
    masked = _where(mask, params, jnp.zeros_like)
    method_state = () if init_method_state is None else init_method_state(mask)
    inner_state = inner.init(masked)
    if needs_gradient and update_mask is not None:
      inner_state = gradient_slot.request(inner_state, masked)
    return SparseState(
      sparse_step=jnp.zeros([], jnp.int32),
      weight_mask=mask,
      sparse_rng=key_run,
      method_state=method_state,
      inner_state=inner_state,
    )

  def update_fn(
    updates: PyTree,
    state: SparseState,
    params: PyTree | None = None,
    *,
    loss_fn: Callable[..., Any] | None = None,
    **extra_args: Any,
  ) -> tuple[PyTree, SparseState]:
    if params is None:
      raise ValueError("A sparse wrapper needs `params` in update(updates, state, params).")
    mask = state.weight_mask
    rng = state.sparse_rng
    method_state = state.method_state
    step = state.sparse_step
    # Whether the head keeps its gradient (a structural fact of the state: static under jit).
    head_keeps_gradient = gradient_slot.read(state.inner_state) is not None
    if (
      update_mask is not None
      and needs_gradient
      and updates is None
      and loss_fn is None
      and not head_keeps_gradient
    ):
      raise ValueError(
        "This sparse method needs the dense gradient at mask updates: pass "
        "gradients as `updates` or a `loss_fn=` extra argument."
      )

    # 1. The inner transform, on the current mask.
    inner_params = _where(mask, params, jnp.zeros_like)
    inner_updates = None if updates is None else _where(mask, updates, jnp.zeros_like)
    if loss_fn is not None:
      extra_args["loss_fn"] = loss_fn
    if mask_counts is not None:
      extra_args["weight_mask_counts"] = mask_counts
    out, inner_state = inner.update(
      inner_updates, state.inner_state, inner_params, weight_mask=mask, **extra_args
    )

    # 2. The mask update, from the gradient of step 1 where there is one.
    if update_mask is None:
      new_mask, keep = mask, mask
    else:
      assert schedule is not None  # refused above: update_mask needs a schedule
      do_update = schedule.is_update_step(step)
      dense = None
      if needs_gradient:
        # The head's gradient is the one its update follows (at theta + eps under a SAM
        # head): reusing it saves a forward-backward, which inside the cond also misses
        # XLA:CPU's fast convolution kernels (a RigL update step cost ~5.7x a normal one).
        dense = gradient_slot.read(inner_state) if head_keeps_gradient else updates

      def _update(operand: _CondOperand) -> _CondResult:
        mask_, rng_, mstate_, dense_ = operand
        rng_, key = jax.random.split(rng_)
        grads = dense_
        if needs_gradient and grads is None:
          assert loss_fn is not None  # refused above: no gradient, no updates, no loss_fn
          grads = jax.grad(loss_fn, has_aux=has_aux)(inner_params)
          if has_aux:
            grads = grads[0]
        res = update_mask(step, mask_, inner_params, grads, key, mstate_)
        # Active before and after: dropped-and-regrown weights keep value and moments.
        keep_ = jax.tree.map(jnp.logical_and, res.weight_mask, mask_)
        return res.weight_mask, keep_, rng_, res.method_state

      def _skip(operand: _CondOperand) -> _CondResult:
        mask_, rng_, mstate_, _ = operand
        return mask_, mask_, rng_, mstate_

      new_mask, keep, rng, method_state = jax.lax.cond(
        do_update, _update, _skip, (mask, rng, method_state, dense)
      )
      inner_state = jax.lax.cond(
        do_update,
        lambda s: reset_moments(s, keep, params),
        lambda s: s,
        inner_state,
      )

    out = jax.tree.map(lambda k, u, p: jnp.where(k, u, -p).astype(u.dtype), keep, out, params)
    new_state = SparseState(
      sparse_step=step + 1,
      weight_mask=new_mask,
      sparse_rng=rng,
      method_state=method_state,
      inner_state=inner_state,
    )
    return out, new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class SparseMethod:
  """Fields shared by every sparse method: target sparsity, its layout and its pattern.

  Attributes:
    sparsity: fraction of pruned weights over the prunable leaves, in [0, 1). ``None`` (the
      default) means 0.9, or ``1 - N/M`` with ``pattern="n:m"``; with ``"n:m"`` any other value is
      refused, since the pattern fixes the sparsity.
    sparsity_distribution: ``"uniform"``, ``"erk"`` or ``"global"`` (see ``distributions``); with
      ``"channel"`` it distributes output channels (a leaf keeps ``round(density_l C_l)`` of its
      ``C_l`` channels; ``"global"``: ``round((1 - s) sum_l C_l)`` channels ranked together);
      ``"n:m"`` does not use it (every prunable leaf keeps ``N/M`` of its weights).
    prunable: which leaves may be pruned: ``None`` (kernels, ``ndim >= 2``), an
      ``optax.masked``-style bool pytree, or a callable ``params -> bool pytree``.
    first_layer_dense: keep the first prunable leaf (flatten order) dense.
    last_layer_dense: keep the last prunable leaf (flatten order) dense.
    erk_power: exponent of the ERK raw density (1.0 is ERK).
    pattern: ``"unstructured"`` (single weights), ``"channel"`` (whole output channels: the last
      axis of a Dense or Conv kernel) or ``"n:m"`` (``N`` of every ``M`` consecutive weights along
      the input axis). Scores are averaged over a channel and channels are kept, dropped and grown
      whole; under ``"n:m"`` every block holds exactly ``N`` weights after every step. The groups
      are those of Sparse SAM's perturbation masks (``zosam_jax._src.groups``).
    n_m: ``(N, M)`` for ``pattern="n:m"``, ``1 <= N <= M``; every prunable leaf's input axis must
      be divisible by ``M`` (keep the others dense with ``prunable`` / ``first_layer_dense``).
  """

  sparsity: float | None = None  # a float after __post_init__ (the cast()s below)
  sparsity_distribution: SparsityDistribution = "erk"
  prunable: LeafSelection = None
  first_layer_dense: bool = False
  last_layer_dense: bool = False
  erk_power: float = 1.0
  pattern: Pattern = "unstructured"
  n_m: tuple[int, int] = (2, 4)

  def __post_init__(self) -> None:
    n_m: tuple[int, ...] = groups.check_pattern(self.pattern, self.n_m)
    if self.sparsity is not None:
      dist_lib.validate_sparsity(self.sparsity)
    if self.pattern == "n:m":
      n_m = tuple(n_m)
      implied = 1.0 - n_m[0] / n_m[1]
      if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
        raise ValueError(
          f"sparsity must be 1 - N/M = {implied:g} with pattern='n:m' and n_m={n_m} (or None, "
          f"which means that), got {self.sparsity!r}."
        )
      object.__setattr__(self, "n_m", n_m)
      object.__setattr__(self, "sparsity", implied)
    elif self.sparsity is None:
      object.__setattr__(self, "sparsity", 0.9)
    dist_lib.validate_distribution(self.sparsity_distribution)

  # -- layout ---------------------------------------------------------------
  def _layout(self, params: PyTree) -> tuple[list[bool], list[tuple[int, ...]], list[str]]:
    """Prunable flags, and the shapes and names of the prunable leaves (checked for the
    pattern)."""
    spec = mask_lib.prunable_leaves(
      params,
      self.prunable,
      first_layer_dense=self.first_layer_dense,
      last_layer_dense=self.last_layer_dense,
    )
    flags = jax.tree.leaves(spec)
    if not any(flags):
      if self.sparsity_distribution == "erk":
        raise ValueError(
          "sparsity_distribution='erk' needs at least one prunable leaf, and params "
          "have none under `prunable` (default: leaves with ndim >= 2)."
        )
      raise ValueError(
        f"{type(self).__name__}: params have no prunable leaf under `prunable` "
        "(default: leaves with ndim >= 2), so this sparse method would silently "
        "train a dense network."
      )
    leaves = jax.tree.leaves(params)
    names = mask_lib.leaf_paths(params)
    pr = [i for i, f in enumerate(flags) if f]
    shapes = [tuple(np.shape(leaves[i])) for i in pr]
    pr_names = [names[i] for i in pr]
    if self.pattern == "n:m":
      for shape, name in zip(shapes, pr_names, strict=True):
        groups.check_n_m_shape(shape, self.n_m, f"prunable leaf '{name}'")
    return flags, shapes, pr_names

  def _kept_per_block(self, sparsity: float) -> int:
    """``N`` at ``sparsity`` under ``"n:m"`` (``M (1 - s)`` rounded: LTH's rounds pass through
    ``N_r:M``)."""
    m = self.n_m[1]
    return min(m, max(0, int(round(m * (1.0 - sparsity)))))

  def _group_counts(
    self, shapes: list[tuple[int, ...]], names: list[str], sparsity: float
  ) -> list[int] | int:
    if self.pattern == "n:m":
      n, m = self._kept_per_block(sparsity), self.n_m[1]
      return [int(np.prod(s)) * n // m for s in shapes]
    counts = dist_lib.keep_counts(
      shapes,
      sparsity,
      self.sparsity_distribution,
      self.erk_power,
      num_groups=[groups.num_groups(s, self.pattern) for s in shapes],
    )
    if self.pattern == "channel":
      empty = (
        [n for n, c in zip(names, counts, strict=True) if c == 0]
        if isinstance(counts, list)
        else ([] if counts else ["all prunable leaves together"])
      )
      if empty:
        raise ValueError(
          f"sparsity={sparsity:g} with pattern='channel' and sparsity_distribution="
          f"'{self.sparsity_distribution}' keeps no output channel of {', '.join(empty)}; lower "
          "sparsity or keep those leaves dense (prunable, first_layer_dense, last_layer_dense)."
        )
    return counts

  def prunable_flags(self, params: PyTree) -> list[bool]:
    """Which leaves this method prunes, checked against the pattern.

    Args:
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      One bool per leaf of ``params``, in flatten order.

    Raises:
      ValueError: if no leaf is prunable, or if the pattern cannot apply to the prunable leaves
        (``"n:m"``: an input axis not divisible by ``M``; ``"channel"``: a leaf left without a
        channel).
    """
    flags, shapes, names = self._layout(params)
    self._group_counts(shapes, names, cast(float, self.sparsity))
    return flags

  def mask_from_scores(
    self, params: PyTree, scores: PyTree, sparsity: float | None = None
  ) -> PyTree:
    """Weight mask keeping the highest ``scores`` at the target counts.

    Args:
      params: parameters (for shapes and the prunable leaves).
      scores: pytree like ``params`` (entries of non-prunable leaves are ignored).
        Give ``-inf`` to entries that must not be kept (used by LTH). Under ``"channel"`` a
        channel's score is the mean of its entries'.
      sparsity: overrides ``self.sparsity`` (under ``"n:m"``: every block keeps
        ``round(M (1 - sparsity))``).

    Returns:
      Bool pytree; each prunable leaf (``"global"``: all of them together) keeps
      exactly the target count of weights (channels under ``"channel"``; ``N`` per block under
      ``"n:m"``).
    """
    sparsity = cast(float, self.sparsity) if sparsity is None else sparsity
    flags, shapes, names = self._layout(params)
    leaves, treedef = jax.tree.flatten(params)
    score_leaves = jax.tree.leaves(scores)
    if len(score_leaves) != len(leaves):
      raise ValueError("`scores` does not match params.")
    pr = [i for i, f in enumerate(flags) if f]
    counts = self._group_counts(shapes, names, sparsity)
    out = [jnp.ones(np.shape(x), jnp.bool_) for x in leaves]
    pattern = self.pattern
    if pattern == "n:m":
      n = self._kept_per_block(sparsity)
      for i in pr:
        out[i] = groups.top_n_per_block(score_leaves[i], n, self.n_m[1])
    elif self.sparsity_distribution == "global":
      units = [groups.to_groups(jnp.asarray(score_leaves[i], jnp.float32), pattern) for i in pr]
      # One total for "global" (see distributions.keep_counts), else one count per leaf.
      total = cast(int, counts)
      for i, piece in zip(pr, groups.keep_top_k_jointly(units, total), strict=True):
        out[i] = groups.from_groups(piece, np.shape(leaves[i]), pattern)
    else:
      for i, k in zip(pr, cast(list[int], counts), strict=True):
        unit = groups.to_groups(jnp.asarray(score_leaves[i], jnp.float32), pattern)
        out[i] = groups.from_groups(groups.keep_top_k(unit, k), np.shape(leaves[i]), pattern)
    return jax.tree.unflatten(treedef, out)

  def target_counts(self, params: PyTree) -> list[int] | int:
    """Kept groups per prunable leaf (or in total, for ``"global"``): weights, or output
    channels under ``"channel"``; under ``"n:m"`` the weights of each leaf, ``N/M`` of it.

    Args:
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      A list of ints, one per prunable leaf in flatten order, or one int for ``"global"``.
    """
    _, shapes, names = self._layout(params)
    return self._group_counts(shapes, names, cast(float, self.sparsity))

  def static_mask_counts(self, params: PyTree) -> PyTree | None:
    """Ones per mask leaf as static ints like ``params`` (``None`` for ``"global"``, whose
    per-leaf counts depend on the data; ``"n:m"`` always has them).

    Args:
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``).

    Returns:
      A pytree of Python ints with the structure of ``params`` (a non-prunable leaf counts all
      its entries), or ``None``.
    """
    if self.sparsity_distribution == "global" and self.pattern != "n:m":
      return None
    flags, shapes, _ = self._layout(params)
    counts = iter(cast(list[int], self.target_counts(params)))  # per leaf: not "global" here
    sizes = iter(groups.group_size(s, self.pattern) for s in shapes)
    leaves, treedef = jax.tree.flatten(params)
    out = [
      next(counts) * next(sizes) if f else int(np.size(x))
      for x, f in zip(leaves, flags, strict=True)
    ]
    return jax.tree.unflatten(treedef, out)

  def random_weight_mask(self, params: PyTree, key: jax.Array) -> PyTree:
    """Uniformly random mask at the target counts.

    Args:
      params: the parameters.
      key: a ``jax.random`` key.

    Returns:
      A bool pytree shaped like ``params`` (all ``True`` on non-prunable leaves).

    Examples:
      >>> import jax, jax.numpy as jnp, zosam_jax as zj
      >>> params = {"kernel": jnp.ones((4, 4)), "bias": jnp.zeros(4)}
      >>> method = zj.sparse.rigl(
      ...     sparsity=0.75, sparsity_distribution="uniform", end_step=100)
      >>> mask = method.random_weight_mask(params, jax.random.PRNGKey(0))
      >>> int(mask["kernel"].sum()), int(mask["bias"].sum())  # 4 of 16; biases stay dense
      (4, 4)
    """
    leaves, treedef = jax.tree.flatten(params)
    flags = self.prunable_flags(params)
    drawn = mask_lib.uniform_like(key, leaves, flags)
    scores = [
      jnp.zeros(np.shape(x)) if u is None else u for u, x in zip(drawn, leaves, strict=True)
    ]
    return self.mask_from_scores(params, jax.tree.unflatten(treedef, scores))

  def magnitude_mask(self, params: PyTree) -> PyTree:
    """Mask keeping the largest ``|theta|`` at the target counts.

    Args:
      params: the parameters.

    Returns:
      A bool pytree shaped like ``params`` (all ``True`` on non-prunable leaves).
    """
    return self.mask_from_scores(params, jax.tree.map(jnp.abs, params))
