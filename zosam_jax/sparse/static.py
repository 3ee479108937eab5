"""Static sparse training: SNIP, GraSP and LTH masks, fixed during training.

* SNIP keeps the weights of largest connection sensitivity ``|theta ⊙ grad L(theta)|``
  on one batch at initialisation.
* GraSP scores ``S = -theta ⊙ H g`` with ``g = grad L_T(theta)`` and ``H`` the Hessian
  of ``L_T``, the cross-entropy of temperature-scaled logits ``z / T`` on a batch
  with ``samples_per_class`` examples of each class; it removes the weights with the
  highest scores (whose removal would reduce the gradient flow the least). ``H g`` is
  a Hessian-vector product: ``jax.jvp`` of ``jax.grad`` (forward over reverse), no
  Hessian is formed.
* LTH (iterative magnitude pruning with rewinding): train, prune the smallest
  ``|theta|`` among surviving weights to the round's sparsity
  ``s_r = 1 - (1 - s)^(r / R)``, rewind the surviving weights to their values at an
  early step ``k``, repeat. The round loop belongs to the training script; this
  module gives :meth:`LTH.prune` and :meth:`LTH.rewind`.

Every method's ``wrap(tx, params, ...)`` returns the same wrapper as the dynamic
methods, with the mask held fixed. With ``pattern="channel"`` the scores are averaged over each
output channel and whole channels are kept; with ``"n:m"`` each block of ``M`` keeps its ``N``
highest-scoring weights, and LTH's round ``r`` keeps ``N_r = round(M (N/M)^(r/R))`` per block (the
geometric schedule of the unstructured rounds, reaching ``N`` at ``r = R``).

References:
  Lee, Ajanthan & Torr, 2019, "SNIP: Single-shot Network Pruning based on Connection
  Sensitivity", ICLR (arXiv 1810.02340).
  Wang, Zhang & Grosse, 2020, "Picking Winning Tickets Before Training by Preserving Gradient
  Flow", ICLR (arXiv 2002.07376) (GraSP).
  Frankle & Carbin, 2019, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable
  Neural Networks", ICLR (arXiv 1803.03635); Frankle et al., 2020, "Linear Mode Connectivity and the
  Lottery Ticket Hypothesis", ICML (rewinding to step k).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zosam_jax._src import curvature
from zosam_jax._src.types import PyTree, SparsityDistribution
from zosam_jax.sparse import masks as mask_lib
from zosam_jax.sparse.wrapper import SparseMethod, sparse_wrapper

__all__ = [
  "GraSP",
  "LTH",
  "SNIP",
  "grasp",
  "grasp_scores",
  "lth",
  "samples_per_class",
  "snip",
  "snip_scores",
]


def snip_scores(loss_fn: Callable[..., Any], params: PyTree, *, has_aux: bool = False) -> PyTree:
  """Connection sensitivity ``|theta ⊙ grad L(theta)|``, SNIP's score.

  Args:
    loss_fn: ``params -> loss`` (or ``(loss, aux)`` with ``has_aux=True``) on one batch.
    params: the parameters at initialisation.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    A pytree like ``params``; the highest scores are kept.

  References:
    Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
    (arXiv 1810.02340).
  """
  grads = curvature.gradient(loss_fn, params, has_aux)
  return jax.tree.map(lambda p, g: jnp.abs(p * g), params, grads)


def grasp_scores(loss_fn: Callable[..., Any], params: PyTree, *, has_aux: bool = False) -> PyTree:
  """GraSP scores ``-theta ⊙ H g`` with ``g = grad L(theta)``.

  ``loss_fn`` should already include the logit temperature (see :meth:`GraSP.compute_mask`).
  High scores are removed first. Cost: one gradient and one Hessian-vector product.

  Args:
    loss_fn: ``params -> loss`` (or ``(loss, aux)`` with ``has_aux=True``) on the scoring batch.
    params: the parameters at initialisation.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    A pytree like ``params``.

  References:
    Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow",
    ICLR 2020 (arXiv 2002.07376).
  """
  g = jax.lax.stop_gradient(curvature.gradient(loss_fn, params, has_aux))
  hg = curvature.hessian_vector_product(loss_fn, params, g, has_aux=has_aux)
  return jax.tree.map(lambda p, v: -p * v, params, hg)


def samples_per_class(labels: Any, per_class: int, num_classes: int | None = None) -> np.ndarray:
  """Indices of the first ``per_class`` examples of each class in ``labels`` (host side).

  Args:
    labels: 1-D integer class ids (anything ``np.asarray`` takes).
    per_class: examples to take per class, ``>= 1``.
    num_classes: the classes are ``range(num_classes)``; ``None`` (default) takes the classes
      present in ``labels``.

  Returns:
    A 1-D NumPy array of indices into ``labels``, class by class.

  Raises:
    ValueError: if a class among ``range(num_classes)`` has fewer than ``per_class``
      examples.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"`labels` must be a 1-D array of class ids, got shape {labels.shape}.")
  classes = np.arange(num_classes) if num_classes is not None else np.unique(labels)
  out = []
  for c in classes:
    idx = np.flatnonzero(labels == c)[:per_class]
    if len(idx) < per_class:
      raise ValueError(
        f"`samples_per_class`={per_class} but class {int(c)} has only {len(idx)} "
        "examples in the batch given."
      )
    out.append(idx)
  return np.concatenate(out)


