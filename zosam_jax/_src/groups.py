"""Which weights a sparsity pattern keeps or drops together: the one definition of the groups.

Every mask in the library (Sparse SAM's perturbation masks, the sparse-training weight masks) is
built from a per-weight score under one of three patterns, with the same groups:

* ``"unstructured"``: every weight is its own group.
* ``"channel"``: whole output channels. For a leaf of shape ``(..., C)`` channel ``c`` is
  ``x[..., c]``, every entry whose last index is ``c``: the output features of a Flax ``Dense``
  kernel ``(in, out)``, the filters of a ``Conv`` kernel ``(h, w, in, out)``. A 1-D leaf has one
  channel per entry; a scalar leaf is one channel.
* ``"n:m"``: blocks of ``M`` consecutive weights along the input axis (the second-to-last axis of a
  kernel, axis 0 of a 1-D leaf) of which exactly ``N`` are kept: the 2:4 layout of sparse tensor
  cores, where the reduction of a matmul runs along the input axis.

A channel's score is the MEAN of its weights' scores: within a leaf it ranks channels as their sum
does (every channel of a leaf has the same size), and across leaves (a global ranking, a magnitude
threshold) it stays on the per-weight scale.

Selections are exact: they rank by index (``lax.top_k``, stable ``argsort``), so ties cannot change
a count, and every count may be a traced integer where a schedule sets it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, get_args

import jax
import jax.numpy as jnp
import numpy as np

from zosam_jax._src import validation
from zosam_jax._src.types import Pattern

PATTERNS: tuple[Pattern, ...] = get_args(Pattern)


def check_pattern(pattern: Any, n_m: Any) -> tuple[int, int]:
  """Checks ``pattern`` (one of :data:`PATTERNS`) and, for ``"n:m"``, ``n_m``; returns ``n_m``.

  ``n_m`` must be two integers ``(N, M)`` with ``1 <= N <= M``; it is only checked (and only
  matters) with ``pattern="n:m"``.
  """
  if pattern == "structured":
    raise ValueError(
      f"pattern must be one of {list(PATTERNS)}, got 'structured' (whole output channels are "
      "called 'channel')."
    )
  validation.check_choice("pattern", pattern, PATTERNS)
  if pattern != "n:m":
    return tuple(n_m) if isinstance(n_m, tuple | list) else n_m
  ok = isinstance(n_m, tuple | list) and len(n_m) == 2
  ok = ok and all(isinstance(v, int) and not isinstance(v, bool) for v in n_m)
  if not (ok and 1 <= n_m[0] <= n_m[1]):
    raise ValueError(f"n_m must be two integers (N, M) with 1 <= N <= M, got {n_m!r}.")
  return int(n_m[0]), int(n_m[1])


def n_m_axis(ndim: int) -> int:
  """The input axis along which ``"n:m"`` blocks run."""
  return ndim - 2 if ndim >= 2 else 0


def check_n_m_shape(shape: Sequence[int], n_m: tuple[int, int], where: str) -> None:
  """Raises unless ``shape``'s input axis splits into blocks of ``M`` (``where`` names the leaf)."""
  m = n_m[1]
  shape = tuple(shape)
  if not shape:
    raise ValueError(f"n_m={tuple(n_m)} cannot split the scalar {where} into blocks of M={m}.")
  axis = n_m_axis(len(shape))
  if shape[axis] % m:
    raise ValueError(
      f"n_m={tuple(n_m)} needs the input axis (axis {axis}) of {where} divisible by M={m}, got "
      f"shape {shape}; keep that leaf dense or choose another M."
    )


def num_groups(shape: Sequence[int], pattern: Pattern) -> int:
  """Groups that ``pattern`` counts in a leaf: weights, or channels for ``"channel"``."""
  if pattern == "channel":
    return int(shape[-1]) if len(shape) else 1
  return int(math.prod(shape))


def group_size(shape: Sequence[int], pattern: Pattern) -> int:
  """Weights per group: the channel size ``prod(shape[:-1])`` for ``"channel"``, else 1."""
  if pattern == "channel":
    return int(math.prod(shape[:-1])) if len(shape) else 1
  return 1


def channel_scores(score: jax.Array) -> jax.Array:
  """Mean score of each output channel, shape ``(C,)`` (float32)."""
  score = jnp.asarray(score, jnp.float32)
  if score.ndim == 0:
    return score.reshape(1)
  return jnp.mean(score.reshape(-1, score.shape[-1]), axis=0)


