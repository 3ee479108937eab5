"""``landscape``: 1-D and 2-D filter-normalised loss landscapes around the restored weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.analyze.json_values import finite_list
from experiments.analyze.losses import subset_loss
from experiments.analyze.restored import Restored


def measure(r: Restored, model: Any) -> dict[str, Any]:
  """1-D and 2-D filter-normalised loss landscapes of the subset loss."""
  import jax

  import zosam_jax.diagnostics as zd

  s, key = r.settings, r.keys["landscape"]
  data = r.subset(min(s.landscape_examples, s.examples))

  def compute(params, batch_stats, data, mask):
    def loss_fn(p):
      return subset_loss(model, p, batch_stats, data)

    # The same key: the 1-D line is the alpha axis (beta = 0) of the 2-D plane.
    line = zd.loss_landscape(
      loss_fn, params, key, num_points=s.landscape_points, span=s.span, weight_mask=mask
    )
    plane = zd.loss_landscape(
      loss_fn,
      params,
      key,
      num_points=s.landscape_points_2d,
      span=s.span,
      two_dimensional=True,
      weight_mask=mask,
    )
    return line.alphas, line.losses, plane.alphas, plane.betas, plane.losses

  alphas, losses, alphas2, betas2, losses2 = jax.device_get(
    jax.jit(compute)(r.params, r.batch_stats, data, r.weight_mask)
  )
  return {
    "examples": int(np.sum(data[2] > 0)),
    "span": s.span,
    "one_dimensional": {"alphas": finite_list(alphas), "losses": finite_list(losses)},
    "two_dimensional": {
      "alphas": finite_list(alphas2),
      "betas": finite_list(betas2),
      "losses": [finite_list(row) for row in losses2],  # losses[i][j] at (alphas[i], betas[j]).
    },
  }
