"""Sparsity distributions: how many weights each prunable leaf keeps.

Three distributions, for a target sparsity ``s`` over prunable leaves with
``n_l`` weights each (``N = sum_l n_l``):

* ``"uniform"``: every prunable leaf keeps ``round((1 - s) n_l)`` weights.
* ``"erk"`` (Erdős–Rényi-Kernel): leaf ``l`` with shape ``(d_1, ..., d_k)`` gets
  density ``min(1, eps * (sum_i d_i / prod_i d_i) ** power)``; ``eps`` is chosen so
  that ``sum_l density_l n_l = (1 - s) N``. Leaves whose density would exceed 1
  are made dense and ``eps`` is solved again over the remaining leaves, until no
  density exceeds 1. Each leaf then keeps ``round(density_l n_l)`` weights.
* ``"global"``: the prunable leaves are one pool; ``round((1 - s) N)`` weights are
  kept in total, chosen by one ranking (one threshold) over all of them.

References:
  Mocanu et al., 2018, "Scalable training of artificial neural networks with adaptive
  sparse connectivity inspired by network science" (Erdős–Rényi), Nat. Commun. 9.
  Evci, Gale, Menick, Castro & Elsen, 2020, "Rigging the Lottery: Making All Tickets
  Winners" (ERK), ICML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import numpy as np

from zosam_jax._src import validation
from zosam_jax._src.types import SparsityDistribution

#: The values of ``sparsity_distribution``.
SPARSITY_DISTRIBUTIONS: tuple[SparsityDistribution, ...] = get_args(SparsityDistribution)

__all__ = ["SPARSITY_DISTRIBUTIONS", "erk_densities", "keep_counts", "validate_sparsity"]


def validate_sparsity(sparsity: float, argname: str = "sparsity") -> float:
  """Checks ``sparsity`` lies in ``[0, 1)`` and returns it as a float.

  Args:
    sparsity: the value to check.
    argname: the name the error message gives it (default ``"sparsity"``).

  Returns:
    ``float(sparsity)``.

  Raises:
    ValueError: if ``sparsity`` is not a number in ``[0, 1)``.
  """
  validation.check_sparsity(argname, sparsity)
  return float(sparsity)


def validate_distribution(distribution: SparsityDistribution) -> SparsityDistribution:
  validation.check_choice("sparsity_distribution", distribution, SPARSITY_DISTRIBUTIONS)
  return distribution


def erk_densities(
  shapes: Sequence[tuple[int, ...]], sparsity: float, power: float = 1.0
) -> list[float]:
  """ERK densities (fraction of kept weights) of leaves with the given shapes.

  Solves ``sum_l d_l n_l = (1 - s) N`` with ``d_l = min(1, eps * r_l)`` and
  ``r_l = (sum(shape_l) / prod(shape_l)) ** power``: leaves with ``eps r_l > 1``
  are made dense (``d_l = 1``) one after another, largest ``r_l`` first, and
  ``eps`` is re-solved over the rest until every density is at most 1.

  Args:
    shapes: shapes of the prunable leaves.
    sparsity: target fraction of pruned weights over them, in ``[0, 1)``.
    power: exponent on the raw density (default 1.0, ERK; 0.0 gives uniform densities).

  Returns:
    One density in ``[0, 1]`` per leaf, as Python floats.

  References:
    Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020 (ERK); Mocanu et
    al., Nat. Commun. 2018 (Erdős–Rényi).

  Raises:
    ValueError: if ``shapes`` is empty.
  """
  if not shapes:
    raise ValueError(
      "sparsity_distribution='erk' needs at least one prunable leaf; the model has none "
      "(check `prunable`, `first_layer_dense`, `last_layer_dense')."
    )
  sparsity = validate_sparsity(sparsity)
  sizes = np.array([float(np.prod(s)) for s in shapes])
  raw = np.array([(float(np.sum(s)) / float(np.prod(s))) ** power for s in shapes])
  dense = np.zeros(len(shapes), dtype=bool)
  target = (1.0 - sparsity) * sizes.sum()
  while True:
    free = ~dense
    if not free.any():
      break
    budget = target - sizes[dense].sum()
    eps = budget / float((raw[free] * sizes[free]).sum())
    dens = eps * raw
    over = free & (dens > 1.0)
    if not over.any():
      break
    # Make the leaf (or leaves) with the largest raw density dense and re-solve.
    top = raw[over].max()
    dense |= over & (raw == top)
  out = np.where(dense, 1.0, np.clip(eps * raw, 0.0, 1.0))
  return [float(d) for d in out]


def keep_counts(
  shapes: Sequence[tuple[int, ...]],
  sparsity: float,
  distribution: SparsityDistribution,
  erk_power: float = 1.0,
  *,
  num_groups: Sequence[int] | None = None,
) -> list[int] | int:
  """Number of weights (or groups of weights) to keep.

  Args:
    shapes: shapes of the prunable leaves.
    sparsity: target fraction of pruned weights over the prunable leaves, in [0, 1).
    distribution: ``"uniform"``, ``"erk"`` or ``"global"``.
    erk_power: exponent on the ERK raw density (1.0 is ERK; 0.0 is uniform).
    num_groups: groups per leaf when whole groups are kept (output channels for the channel
      pattern); default: every weight is a group. Densities still come from ``shapes``, so a
      leaf keeps ``round(density_l * num_groups_l)`` groups (``"global"``: ``round((1 - s) *
      sum num_groups)`` in all).

  Returns:
    A list with one count per leaf for ``"uniform"``/``"erk"``; one int (the total
    over all prunable leaves) for ``"global"``.
  """
  sparsity = validate_sparsity(sparsity)
  validate_distribution(distribution)
  if num_groups is None:
    sizes = [int(np.prod(s)) for s in shapes]
  else:
    sizes = [int(n) for n in num_groups]
  if distribution == "global":
    return int(round((1.0 - sparsity) * sum(sizes)))
  if distribution == "uniform":
    dens = [1.0 - sparsity] * len(shapes)
  else:
    dens = erk_densities(shapes, sparsity, erk_power)
  return [min(n, int(round(d * n))) for d, n in zip(dens, sizes, strict=True)]