def channel_active(mask: jax.Array) -> jax.Array:
  """Bool ``(C,)``: the channels with an active weight (masks built here are whole channels)."""
  mask = jnp.asarray(mask, jnp.bool_)
  if mask.ndim == 0:
    return mask.reshape(1)
  return jnp.any(mask.reshape(-1, mask.shape[-1]), axis=0)


def expand_channels(values: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Broadcasts per-channel ``values`` ``(C,)`` to a leaf of ``shape``."""
  shape = tuple(shape)
  if not shape:
    return values.reshape(())
  return jnp.broadcast_to(values, shape)


def to_groups(x: jax.Array, pattern: Pattern, *, is_mask: bool = False) -> jax.Array:
  """The per-group view of a per-weight array (channels for ``"channel"``, else ``x``)."""
  if pattern != "channel":
    return x
  return channel_active(x) if is_mask else channel_scores(x)


def from_groups(values: jax.Array, shape: Sequence[int], pattern: Pattern) -> jax.Array:
  """Inverse of :func:`to_groups` for masks: every weight takes its group's value."""
  return expand_channels(values, shape) if pattern == "channel" else values


def to_blocks(x: jax.Array, m: int) -> jax.Array:
  """``x`` with its input axis split into blocks of ``m``, the block axis last: ``(..., G, m)``."""
  moved = jnp.moveaxis(x, n_m_axis(x.ndim), -1)
  return moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))


def from_blocks(blocks: jax.Array, shape: Sequence[int]) -> jax.Array:
  """Inverse of :func:`to_blocks` for a leaf of ``shape``."""
  shape = tuple(shape)
  axis = n_m_axis(len(shape))
  moved_shape = tuple(s for i, s in enumerate(shape) if i != axis) + (shape[axis],)
  return jnp.moveaxis(blocks.reshape(moved_shape), -1, axis)


def keep_top_k(scores: jax.Array, k: int) -> jax.Array:
  """Bool array shaped like ``scores`` with exactly ``k`` entries set: the largest.

  ``k`` is a static Python int. Ties are broken by index (``lax.top_k``), so the
  count is exact whatever the scores.

  Args:
    scores: an array of any shape (ranked flattened).
    k: how many entries to keep, a static int in ``[0, scores.size]``.

  Returns:
    A bool array shaped like ``scores`` with exactly ``k`` ``True`` entries.

  Raises:
    ValueError: ``k`` outside ``[0, scores.size]``.
  """
  flat = jnp.ravel(scores)
  n = flat.shape[0]
  k = int(k)
  if not 0 <= k <= n:
    raise ValueError(f"`k` must be in [0, {n}], got {k}.")
  if k == n:
    return jnp.ones(jnp.shape(scores), dtype=jnp.bool_)
  if k == 0:
    return jnp.zeros(jnp.shape(scores), dtype=jnp.bool_)
  _, idx = jax.lax.top_k(flat, k)
  return jnp.zeros((n,), dtype=jnp.bool_).at[idx].set(True).reshape(jnp.shape(scores))


def keep_top_k_jointly(scores: Sequence[jax.Array], k: int) -> list[jax.Array]:
  """:func:`keep_top_k` over all of ``scores`` at once (one global ranking); masks like them."""
  kept = keep_top_k(jnp.concatenate([jnp.ravel(s) for s in scores]), k)
  return split_like(kept, scores)


def top_n_per_block(score: jax.Array, n: int, m: int) -> jax.Array:
  """Bool like ``score``: in every block of ``m`` along the input axis, the ``n`` highest."""
  blocks = to_blocks(jnp.asarray(score, jnp.float32), m)
  if n >= m:
    return jnp.ones(jnp.shape(score), jnp.bool_)
  _, idx = jax.lax.top_k(blocks, n)
  keep = jnp.sum(jax.nn.one_hot(idx, m, dtype=jnp.int32), axis=-2) > 0
  return from_blocks(keep, jnp.shape(score))


def block_counts(mask: jax.Array, m: int) -> jax.Array:
  """Active weights in every block, shape ``(..., G)`` (int32)."""
  return jnp.sum(to_blocks(jnp.asarray(mask, jnp.int32), m), axis=-1)


def _sort_keys(scores: jax.Array, eligible: jax.Array) -> jax.Array:
  """Finite keys for eligible entries (NaN last among them), ``+inf`` for the rest."""
  s = jnp.asarray(scores, jnp.float32)
  big = jnp.finfo(jnp.float32).max
  s = jnp.clip(jnp.where(jnp.isnan(s), big, s), -big, big)
  return jnp.where(eligible, s, jnp.inf)


def ascending_ranks(values: jax.Array, axis: int = -1) -> jax.Array:
  """Position of each entry in the stable ascending sort along ``axis`` (0 = smallest)."""
  order = jnp.argsort(values, axis=axis, stable=True)
  return jnp.argsort(order, axis=axis, stable=True).astype(jnp.int32)


