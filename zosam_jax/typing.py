"""Type aliases for code that calls zosam_jax (as ``jax.typing`` and ``flax.typing`` are).

``PyTree`` is what the library means by a pytree of arrays (``Any`` to a type checker); the
others are ``Literal`` types of the option strings, e.g. ``Pattern`` for
``pattern="unstructured" | "channel" | "n:m"``. A value read from a config is a ``str``: check
it against ``typing.get_args(Pattern)`` (or let the library's own check raise) and narrow it
with ``typing.cast``.
"""

from zosam_jax._src.types import (
  Ascent,
  DirectionDistribution,
  DropSchedule,
  Guidance,
  LeafSelection,
  LossAscent,
  LossFn,
  MaskForm,
  MaskInit,
  MaskMethod,
  Pattern,
  ProblemName,
  PyTree,
  Scheme,
  SparsityDistribution,
)

__all__ = [
  "Ascent",
  "DirectionDistribution",
  "DropSchedule",
  "Guidance",
  "LeafSelection",
  "LossAscent",
  "LossFn",
  "MaskForm",
  "MaskInit",
  "MaskMethod",
  "Pattern",
  "ProblemName",
  "PyTree",
  "Scheme",
  "SparsityDistribution",
]
