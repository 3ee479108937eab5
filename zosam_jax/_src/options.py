"""The options of a zeroth-order ascent, validated once and shared by every ZO-capable factory."""

from __future__ import annotations

import dataclasses
from typing import Any

from zosam_jax._src import validation
from zosam_jax._src.types import DirectionDistribution, Scheme


@dataclasses.dataclass(frozen=True)
class ZerothOrderOptions:
  """How a random gradient estimate is made (see :func:`zosam_jax.rge` for the maths).

  Attributes:
    num_directions: ``m >= 1`` random directions per estimate.
    smoothing: finite-difference step ``delta > 0``.
    distribution: ``"gaussian"`` (N(0, I)), ``"rademacher"`` (+-1) or ``"sphere"`` (uniform on
      the sphere of radius ``sqrt(d)``, ``d`` the number of active coordinates).
    scheme: ``"central"`` (``2m`` forwards), ``"forward"`` (``m + 1``) or ``"jvp"`` (``m``
      forward-mode passes, the exact directional derivative).
    probe_batch_size: directions probed together with ``jax.vmap``; ``1`` probes one at a time
      (one direction in memory), ``None`` all ``m`` at once.

  Frozen and checked on construction (and by ``dataclasses.replace``): a bad value raises a
  ``ValueError`` naming the field.
  """

  num_directions: int = 1
  smoothing: float = 1e-3
  distribution: DirectionDistribution = "gaussian"
  scheme: Scheme = "central"
  probe_batch_size: int | None = 1

  def __post_init__(self) -> None:
    validation.check_positive_int("num_directions", self.num_directions)
    validation.check_positive("smoothing", self.smoothing)
    validation.check_choice("distribution", self.distribution, validation.DIRECTION_DISTRIBUTIONS)
    validation.check_choice("scheme", self.scheme, validation.SCHEMES)
    if self.probe_batch_size is not None:
      validation.check_positive_int(
        "probe_batch_size (or None for all directions at once)", self.probe_batch_size
      )

  @property
  def chunk(self) -> int:
    """Directions per vmapped chunk of the probe loop."""
    m = self.num_directions
    return m if self.probe_batch_size is None else min(self.probe_batch_size, m)

  @property
  def queries(self) -> int:
    """The loss evaluations of one estimate, ``2m`` (central), ``m + 1`` (forward) or ``m``
    (jvp)."""
    m = self.num_directions
    return {"central": 2 * m, "forward": m + 1, "jvp": m}[self.scheme]


def resolve(
  zeroth_order: ZerothOrderOptions | None,
  default: ZerothOrderOptions,
  *,
  num_directions: int | None = None,
  smoothing: float | None = None,
) -> ZerothOrderOptions:
  """``zeroth_order`` (or the factory's ``default``) with the short forms ``num_directions`` and
  ``smoothing`` applied on top, so ``zo_sam(0.05, num_directions=4)`` keeps working."""
  if zeroth_order is not None and not isinstance(zeroth_order, ZerothOrderOptions):
    raise ValueError(
      f"zeroth_order must be a zosam_jax.ZerothOrderOptions or None, got {zeroth_order!r}."
    )
  options = default if zeroth_order is None else zeroth_order
  short: dict[str, Any] = {
    k: v for k, v in (("num_directions", num_directions), ("smoothing", smoothing)) if v is not None
  }
  return dataclasses.replace(options, **short) if short else options