def _order_keys(flat: jax.Array) -> jax.Array:
  """uint32 keys in the order of the float32 values (``-0.0`` and ``0.0`` share one key)."""
  flat = jnp.where(flat == 0, jnp.float32(0), flat)
  bits = jax.lax.bitcast_convert_type(flat, jnp.uint32)
  negative = (bits >> 31) == 1
  return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def _lowest(keys: jax.Array, count: jax.Array | int) -> jax.Array:
  """The ``count`` entries of lowest key, ties broken by index (those a stable sort puts first),
  found without sorting.

  XLA:CPU sorts slowly (a stable argsort of 200k floats took 125 ms on our CPU, twice per leaf
  and update: most of a RigL update step), so the ``count``-th smallest key ``t`` is found by
  bisection over the 32 key bits (32 counting passes), then every key below ``t`` and the first
  ties at ``t`` in index order are taken.
  """
  count = jnp.asarray(count, jnp.int32)

  def halve(_: jax.Array, bounds: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    lo, hi = bounds
    mid = lo + (hi - lo) // 2
    enough = jnp.sum(keys <= mid, dtype=jnp.int32) >= count
    return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

  start = (jnp.uint32(0), jnp.uint32(0xFFFFFFFF))
  # Not unrolled: unrolling multiplied compile time (a sparse test file took 23 s against 14 s)
  # for no measurable gain in the step.
  threshold, _ = jax.lax.fori_loop(0, 32, halve, start)
  below = keys < threshold
  ties = keys == threshold
  room = count - jnp.sum(below, dtype=jnp.int32)
  return below | (ties & (jnp.cumsum(ties, dtype=jnp.int32) <= room))


def select_lowest(scores: jax.Array, eligible: jax.Array, count: jax.Array | int) -> jax.Array:
  """Exactly ``min(count, #eligible)`` eligible entries with the lowest scores (ties by index).

  ``count`` may be traced. NaN scores rank last among the eligible entries.
  """
  flat_s = jnp.ravel(scores).astype(jnp.float32)
  flat_e = jnp.ravel(eligible)
  big = jnp.finfo(jnp.float32).max
  # Finite keys for eligible entries, +inf for the others: every eligible entry ranks first.
  flat_s = jnp.clip(jnp.where(jnp.isnan(flat_s), big, flat_s), -big, big)
  keys = _order_keys(jnp.where(flat_e, flat_s, jnp.inf))
  return (_lowest(keys, count) & flat_e).reshape(jnp.shape(scores))


def select_highest(scores: jax.Array, eligible: jax.Array, count: jax.Array | int) -> jax.Array:
  """Exactly ``min(count, #eligible)`` eligible entries with the highest scores."""
  return select_lowest(-jnp.asarray(scores, jnp.float32), eligible, count)


def select_in_blocks(
  scores: jax.Array,
  eligible: jax.Array,
  counts: jax.Array,
  m: int,
  *,
  highest: bool,
) -> jax.Array:
  """In every block of ``m``, exactly ``min(counts[block], #eligible)`` eligible entries.

  ``counts`` has the block shape ``to_blocks(scores, m).shape[:-1]`` and may be traced. The
  entries chosen are those of highest (or lowest) score; ties break by index.
  """
  s = jnp.asarray(scores, jnp.float32)
  keys = to_blocks(_sort_keys(-s if highest else s, eligible), m)
  ranks = ascending_ranks(keys, axis=-1)
  chosen = (ranks < jnp.asarray(counts)[..., None]) & to_blocks(jnp.asarray(eligible), m)
  return from_blocks(chosen, jnp.shape(scores))


def refill_blocks(kept: jax.Array, grow_scores: jax.Array, n: int, m: int) -> jax.Array:
  """The weights to grow so that every block of ``kept`` holds exactly ``n`` again.

  Each block grows ``n - #kept`` of its inactive weights, those of highest ``grow_scores`` (pass
  uniform noise to grow at random). Requires at most ``n`` kept weights per block.
  """
  missing = n - block_counts(kept, m)
  return select_in_blocks(grow_scores, ~kept, missing, m, highest=True)


def split_like(flat: jax.Array, leaves: Sequence[Any]) -> list[jax.Array]:
  """Splits a 1-D array into pieces shaped like ``leaves`` (in order)."""
  sizes = [int(np.prod(np.shape(x))) for x in leaves]
  offsets = np.cumsum([0] + sizes)
  return [flat[offsets[i] : offsets[i + 1]].reshape(np.shape(x)) for i, x in enumerate(leaves)]