def _softmax_xent(logits: jax.Array, labels: jax.Array) -> jax.Array:
  logp = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


@dataclasses.dataclass(frozen=True)
class _Static(SparseMethod):
  """A sparse method whose mask is computed once, before training."""

  def wrap(
    self,
    tx: optax.GradientTransformation,
    params: PyTree,
    *,
    mask: PyTree | None = None,
    **mask_kwargs: Any,
  ) -> optax.GradientTransformationExtraArgs:
    """Wraps ``tx`` with a fixed mask.

    Args:
      tx: any optax transformation or chain.
      params: initial parameters.
      mask: a precomputed weight mask (e.g. from :meth:`compute_mask`); if omitted
        it is computed now with ``compute_mask(params, **mask_kwargs)``.
      **mask_kwargs: the arguments of :meth:`compute_mask` (SNIP: ``loss_fn=``; GraSP:
        ``apply_fn=``, ``inputs=``, ``labels=``; LTH: none); refused together with ``mask``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      :class:`~zosam_jax.sparse.SparseState`, with the mask held fixed.
    """
    self.prunable_flags(params)  # raises if nothing is prunable
    if mask is None:
      mask = self.compute_mask(params, **mask_kwargs)
    elif mask_kwargs:
      raise ValueError(f"Give either `mask` or {sorted(mask_kwargs)}, not both.")
    mask_lib.validate_mask(mask, params)
    fixed = jax.tree.map(lambda m: jnp.asarray(m, jnp.bool_), mask)
    counts = jax.tree.map(lambda m: int(m.sum()), fixed)
    return sparse_wrapper(tx, init_mask=lambda p, key: fixed, mask_counts=counts)

  def compute_mask(self, params: PyTree, *args: Any, **kwargs: Any) -> PyTree:
    raise NotImplementedError  # each method takes its own arguments (SNIP: loss_fn=, LTH: none)


@dataclasses.dataclass(frozen=True)
class SNIP(_Static):
  """SNIP: keep the largest ``|theta ⊙ grad L(theta)|`` on a batch at initialisation.

  Attributes:
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  The other fields are those of :class:`~zosam_jax.sparse.SparseMethod`; the default
  ``sparsity_distribution`` is ``"global"`` (one threshold, as in the paper).
  ``wrap(tx, params, loss_fn=loss_fn)`` computes the mask from one batch's loss.

  References:
    Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
    (arXiv 1810.02340).
  """

  sparsity_distribution: SparsityDistribution = "global"
  has_aux: bool = False

  def compute_mask(self, params: PyTree, *, loss_fn: Callable[..., Any]) -> PyTree:
    """Mask from one batch's ``loss_fn(params)`` (the batch closed over).

    Args:
      params: the parameters at initialisation.
      loss_fn: ``params -> loss`` (or ``(loss, aux)`` with ``has_aux=True``).

    Returns:
      A bool weight mask shaped like ``params``, keeping the highest :func:`snip_scores`.
    """
    scores = jax.jit(lambda p: snip_scores(loss_fn, p, has_aux=self.has_aux))(params)
    return self.mask_from_scores(params, scores)


@dataclasses.dataclass(frozen=True)
class GraSP(_Static):
  """GraSP: remove the highest ``-theta ⊙ H g`` (gradient-flow preservation).

  Attributes:
    temperature: ``T`` dividing the logits (paper: 200).
    samples_per_class: examples of each class in the scoring batch (paper: 10
      for CIFAR-10, 5 for CIFAR-100).
    num_classes: number of classes, for :func:`samples_per_class`; ``None`` takes
      the classes present in the labels.

  The other fields are those of :class:`~zosam_jax.sparse.SparseMethod`; the default
  ``sparsity_distribution`` is ``"global"``. ``wrap(tx, params, apply_fn=..., inputs=...,
  labels=...)`` computes the mask (see :meth:`scores`).

  References:
    Wang et al., "Picking Winning Tickets Before Training by Preserving Gradient Flow",
    ICLR 2020 (arXiv 2002.07376).
  """

  sparsity_distribution: SparsityDistribution = "global"
  temperature: float = 200.0
  samples_per_class: int = 10
  num_classes: int | None = None

  def __post_init__(self) -> None:
    super().__post_init__()
    if not self.temperature > 0:
      raise ValueError(f"`temperature` must be > 0, got {self.temperature!r}.")
    if not isinstance(self.samples_per_class, int) or self.samples_per_class < 1:
      raise ValueError(f"`samples_per_class` must be an int >= 1, got {self.samples_per_class!r}.")

  def scores(
    self,
    params: PyTree,
    *,
    apply_fn: Callable[[PyTree, Any], jax.Array],
    inputs: Any,
    labels: Any,
  ) -> PyTree:
    """GraSP scores on ``samples_per_class`` examples per class of ``(inputs, labels)``.

    Args:
      params: the parameters at initialisation.
      apply_fn: ``(params, inputs) -> logits`` (no state updates).
      inputs: a batch of inputs (leading axis = examples).
      labels: integer class ids, shape ``[batch]``.

    Returns:
      :func:`grasp_scores` of the cross-entropy of ``logits / temperature`` on the chosen
      examples, a pytree like ``params``.
    """
    idx = samples_per_class(labels, self.samples_per_class, self.num_classes)
    x = jax.tree.map(lambda a: jnp.asarray(a)[idx], inputs)
    y = jnp.asarray(np.asarray(labels)[idx])
    temperature = self.temperature

    def loss_fn(p: PyTree) -> jax.Array:
      return _softmax_xent(apply_fn(p, x) / temperature, y)

    return jax.jit(lambda p: grasp_scores(loss_fn, p))(params)

  def compute_mask(self, params: PyTree, **kwargs: Any) -> PyTree:
    """Mask keeping the lowest GraSP scores.

    Args:
      params: the parameters at initialisation.
      **kwargs: ``apply_fn``, ``inputs`` and ``labels``, as :meth:`scores` takes them.

    Returns:
      A bool weight mask shaped like ``params``.
    """
    s = self.scores(params, **kwargs)
    return self.mask_from_scores(params, jax.tree.map(jnp.negative, s))


