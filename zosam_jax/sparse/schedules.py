"""When dynamic sparse methods update their masks, and what fraction they drop.

A dynamic method updates its mask at steps ``t = start_step + k * update_every``
for ``k = 1, 2, ...`` while ``t <= end_step`` (``t`` counts the wrapper's updates,
starting at 0). At such a step it drops a fraction ``alpha(t)`` of the active
weights of each prunable leaf, with

* ``"cosine"``:   ``alpha(t) = alpha / 2 * (1 + cos(pi * (t - start) / (end - start)))``
* ``"linear"``:   ``alpha(t) = alpha * (1 - (t - start) / (end - start))``
* ``"constant"``: ``alpha(t) = alpha``

References:
  Evci et al., 2020, "Rigging the Lottery: Making All Tickets Winners", ICML
  (cosine drop-fraction decay).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import get_args

import jax
import jax.numpy as jnp

from zosam_jax._src.types import DropSchedule

#: The values of ``drop_schedule``.
DROP_SCHEDULES: tuple[DropSchedule, ...] = get_args(DropSchedule)

__all__ = ["DROP_SCHEDULES", "UpdateSchedule"]


def _is_int(x: object) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class UpdateSchedule:
  """Mask-update timing and drop fraction of a dynamic sparse method.

  Attributes:
    update_every: steps between two mask updates (>= 1).
    end_step: last step at which the mask may change (> start_step).
    start_step: the first update happens at ``start_step + update_every``.
    drop_fraction: initial fraction of active weights dropped per update, in (0, 1).
    drop_schedule: ``"cosine"``, ``"linear"`` or ``"constant"`` decay of the fraction.
    final_update: also update at ``end_step`` itself when it is not on the grid
      (used by MEST's soft memory bound to prune back to the target at the end).

  References:
    Evci et al., "Rigging the Lottery: Making All Tickets Winners", ICML 2020 (the cosine
    decay of the drop fraction).
  """

  update_every: int
  end_step: int
  start_step: int = 0
  drop_fraction: float = 0.3
  drop_schedule: DropSchedule = "cosine"
  final_update: bool = False

  def __post_init__(self) -> None:
    if not _is_int(self.update_every) or self.update_every < 1:
      raise ValueError(f"`update_every` must be an int >= 1, got {self.update_every!r}.")
    if not _is_int(self.start_step) or self.start_step < 0:
      raise ValueError(f"`start_step` must be an int >= 0, got {self.start_step!r}.")
    if not _is_int(self.end_step) or self.end_step <= self.start_step:
      raise ValueError(
        f"`end_step` must be an int > start_step={self.start_step}, got {self.end_step!r}."
      )
    if not isinstance(self.drop_fraction, numbers.Real) or not 0.0 < self.drop_fraction < 1.0:
      raise ValueError(f"`drop_fraction` must be in (0, 1), got {self.drop_fraction!r}.")
    if self.drop_schedule not in DROP_SCHEDULES:
      raise ValueError(
        f"`drop_schedule` must be one of {DROP_SCHEDULES}, got {self.drop_schedule!r}."
      )

  def is_update_step(self, step: jax.Array) -> jax.Array:
    """Whether the mask is updated at ``step`` (traceable).

    Args:
      step: the wrapper's step count (an integer, or a traced integer scalar).

    Returns:
      A bool scalar array.
    """
    since = step - self.start_step
    on_grid = (since > 0) & (step <= self.end_step) & (since % self.update_every == 0)
    if self.final_update:
      return on_grid | (step == self.end_step)
    return on_grid

  def fraction(self, step: jax.Array) -> jax.Array:
    """Drop fraction ``alpha(step)`` (float32, traceable).

    Args:
      step: the wrapper's step count (an integer, or a traced integer scalar); the progress
        ``(step - start_step) / (end_step - start_step)`` is clipped to ``[0, 1]``.

    Returns:
      A float32 scalar array.
    """
    span = float(self.end_step - self.start_step)
    progress = jnp.clip((step - self.start_step) / span, 0.0, 1.0).astype(jnp.float32)
    alpha = jnp.float32(self.drop_fraction)
    if self.drop_schedule == "cosine":
      # Not optax.cosine_decay_schedule: it rounds pi t / T in another order, so about one step
      # in five would get a fraction one float32 ulp away, and a drop count could change.
      return 0.5 * alpha * (1.0 + jnp.cos(jnp.pi * progress))
    if self.drop_schedule == "linear":
      return alpha * (1.0 - progress)
    return alpha * jnp.ones_like(progress)
