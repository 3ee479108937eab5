"""Numbers as ``analysis.json`` holds them: strict JSON has no NaN or infinity (null there)."""

from __future__ import annotations

import math

import numpy as np


def finite(x) -> float | None:
  """A finite float, or None."""
  x = float(x)
  return x if math.isfinite(x) else None


def finite_list(xs) -> list:
  """:func:`finite` of every entry, flattened."""
  return [finite(x) for x in np.asarray(xs).reshape(-1)]


def ratio(a, b) -> float | None:
  """``a / b`` when both are numbers and ``b`` is not 0, else None."""
  if a is None or b is None or b == 0:
    return None
  return finite(a / b)
