"""``hessian``: the top-5 Hessian eigenvalues (Lanczos), lambda_1/lambda_5 and Hutchinson's trace
with its standard error, of the mean training loss over a fixed subset."""

from __future__ import annotations

from typing import Any

import numpy as np

from experiments.analyze.json_values import finite, finite_list, ratio
from experiments.analyze.losses import subset_loss
from experiments.analyze.restored import Restored
from experiments.analyze.settings import NUM_EIGENVALUES


def measure(r: Restored, model: Any) -> dict[str, Any]:
  """The top Hessian eigenvalues (Lanczos) and Hutchinson's trace of the subset loss."""
  import jax

  import zosam_jax.diagnostics as zd

  s = r.settings
  data = r.subset(s.examples)
  k_eig, k_trace = r.keys["hessian"], r.keys["trace"]

  def compute(params, batch_stats, data, mask):
    def loss_fn(p):
      return subset_loss(model, p, batch_stats, data)

    eigenvalues = zd.hessian_eigenvalues(
      loss_fn,
      params,
      k_eig,
      k=NUM_EIGENVALUES,
      num_iterations=s.iterations,
      weight_mask=mask,
    )
    trace = zd.hessian_trace(
      loss_fn, params, k_trace, num_samples=s.trace_samples, weight_mask=mask
    )
    return loss_fn(params), eigenvalues, trace

  loss, eigenvalues, trace = jax.device_get(
    jax.jit(compute)(r.params, r.batch_stats, data, r.weight_mask)
  )
  eig = finite_list(eigenvalues)
  return {
    "examples": int(np.sum(data[2] > 0)),
    "loss": finite(loss),
    "eigenvalues": eig,
    "lambda1_over_lambda5": ratio(eig[0], eig[-1]),
    "trace": finite(trace.estimate),
    "trace_standard_error": finite(trace.standard_error),
    "lanczos_iterations": s.iterations,
    "trace_samples": s.trace_samples,
  }
