"""``spectrum``: the Hessian's eigenvalue density by stochastic Lanczos quadrature."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.analyze.json_values import finite, finite_list
from experiments.analyze.losses import subset_loss
from experiments.analyze.restored import Restored


def measure(r: Restored, model: Any) -> dict[str, Any]:
  """The Hessian's eigenvalue density by stochastic Lanczos quadrature."""
  import jax

  import zosam_jax.diagnostics as zd

  s, key = r.settings, r.keys["spectrum"]
  data = r.subset(s.examples)

  def compute(params, batch_stats, data, mask):
    return zd.hessian_spectrum(
      lambda p: subset_loss(model, p, batch_stats, data),
      params,
      key,
      num_iterations=s.iterations,
      num_vectors=s.spectrum_vectors,
      weight_mask=mask,
    )

  nodes, weights = jax.device_get(jax.jit(compute)(r.params, r.batch_stats, data, r.weight_mask))
  return {
    "examples": int(np.sum(data[2] > 0)),
    "nodes": finite_list(nodes),
    "weights": finite_list(weights),
    "lanczos_iterations": s.iterations,
    "num_vectors": s.spectrum_vectors,
    # d * sum(w * theta): SLQ's own (Hutchinson) trace estimate over its start vectors.
    "slq_trace": finite(r.active * np.sum(weights * nodes)),
  }