@dataclasses.dataclass(frozen=True)
class LTH(_Static):
  """Lottery tickets: iterative magnitude pruning with rewinding to step ``k``.

  Attributes:
    rounds: number of pruning rounds ``R`` to reach ``sparsity`` (>= 1).

  The other fields are those of :class:`~zosam_jax.sparse.SparseMethod`; the default
  ``sparsity_distribution`` is ``"global"``.

  A training script runs, for ``r = 1..R``::

      params_k = <params after k steps of (dense or current-mask) training>
      <train to the end>
      mask = method.prune(trained_params, mask, round=r)
      params = method.rewind(params_k, mask)
      tx = method.wrap(base_tx, params, mask=mask)

  ``wrap`` without a mask gives the dense round 0 (a mask of all ones).

  References:
    Frankle & Carbin, "The Lottery Ticket Hypothesis: Finding Sparse, Trainable Neural
    Networks", ICLR 2019 (arXiv 1803.03635); Frankle et al., "Linear Mode Connectivity and the
    Lottery Ticket Hypothesis", ICML 2020 (rewinding to step ``k``).
  """

  sparsity_distribution: SparsityDistribution = "global"
  rounds: int = 1

  def __post_init__(self) -> None:
    super().__post_init__()
    if not isinstance(self.rounds, int) or self.rounds < 1:
      raise ValueError(f"`rounds` must be an int >= 1, got {self.rounds!r}.")

  def round_sparsity(self, round: int) -> float:
    """``s_r = 1 - (1 - s)^(r / R)``: each round removes the same fraction of survivors.

    Args:
      round: ``r`` in ``[0, rounds]`` (0: dense).

    Returns:
      The sparsity of round ``r`` (``sparsity`` at ``r = R``).
    """
    if not 0 <= round <= self.rounds:
      raise ValueError(f"`round` must be in [0, {self.rounds}], got {round!r}.")
    return 1.0 - (1.0 - cast(float, self.sparsity)) ** (round / self.rounds)

  def compute_mask(self, params: PyTree) -> PyTree:
    """The round-0 (dense) mask.

    Args:
      params: the parameters.

    Returns:
      An all-``True`` bool pytree shaped like ``params``.
    """
    return mask_lib.dense_mask(params)

  def prune(self, params: PyTree, mask: PyTree | None, round: int) -> PyTree:
    """Magnitude pruning of the surviving weights to the sparsity of ``round``.

    Only weights active in ``mask`` can survive (their scores are ``|theta|``, the
    others ``-inf``), so masks are nested across rounds.

    Args:
      params: the trained parameters of the round.
      mask: the round's current weight mask, or ``None`` (dense).
      round: ``r`` in ``[0, rounds]``; the new mask has sparsity :meth:`round_sparsity`.

    Returns:
      The new bool weight mask, shaped like ``params``.
    """
    if mask is None:
      mask = mask_lib.dense_mask(params)
    mask_lib.validate_mask(mask, params)
    scores = jax.tree.map(
      lambda p, m: jnp.where(m, jnp.abs(p).astype(jnp.float32), -jnp.inf), params, mask
    )
    return self.mask_from_scores(params, scores, sparsity=self.round_sparsity(round))

  def rewind(self, params_k: PyTree, mask: PyTree) -> PyTree:
    """Surviving weights take their step-``k`` values; pruned weights are 0.

    Args:
      params_k: the parameters saved after ``k`` steps.
      mask: the new weight mask (from :meth:`prune`).

    Returns:
      The parameters to train the next round from.
    """
    mask_lib.validate_mask(mask, params_k)
    return jax.tree.map(lambda p, m: jnp.where(m, p, jnp.zeros_like(p)), params_k, mask)


# Lowercase factories, optax style: the classes themselves (``sparsity`` is their first field).
snip = SNIP
grasp = GraSP
lth = LTH
