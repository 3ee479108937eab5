"""Sparse SAM perturbation masks: which coordinates of the SAM perturbation are kept.

Sparse SAM (SSAM) multiplies SAM's perturbation by a binary mask ``m``,
``theta + rho * g / ||g|| (.) m``, with ``1^T m = (1 - s) d`` for a perturbation sparsity ``s``.
This module builds and refreshes such masks:

* ``"fisher"`` (SSAM-F): keep the top-k coordinates of the diagonal empirical Fisher
  ``F = 1/N_F sum_i (grad log p(y_i | x_i))^2`` over ``N_F`` examples (SSAM eq. 5-6).
* ``"dynamic"`` (SSAM-D): drop the ``N_drop = f(t) (1 - s) d`` kept coordinates with the smallest
  ``|g|`` (the flattest), regrow as many uniformly at random among the unkept ones, with
  ``f(t) = alpha/2 (1 + cos(pi t / T))`` (SSAM eq. 7-9, Algorithm 2 option II); for the channel
  and N:M patterns see :func:`dynamic_update`.
* ``"random"``: a fresh uniformly random mask (the paper's ablation).

and three patterns (SSAM TPAMI version; the groups are defined once, in ``zosam_jax._src.groups``,
and shared with the sparse-training masks): ``"unstructured"`` (one global top-k over every
perturbed coordinate), ``"channel"`` (whole output channels / filters, i.e. slices along the last
axis of each leaf, ranked per leaf by their mean score; the TPAMI paper's "structured"), and
``"n:m"`` (in every block of ``M`` consecutive weights along the input axis, the second-to-last
axis of a kernel, keep ``N``).

Counts are exact: selection is by index (``lax.top_k`` or ranks from ``argsort``), so ties cannot
change how many coordinates are kept. Kept count for ``n`` coordinates at sparsity ``s`` is
``floor((1 - s) n + 1/2)``.

Masks are lists of bool arrays, one per perturbed leaf; the transforms in ``sharpness`` hold them
in their state as a pytree shaped like the parameters.

References:
  Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation Approach",
  NeurIPS 2022 (arXiv 2210.05177); Mi et al., "Systematic Investigation of Sparse Perturbed
  Sharpness-Aware Minimization Optimizer", TPAMI 2025.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple, get_args

import jax
import jax.numpy as jnp
import optax

from zosam_jax._src import groups
from zosam_jax._src.types import MaskForm, MaskMethod, Pattern, PyTree

#: The mask patterns (single coordinates, whole output channels, N of every M).
PATTERNS = groups.PATTERNS
#: The values of ``sparse_sam``'s ``mask_method``.
MASK_METHODS: tuple[MaskMethod, ...] = get_args(MaskMethod)
#: The values of ``sparse_sam``'s ``form``.
FORMS: tuple[MaskForm, ...] = get_args(MaskForm)


def num_kept(total: int, sparsity: float) -> int:
  """Number of coordinates kept out of ``total`` at ``sparsity`` (round half up).

  Args:
    total: the number of coordinates, ``>= 0``.
    sparsity: the fraction not kept, in ``[0, 1)``.

  Returns:
    ``min(total, floor((1 - sparsity) total + 1/2))``.
  """
  return min(total, int(math.floor((1.0 - sparsity) * total + 0.5)))


def check_pattern(pattern: Pattern, n_m: tuple[int, int]) -> None:
  """Checks ``pattern`` and ``n_m``; raises ``ValueError`` naming the bad one.

  Args:
    pattern: ``"unstructured"``, ``"channel"`` or ``"n:m"``.
    n_m: ``(N, M)`` with ``1 <= N <= M``, checked for ``"n:m"`` only.
  """
  groups.check_pattern(pattern, n_m)


def check_n_m_shapes(shapes: list[tuple[int, ...]], n_m: tuple[int, int]) -> None:
  """Checks that every perturbed leaf's input axis splits into blocks of ``M``.

  Args:
    shapes: the shapes of the perturbed leaves; the input axis is the second-to-last (the only
      one of a 1-D leaf).
    n_m: ``(N, M)``.

  Raises:
    ValueError: naming the first shape that is a scalar or whose input axis is not a multiple
      of ``M``.
  """
  for shape in shapes:
    groups.check_n_m_shape(
      shape, n_m, "every perturbed parameter (exclude others with perturb_leaves)"
    )


def _channel_topk(score: jax.Array, sparsity: float) -> jax.Array:
  if score.ndim == 0:
    return jnp.ones((), bool)  # a scalar leaf is always perturbed
  per_channel = groups.channel_scores(score)
  keep = groups.keep_top_k(per_channel, num_kept(per_channel.shape[0], sparsity))
  return groups.expand_channels(keep, score.shape)


def top_k_mask(
  scores: list[jax.Array], *, sparsity: float, pattern: Pattern, n_m: tuple[int, int] = (2, 4)
) -> list[jax.Array]:
  """Keeps the highest-scoring coordinates under ``pattern`` (SSAM-F's rule, on any scores).

  Args:
    scores: one float array per perturbed leaf (e.g. the empirical Fisher's entries).
    sparsity: fraction of coordinates NOT kept, in ``[0, 1)`` (unused by ``"n:m"``).
    pattern: ``"unstructured"`` (one top-k over all leaves together), ``"channel"`` (per leaf,
      the output channels of highest mean score) or ``"n:m"`` (the ``N`` highest of every block
      of ``M`` along the input axis).
    n_m: ``(N, M)`` for ``"n:m"`` (default ``(2, 4)``).

  Returns:
    Bool masks shaped like ``scores``, with the pattern's exact kept count (ties broken by
    index).

  Examples:
    >>> import jax.numpy as jnp
    >>> from zosam_jax import perturbation_masks
    >>> scores = [jnp.array([0.1, 0.9, 0.3, 0.7])]
    >>> perturbation_masks.top_k_mask(scores, sparsity=0.5, pattern="unstructured")[0]
    Array([False,  True, False,  True], dtype=bool)

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177), eq. 5-6 (top-k of the Fisher);
    Mi et al., TPAMI 2025 (the channel and N:M patterns).
  """
  if pattern == "unstructured":
    total = sum(s.size for s in scores)
    return groups.keep_top_k_jointly(
      [s.astype(jnp.float32) for s in scores], num_kept(total, sparsity)
    )
  if pattern == "channel":
    return [_channel_topk(s.astype(jnp.float32), sparsity) for s in scores]
  return [groups.top_n_per_block(s, *n_m) for s in scores]


def random_mask(
  key: jax.Array,
  shapes: list[tuple[int, ...]],
  *,
  sparsity: float,
  pattern: Pattern,
  n_m: tuple[int, int] = (2, 4),
) -> list[jax.Array]:
  """A uniformly random mask with the exact kept count of ``pattern`` (SSAM's random ablation).

  Args:
    key: a ``jax.random`` key.
    shapes: the shapes of the perturbed leaves.
    sparsity: fraction of coordinates NOT kept, in ``[0, 1)`` (unused by ``"n:m"``).
    pattern: ``"unstructured"``, ``"channel"`` or ``"n:m"`` (see :func:`top_k_mask`).
    n_m: ``(N, M)`` for ``"n:m"`` (default ``(2, 4)``).

  Returns:
    Bool masks of the given shapes (:func:`top_k_mask` of uniform scores).

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177).
  """
  keys = jax.random.split(key, max(len(shapes), 1))
  scores = [jax.random.uniform(k, s) for k, s in zip(keys, shapes, strict=False)]
  return top_k_mask(scores, sparsity=sparsity, pattern=pattern, n_m=n_m)


def cosine_drop_fraction(step: jax.Array, drop_fraction: float, end_step: int) -> jax.Array:
  """SSAM eq. 9: ``alpha/2 (1 + cos(pi t / T))``, held at 0 after ``T``: optax's cosine decay
  (the same float32 values as the formula, bit for bit).

  Args:
    step: the step ``t`` (may be traced).
    drop_fraction: ``alpha``, the fraction at ``t = 0``.
    end_step: ``T >= 1``.

  Returns:
    The float32 drop fraction ``f(t)``.

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177), eq. 9.
  """
  return optax.cosine_decay_schedule(drop_fraction, end_step)(step)


def drop_and_regrow(
  key: jax.Array,
  mask: list[jax.Array],
  grads: list[jax.Array],
  num_drop: jax.Array,
) -> list[jax.Array]:
  """SSAM-D's unstructured update: drop the ``num_drop`` kept coordinates with the smallest
  ``|grad|`` and regrow ``num_drop`` coordinates uniformly among the unkept ones.

  ``num_drop`` may be a traced integer (it follows a schedule); the kept count never changes as
  long as ``num_drop`` is at most the number of kept coordinates.

  Args:
    key: a ``jax.random`` key for the regrowth.
    mask: the current bool masks, one per perturbed leaf.
    grads: gradients shaped like ``mask`` (their magnitudes rank the drop).
    num_drop: how many kept coordinates to drop (and regrow), over all leaves together.

  Returns:
    The new bool masks, shaped like ``mask``.

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177), Algorithm 2 (option II).
  """
  kept = jnp.concatenate([m.reshape(-1) for m in mask])
  score = jnp.concatenate([jnp.abs(g.astype(jnp.float32)).reshape(-1) for g in grads])
  remaining = kept & ~groups.select_lowest(score, kept, num_drop)
  noise = jax.random.uniform(key, kept.shape)
  new = remaining | groups.select_highest(noise, ~remaining, num_drop)
  return groups.split_like(new, mask)


def dynamic_update(
  key: jax.Array,
  mask: list[jax.Array],
  grads: list[jax.Array],
  *,
  fraction: jax.Array,
  sparsity: float,
  pattern: Pattern,
  n_m: tuple[int, int] = (2, 4),
) -> list[jax.Array]:
  """SSAM-D's mask update (drop the flattest, regrow at random) under ``pattern``.

  With ``k`` the kept count of the pattern and ``f = fraction``:

  * ``"unstructured"``: :func:`drop_and_regrow` over all perturbed coordinates with
    ``N_drop = floor(f k)``, ``k`` the global kept count.
  * ``"channel"``: per leaf, the ``floor(f k_l)`` kept channels of smallest mean ``|g|`` are dropped
    and as many channels regrow uniformly among the unkept ones (``k_l`` kept channels; scalar
    leaves stay perturbed).
  * ``"n:m"``: per leaf, the ``floor(f k_l)`` kept coordinates of smallest ``|g|`` are dropped
    (``k_l = N/M`` of the leaf), then every block of ``M`` regrows at random among its unkept
    coordinates back to exactly ``N``.

  Counts are exact after every update: per leaf for ``"channel"`` and ``"n:m"``, in total for
  ``"unstructured"``.

  Args:
    key: a ``jax.random`` key for the regrowth.
    mask: the current bool masks, one per perturbed leaf.
    grads: gradients shaped like ``mask`` (their magnitudes rank the drop).
    fraction: the drop fraction ``f`` (e.g. :func:`cosine_drop_fraction`; may be traced).
    sparsity: the mask's sparsity, in ``[0, 1)`` (gives ``k``; unused by ``"n:m"``).
    pattern: ``"unstructured"``, ``"channel"`` or ``"n:m"``.
    n_m: ``(N, M)`` for ``"n:m"`` (default ``(2, 4)``).

  Returns:
    The new bool masks, shaped like ``mask``.

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177), eq. 7-9 and Algorithm 2;
    Mi et al., TPAMI 2025 (patterns).
  """
  if pattern == "unstructured":
    kept = num_kept(sum(m.size for m in mask), sparsity)
    return drop_and_regrow(key, mask, grads, jnp.floor(fraction * kept).astype(jnp.int32))
  keys = jax.random.split(key, max(len(mask), 1))
  out = []
  for k, m, g in zip(keys, mask, grads, strict=True):
    if pattern == "channel" and m.ndim == 0:
      out.append(m)
      continue
    score = jnp.abs(g.astype(jnp.float32))
    if pattern == "channel":
      active = groups.channel_active(m)
      num_drop = jnp.floor(fraction * num_kept(active.shape[0], sparsity)).astype(jnp.int32)
      remaining = active & ~groups.select_lowest(groups.channel_scores(score), active, num_drop)
      noise = jax.random.uniform(k, active.shape)
      new = remaining | groups.select_highest(noise, ~remaining, num_drop)
      out.append(groups.expand_channels(new, m.shape))
    else:
      n, mm = n_m
      num_drop = jnp.floor(fraction * (m.size * n // mm)).astype(jnp.int32)
      remaining = m & ~groups.select_lowest(score, m, num_drop)
      grow = groups.refill_blocks(remaining, jax.random.uniform(k, m.shape), n, mm)
      out.append(remaining | grow)
  return out


def empirical_fisher(
  per_example_loss_fn: Callable[[PyTree, PyTree], Any],
  params: PyTree,
  batch: PyTree,
  *,
  num_samples: int,
  chunk_size: int = 16,
) -> PyTree:
  """Diagonal empirical Fisher ``1/N sum_i (grad_theta l(theta; x_i, y_i))^2`` (SSAM eq. 5).

  Args:
    per_example_loss_fn: ``(params, batch) -> losses`` with one negative log-likelihood per
      example of ``batch`` (shape ``[B]``), or ``(losses, aux)`` as ESAM takes it with
      ``has_aux=True`` (``aux`` is ignored). It is called here on one-example batches.
    params: the point at which the Fisher is taken.
    batch: a pytree whose leaves have a leading axis of at least ``num_samples`` examples; the
      first ``num_samples`` are used.
    num_samples: ``N_F``.
    chunk_size: examples whose gradients are computed together (``jax.vmap``); the running sum is
      carried through a ``lax.scan``, so memory holds ``chunk_size`` gradients, not ``N_F``.

  Returns:
    A float32 pytree like ``params``.

  References:
    Mi et al., "Make Sharpness-Aware Minimization Stronger: A Sparsified Perturbation
    Approach", NeurIPS 2022 (arXiv 2210.05177), eq. 5.
  """
  leading = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(leading) != 1 or min(leading) < num_samples:
    raise ValueError(
      f"batch must share a leading axis of at least num_fisher_samples={num_samples} "
      f"examples; got leading sizes {sorted(leading)}."
    )
  examples = jax.tree.map(lambda x: x[:num_samples], batch)

  def one_example_loss(p: PyTree, example: PyTree) -> jax.Array:
    out = per_example_loss_fn(p, jax.tree.map(lambda x: x[None], example))
    losses = out[0] if isinstance(out, tuple) else out  # ESAM's (losses, aux) convention
    return losses[0]

  grad_fn = jax.grad(one_example_loss)

  def squared_sum(batch: PyTree) -> PyTree:
    grads = jax.vmap(grad_fn, in_axes=(None, 0))(params, batch)
    return jax.tree.map(lambda g: jnp.sum(jnp.square(g.astype(jnp.float32)), axis=0), grads)

  chunk = min(chunk_size, num_samples)
  num_full, remainder = divmod(num_samples, chunk)
  total = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
  full = jax.tree.map(
    lambda x: x[: num_full * chunk].reshape((num_full, chunk) + x.shape[1:]), examples
  )
  total, _ = jax.lax.scan(
    lambda acc, b: (jax.tree.map(jnp.add, acc, squared_sum(b)), None), total, full
  )
  if remainder:
    rest = jax.tree.map(lambda x: x[num_full * chunk :], examples)
    total = jax.tree.map(jnp.add, total, squared_sum(rest))
  return jax.tree.map(lambda t: t / num_samples, total)


class MaskSpec(NamedTuple):
  """Static description of a Sparse SAM perturbation mask (built by ``sharpness.sparse_sam``).

  Attributes:
    method: ``"fisher"``, ``"dynamic"`` or ``"random"``.
    sparsity: fraction of perturbed coordinates that are NOT perturbed, in ``[0, 1)``.
    pattern: ``"unstructured"``, ``"channel"`` or ``"n:m"``.
    n_m: ``(N, M)`` for the ``"n:m"`` pattern.
    update_every: the mask is refreshed at steps ``t`` with ``t % update_every == 0``.
    num_fisher_samples: ``N_F`` for ``"fisher"``.
    fisher_chunk_size: per-example gradients computed together for ``"fisher"``.
    drop_fraction: ``alpha`` for ``"dynamic"``.
    end_step: ``T``, the horizon of the cosine decay for ``"dynamic"``.
    form: ``"explicit"`` (a dense ascent gradient, the mask applied to the perturbation) or
      ``"implicit"`` (the mask applied inside the ascent's backward pass; see
      ``sharpness.sparse_sam``).
  """

  method: MaskMethod
  sparsity: float
  pattern: Pattern
  n_m: tuple[int, int]
  update_every: int
  num_fisher_samples: int
  fisher_chunk_size: int
  drop_fraction: float
  end_step: int | None
  form: MaskForm = "explicit"
