"""Dynamic sparse training: SET, RigL, MEST and DSR.

Each method starts from a sparse mask (random by default, at the target
distribution) and, at every mask-update step ``t`` of its :class:`UpdateSchedule`,
drops some active weights and grows as many inactive ones:

* SET:  drop the ``round(alpha(t) n_l)`` active weights of smallest ``|theta|`` in
  each leaf, grow as many at random.
* RigL: drop as SET, grow the inactive weights with the largest dense ``|grad L|``.
* MEST: drop by importance ``|theta| + gamma |grad L|`` (gradient of active weights
  only), grow at random. With ``soft_memory_bound=True`` the grown weights are
  kept *on top of* the target count until the next update, so they are trained
  before being judged: between updates a leaf holds ``n_l + round(alpha(t) n_l)``
  weights (the lower sparsity bound), and each update first prunes back to ``n_l``
  (the target, upper sparsity bound) by importance, then grows again; the update
  at ``end_step`` prunes to ``n_l`` and grows nothing.
* DSR:  one global magnitude threshold ``H``: every active weight with
  ``|theta| < H`` is pruned (``K`` weights); ``H`` is doubled if
  ``K < (1 - delta) N_p`` and halved if ``K > (1 + delta) N_p``, where the target
  prune count is ``N_p = round(alpha(t) * active)``; the ``K`` freed weights are
  regrown at random, allocated to leaves in proportion to their surviving weights
  (capped by each leaf's free slots; rounding by largest remainder). Per-leaf
  counts move; the total stays exact.

Growth ranks every weight inactive after the drop, the ones just dropped included. Weights
inactive before the update and grown by it start at exactly 0 with zeroed optimizer moments; a
weight dropped and grown back by the same update keeps its value and moments (see ``wrapper``).
Per-leaf counts (SET, RigL, MEST) and the total (DSR) are exact after every update: selections
rank by index, ties cannot change a count.

Patterns (``pattern=``, see :class:`~zosam_jax.sparse.SparseMethod`): under ``"channel"`` every
rule above runs on whole output channels, with a channel's score the mean of its weights' scores
and counts in channels (DSR's threshold compares the mean ``|theta|`` of a channel; its total
number of channels is exact, the number of weights follows the channels' sizes). Under ``"n:m"``
drops are chosen among the weights of a leaf as above, and every block of ``M`` then grows back to
exactly ``N`` among its own inactive weights (by ``|grad L|`` for RigL, at random otherwise), so
DSR's reallocation between leaves does not apply and MEST's soft memory bound is refused.

References:
  Mocanu et al., 2018, "Scalable training of artificial neural networks with adaptive
  sparse connectivity inspired by network science", Nat. Commun. 9, 2383
  (doi:10.1038/s41467-018-04316-3) (SET).
  Evci, Gale, Menick, Castro & Elsen, 2020, "Rigging the Lottery: Making All Tickets Winners",
  ICML (RigL).
  Yuan et al., 2021, "MEST: Accurate and Fast Memory-Economic Sparse Training Framework
  on the Edge", NeurIPS (arXiv 2110.14032) (MEST).
  Mostafa & Wang, 2019, "Parameter Efficient Training of Deep Convolutional Neural
  Networks by Dynamic Sparse Reparameterization", ICML (arXiv 1902.05967) (DSR).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast, get_args

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zosam_jax._src import groups
from zosam_jax._src.types import DropSchedule, MaskInit, PyTree
from zosam_jax.sparse import masks as mask_lib
from zosam_jax.sparse.schedules import UpdateSchedule
from zosam_jax.sparse.wrapper import MaskUpdate, SparseMethod, sparse_wrapper

Leaves = list[Any]  # the leaves of a pytree, in flatten order

#: The values of ``init``, the initial mask of a dynamic method.
INITS: tuple[MaskInit, ...] = get_args(MaskInit)

__all__ = ["DSR", "MEST", "SET", "RigL", "dsr", "mest", "rigl", "set_"]


def _round_count(x: jax.Array) -> jax.Array:
  return jnp.floor(x + 0.5).astype(jnp.int32)


def _drop_lowest(flags: list[bool], masks: Leaves, scores: Leaves, counts: list[Any]) -> Leaves:
  """Each prunable mask leaf without its ``count`` active weights of lowest score."""
  return [
    m & ~mask_lib.select_lowest(s, m, n) if f else m
    for f, m, s, n in zip(flags, masks, scores, counts, strict=True)
  ]


@dataclasses.dataclass(frozen=True)
class DynamicMethod(SparseMethod):
  """Common configuration of the dynamic methods (see :class:`SparseMethod` too).

  Attributes:
    update_every: steps between mask updates (>= 1).
    end_step: last step at which the mask may change (> ``start_step``); required.
    start_step: the first mask update is at ``start_step + update_every``.
    drop_fraction: fraction of active weights dropped at the first update, in (0, 1).
    drop_schedule: ``"cosine"`` (default), ``"linear"`` or ``"constant"``.
    init: initial mask, ``"random"`` (default) or ``"magnitude"``.
    seed: seed of the initial random mask and of random growth.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)`` (for gradients computed
      at mask updates).

  A method is its scores and its drop rule: :meth:`update_mask` drops with :meth:`drop` (by
  default the ``round(alpha(t) n_l)`` active weights of lowest :meth:`drop_scores`, ``|theta|``)
  and grows the inactive weights of highest :meth:`grow_scores` (by default at random).
  """

  update_every: int = 100
  end_step: int | None = None
  start_step: int = 0
  drop_fraction: float = 0.3
  drop_schedule: DropSchedule = "cosine"
  init: MaskInit = "random"
  seed: int = 0
  has_aux: bool = False

  # With ``sparsity_distribution="global"`` the initial mask is allocated globally; SET, RigL
  # and MEST updates then keep each leaf's count (only DSR moves weights between leaves).
  needs_gradient = False  # class attribute: whether mask updates read grad L

  def __post_init__(self) -> None:
    super().__post_init__()
    if self.end_step is None:
      raise ValueError(
        f"{type(self).__name__}: `end_step` is required (an int > start_step="
        f"{self.start_step}), e.g. 75% of the training steps."
      )
    self.schedule  # noqa: B018  (validates the schedule fields)
    if self.init not in INITS:
      raise ValueError(f"`init` must be one of {INITS}, got {self.init!r}.")

  @property
  def schedule(self) -> UpdateSchedule:
    """The :class:`~zosam_jax.sparse.UpdateSchedule` of this method's fields."""
    return UpdateSchedule(
      update_every=self.update_every,
      end_step=cast(int, self.end_step),  # required: __post_init__ refuses None
      start_step=self.start_step,
      drop_fraction=self.drop_fraction,
      drop_schedule=self.drop_schedule,
    )

  def initial_mask(self, params: PyTree, key: jax.Array) -> PyTree:
    """The mask training starts from: random or by magnitude (``init``), at the target counts.

    Args:
      params: the initial parameters.
      key: a ``jax.random`` key (used by ``init="random"``).

    Returns:
      A bool pytree shaped like ``params``.
    """
    if self.init == "magnitude":
      return self.magnitude_mask(params)
    return self.random_weight_mask(params, key)

  @property
  def keeps_leaf_counts(self) -> bool:
    """Whether every mask update keeps each leaf's number of active weights."""
    return True

  def init_method_state(self, flags: list[bool]) -> Callable[[PyTree], PyTree] | None:
    """The function that makes the method's state from the initial mask.

    Args:
      flags: the prunable flags, one per parameter leaf
        (:meth:`~zosam_jax.sparse.SparseMethod.prunable_flags`).

    Returns:
      ``mask -> method_state`` for the wrapper's ``init``, or ``None`` (no method state; the
      default).
    """
    return None

  def wrap(
    self, tx: optax.GradientTransformation, params: PyTree
  ) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` so it trains with this method's mask (see ``sparse_wrapper``).

    Args:
      tx: any optax transformation or chain, e.g. headed by ``zosam_jax.zo_sam``.
      params: parameters (or ``jax.ShapeDtypeStruct`` objects) of the model, used for
        the prunable leaves and the per-leaf counts.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`~zosam_jax.sparse.SparseState`; its ``init`` draws the initial mask.
    """
    flags = self.prunable_flags(params)

    def update_mask(
      step: jax.Array,
      mask: PyTree,
      masked_params: PyTree,
      grads: PyTree | None,
      key: jax.Array,
      method_state: PyTree,
    ) -> MaskUpdate:
      return self.update_mask(flags, step, mask, masked_params, grads, key, method_state)

    return sparse_wrapper(
      tx,
      init_mask=self.initial_mask,
      update_mask=update_mask,
      schedule=self.schedule,
      init_method_state=self.init_method_state(flags),
      needs_gradient=self.needs_gradient,
      has_aux=self.has_aux,
      seed=self.seed,
      mask_counts=self.static_mask_counts(params) if self.keeps_leaf_counts else None,
    )

  def update_mask(
    self,
    flags: list[bool],
    step: jax.Array,
    mask: PyTree,
    params: PyTree,
    grads: PyTree | None,
    key: jax.Array,
    method_state: PyTree,
  ) -> MaskUpdate:
    """One mask update at ``step``; ``params`` are already masked, ``grads`` is the dense
    gradient (``None`` unless the method sets ``needs_gradient``).

    Per prunable leaf: :meth:`drop` keeps some active groups, then as many inactive groups as
    it asks for grow: those of highest :meth:`grow_scores` (at random where it is ``None``).
    Groups are weights, or whole output channels under ``"channel"`` (their scores averaged over
    the channel). Under ``"n:m"`` :meth:`drop` works on weights and every block of ``M`` then
    grows back to exactly ``N`` among its own inactive weights.

    Args:
      flags: the prunable flags, one per parameter leaf.
      step: the wrapper's step count (traced).
      mask: the current bool weight mask, shaped like the parameters.
      params: the masked parameters.
      grads: the dense gradient, or ``None``.
      key: a ``jax.random`` key for random growth.
      method_state: the method's state (see :meth:`init_method_state`).

    Returns:
      A :class:`~zosam_jax.sparse.MaskUpdate`.
    """
    pattern = self.pattern
    m_leaves, treedef = jax.tree.flatten(mask)
    shapes = [m.shape for m in m_leaves]

    def units(leaves: Leaves, is_mask: bool = False) -> Leaves:
      # Per-group view of the prunable leaves (channels under "channel"); others as they are.
      return [
        groups.to_groups(x, pattern, is_mask=is_mask) if f else x
        for f, x in zip(flags, leaves, strict=True)
      ]

    u_masks = units(m_leaves, is_mask=True)
    d_leaves = units(jax.tree.leaves(self.drop_scores(params, grads)))
    kept, n_grow, method_state = self.drop(flags, step, u_masks, d_leaves, method_state)
    grow_scores = self.grow_scores(params, grads)
    if grow_scores is None:
      g_leaves = mask_lib.uniform_like(key, kept, flags)
    else:
      g_leaves = units(jax.tree.leaves(grow_scores))
    if pattern == "n:m":
      n, m = self.n_m
      grown = [
        groups.refill_blocks(k, gs, n, m) if f else jnp.zeros_like(k)
        for f, k, gs in zip(flags, kept, g_leaves, strict=True)
      ]
    else:
      grown = [
        mask_lib.select_highest(gs, ~k, c) if f else jnp.zeros_like(k)
        for f, k, gs, c in zip(flags, kept, g_leaves, n_grow, strict=True)
      ]
    new = [k | g for k, g in zip(kept, grown, strict=True)]

    def weights(leaves: Leaves) -> Leaves:
      return [
        groups.from_groups(x, shape, pattern) if f else x
        for f, x, shape in zip(flags, leaves, shapes, strict=True)
      ]

    unflat = jax.tree.unflatten
    return MaskUpdate(unflat(treedef, weights(new)), unflat(treedef, weights(grown)), method_state)

  def drop_scores(self, params: PyTree, grads: PyTree | None) -> PyTree:
    """Scores for :meth:`drop`, a pytree like ``params``: ``|theta|`` unless overridden.

    Args:
      params: the masked parameters.
      grads: the dense gradient, or ``None``.

    Returns:
      A pytree like ``params``; low scores are dropped first.
    """
    return jax.tree.map(jnp.abs, params)

  def grow_scores(self, params: PyTree, grads: PyTree | None) -> PyTree | None:
    """Scores of the inactive weights to grow (highest first); ``None`` grows at random.

    Args:
      params: the masked parameters.
      grads: the dense gradient, or ``None``.

    Returns:
      A pytree like ``params``, or ``None`` (the default: random growth).
    """
    return None

  def drop(
    self, flags: list[bool], step: jax.Array, masks: Leaves, scores: Leaves, method_state: PyTree
  ) -> tuple[Leaves, list[Any], PyTree]:
    """The drop half of an update, on the leaves of the mask and of :meth:`drop_scores`.

    Returns the kept weights per leaf (the mask itself on leaves that are not prunable), the
    number of weights to grow per prunable leaf and the new method state. By default each
    prunable leaf drops its ``round(alpha(t) n_active)`` active weights of lowest score and grows
    as many. Under ``pattern="channel"`` the prunable leaves arrive as per-channel views (a bool
    ``(C,)`` mask, mean scores), so "weights" above are channels; under ``"n:m"`` the grow counts
    are not used (each block grows back to ``N``).

    Args:
      flags: the prunable flags, one per mask leaf.
      step: the wrapper's step count (traced).
      masks: the mask's leaves (per-group views of the prunable ones).
      scores: the leaves of :meth:`drop_scores`, viewed the same way.
      method_state: the method's state.

    Returns:
      ``(kept, n_grow, method_state)``: the kept masks per leaf, the number of groups to grow
      per leaf (0 on non-prunable leaves), and the new method state.
    """
    frac = self.schedule.fraction(step)
    n_drop = [
      _round_count(frac * jnp.count_nonzero(m)) if f else 0
      for f, m in zip(flags, masks, strict=True)
    ]
    return _drop_lowest(flags, masks, scores, n_drop), n_drop, method_state


@dataclasses.dataclass(frozen=True)
class SET(DynamicMethod):
  """Sparse Evolutionary Training: drop smallest ``|theta|``, grow at random.

  Default drop schedule is constant (``drop_fraction=0.3``), as in the paper. The fields are
  those of :class:`DynamicMethod` and :class:`~zosam_jax.sparse.SparseMethod`.

  References:
    Mocanu et al., "Scalable training of artificial neural networks with adaptive sparse
    connectivity inspired by network science", Nat. Commun. 9, 2383 (2018).
  """

  drop_schedule: DropSchedule = "constant"


@dataclasses.dataclass(frozen=True)
class RigL(DynamicMethod):
  """Rigged Lottery: drop smallest ``|theta|``, grow largest dense ``|grad L|``.

  The dense gradient is the one the head of the wrapped chain computed in the same
  step (under a SAM-family head: the gradient at ``theta + eps``, the one the update
  follows; see ``docs/sparse_training.md``), else the incoming ``updates`` when the
  caller passes gradients, else ``jax.grad(loss_fn)`` at the masked parameters,
  evaluated only on mask-update steps. Defaults follow the paper: ERK, cosine drop
  fraction 0.3. The fields are those of :class:`DynamicMethod` and
  :class:`~zosam_jax.sparse.SparseMethod`.

  Usage (``zosam_jax.sparse`` has the whole step)::

    tx = zj.sparse.rigl(sparsity=0.9, update_every=100, end_step=30_000).wrap(tx, params)

  References:
    Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets Winners",
    ICML 2020.
  """

  needs_gradient = True

  def grow_scores(self, params: PyTree, grads: PyTree | None) -> PyTree | None:
    """RigL grows the inactive weights of largest dense ``|grad L|``: returns ``|grads|``."""
    return jax.tree.map(jnp.abs, grads)


@dataclasses.dataclass(frozen=True)
class MEST(DynamicMethod):
  """Memory-Economic Sparse Training: drop by ``|theta| + gamma |grad L|``, grow at random.

  Attributes:
    gamma: weight of the gradient magnitude in the importance score (a choice of
      this library; the paper tunes it).
    soft_memory_bound: MEST+EM&S: grown weights are held on top of the target count
      until the next update (see the module docstring). With it each leaf holds
      ``n_l + round(alpha(t) n_l)`` weights between updates and exactly ``n_l``
      after ``end_step``.

  The gradient only matters on active weights, so no dense gradient is needed
  between updates (the gradient at update steps is the one RigL grows from). The other fields
  are those of :class:`DynamicMethod` and :class:`~zosam_jax.sparse.SparseMethod`; the default
  ``drop_schedule`` is linear.

  References:
    Yuan et al., "MEST: Accurate and Fast Memory-Economic Sparse Training Framework on the
    Edge", NeurIPS 2021 (arXiv 2110.14032).
  """

  drop_schedule: DropSchedule = "linear"
  gamma: float = 1.0
  soft_memory_bound: bool = False

  needs_gradient = True

  def __post_init__(self) -> None:
    super().__post_init__()
    if self.soft_memory_bound and self.pattern == "n:m":
      raise ValueError(
        "soft_memory_bound must be False with pattern='n:m': holding grown weights on top of "
        "the target would break the N-of-M layout between updates."
      )

  @property
  def keeps_leaf_counts(self) -> bool:
    """``False`` with the soft memory bound (it holds extra weights between updates)."""
    return not self.soft_memory_bound  # the soft bound holds extra weights between updates

  @property
  def schedule(self) -> UpdateSchedule:
    """:class:`DynamicMethod`'s schedule, with a final update at ``end_step`` under the soft
    memory bound (to prune back to the target)."""
    return dataclasses.replace(super().schedule, final_update=self.soft_memory_bound)

  def init_method_state(self, flags: list[bool]) -> Callable[[PyTree], PyTree] | None:
    """With the soft memory bound, the base (target) count of each prunable leaf, in groups,
    taken from the initial mask; ``None`` otherwise. Arguments as
    :meth:`DynamicMethod.init_method_state`."""
    if not self.soft_memory_bound:
      return None

    pattern = self.pattern

    def base_counts(mask: PyTree) -> tuple[jax.Array, ...]:
      # In groups (channels under "channel"), the unit :meth:`drop` counts in.
      return tuple(
        jnp.count_nonzero(groups.to_groups(m, pattern, is_mask=True)).astype(jnp.int32)
        if f
        else jnp.zeros([], jnp.int32)
        for f, m in zip(flags, jax.tree.leaves(mask), strict=True)
      )

    return base_counts

  def drop_scores(self, params: PyTree, grads: PyTree | None) -> PyTree:
    """MEST's importance ``|theta| + gamma |grad L|`` (float32), dropped lowest first."""
    gamma = jnp.float32(self.gamma)
    return jax.tree.map(
      lambda p, g: jnp.abs(p).astype(jnp.float32) + gamma * jnp.abs(g).astype(jnp.float32),
      params,
      grads,
    )

  def drop(
    self, flags: list[bool], step: jax.Array, masks: Leaves, scores: Leaves, method_state: PyTree
  ) -> tuple[Leaves, list[Any], PyTree]:
    """:meth:`DynamicMethod.drop`; with the soft memory bound, prune each leaf back to its base
    count, then grow ``round(alpha(t) n_l)`` on top (none from ``end_step`` on)."""
    if not self.soft_memory_bound:
      return super().drop(flags, step, masks, scores, method_state)
    # Prune back to the base count n_l, then grow round(alpha(t) n_l) on top (none at end_step).
    frac = jnp.where(step >= cast(int, self.end_step), 0.0, self.schedule.fraction(step))
    n_drop = [
      jnp.count_nonzero(m).astype(jnp.int32) - base
      for m, base in zip(masks, method_state, strict=True)
    ]
    n_grow = [_round_count(frac * base) for base in method_state]
    return _drop_lowest(flags, masks, scores, n_drop), n_grow, method_state


def _allocate(total: jax.Array, weights: jax.Array, caps: jax.Array) -> jax.Array:
  """Integer allocation of ``total`` in proportion to ``weights``, at most ``caps``.

  Floors the proportional shares (capped), then hands the remainder out in order
  of largest fractional part, each leaf up to its cap. Sums exactly to ``total``
  whenever ``total <= sum(caps)``.
  """
  w = weights.astype(jnp.float32)
  w = jnp.where(w.sum() > 0, w, caps.astype(jnp.float32))
  share = total.astype(jnp.float32) * w / jnp.maximum(w.sum(), 1.0)
  base = jnp.minimum(jnp.floor(share).astype(jnp.int32), caps)
  rest = total - base.sum()
  room = caps - base
  order = jnp.argsort(-(share - jnp.floor(share)), stable=True)
  room_sorted = room[order]
  before = jnp.cumsum(room_sorted) - room_sorted
  give_sorted = jnp.clip(rest - before, 0, room_sorted)
  give = jnp.zeros_like(base).at[order].set(give_sorted)
  return base + give


@dataclasses.dataclass(frozen=True)
class DSR(DynamicMethod):
  """Dynamic Sparse Reparameterization: adaptive global threshold, proportional regrowth.

  Attributes:
    threshold_init: initial magnitude threshold ``H`` (paper: 0.001).
    threshold_tolerance: ``delta``, tolerance on the prune count (paper: 0.1).

  The drop fraction schedule gives the target prune count
  ``N_p = round(alpha(t) * active)``. The default ``drop_schedule`` is constant. The other
  fields are those of :class:`DynamicMethod` and :class:`~zosam_jax.sparse.SparseMethod`.

  References:
    Mostafa & Wang, "Parameter Efficient Training of Deep Convolutional Neural Networks by
    Dynamic Sparse Reparameterization", ICML 2019 (arXiv 1902.05967).
  """

  drop_schedule: DropSchedule = "constant"
  threshold_init: float = 1e-3
  threshold_tolerance: float = 0.1

  def __post_init__(self) -> None:
    super().__post_init__()
    if not self.threshold_init > 0:
      raise ValueError(f"`threshold_init` must be > 0, got {self.threshold_init!r}.")
    if not 0 <= self.threshold_tolerance < 1:
      raise ValueError(
        f"`threshold_tolerance` must be in [0, 1), got {self.threshold_tolerance!r}."
      )

  @property
  def keeps_leaf_counts(self) -> bool:
    """``True`` only under ``"n:m"``: otherwise DSR moves weights between leaves."""
    # DSR moves weights between layers, except under "n:m" where each block keeps N.
    return self.pattern == "n:m"

  def init_method_state(self, flags: list[bool]) -> Callable[[PyTree], PyTree] | None:
    """The state is the threshold ``H``, a float32 scalar starting at ``threshold_init``.
    Arguments as :meth:`DynamicMethod.init_method_state`."""
    value = self.threshold_init
    return lambda mask: jnp.asarray(value, jnp.float32)

  def drop(
    self, flags: list[bool], step: jax.Array, masks: Leaves, scores: Leaves, method_state: PyTree
  ) -> tuple[Leaves, list[Any], PyTree]:
    """DSR's drop: every active weight below the threshold goes; the threshold doubles or
    halves towards the target prune count, and the freed weights are reallocated to leaves in
    proportion to their survivors. Arguments and result as :meth:`DynamicMethod.drop`."""
    threshold = method_state
    idx = [i for i, f in enumerate(flags) if f]
    kept = [m & ~(s < threshold) if f else m for f, m, s in zip(flags, masks, scores, strict=True)]
    active = jnp.stack([jnp.count_nonzero(masks[i]) for i in idx]).astype(jnp.int32)
    surviving = jnp.stack([jnp.count_nonzero(kept[i]) for i in idx]).astype(jnp.int32)
    sizes = jnp.asarray([int(np.prod(masks[i].shape)) for i in idx], jnp.int32)
    n_pruned = active.sum() - surviving.sum()
    target = _round_count(self.schedule.fraction(step) * active.sum())
    tol = self.threshold_tolerance
    new_threshold = jnp.where(
      n_pruned < (1.0 - tol) * target,
      2.0 * threshold,
      jnp.where(n_pruned > (1.0 + tol) * target, 0.5 * threshold, threshold),
    )
    grow = _allocate(n_pruned, surviving, sizes - surviving)
    n_grow: list[Any] = [0] * len(masks)
    for j, i in enumerate(idx):
      n_grow[i] = grow[j]
    return kept, n_grow, new_threshold.astype(jnp.float32)


# Lowercase factories, optax style: the classes themselves (``sparsity`` is their first field),
# e.g. ``rigl(0.9, update_every=100, end_step=30_000)``. ``set_``: ``"set"`` in the registry.
set_ = SET
rigl = RigL
mest = MEST
dsr = DSR
