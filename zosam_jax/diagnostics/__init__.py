"""Read-only measurements of a loss at fixed parameters: curvature, gradient noise, landscapes.

Every function is pure and jit-compilable (close over ``loss_fn``), accumulates in float32 and,
given ``mask`` (a 0/1 pytree shaped like the parameters), works on the active subspace only:
pruned coordinates are neither probed nor counted.

* Curvature from Hessian-vector products: :func:`hessian_vector_product`,
  :func:`hessian_eigenvalues` (Lanczos), :func:`hessian_trace` (Hutchinson),
  :func:`hessian_spectrum` (stochastic Lanczos quadrature) and :func:`spectral_density`.
* Gradient noise: :func:`gradient_variance` of any ``grad_fn(params, batch)``;
  :func:`head_gradient_fn` turns an optimizer head (SGD, SAM, ZO-SAM, ...) into one.
* Loss landscapes: :func:`filter_normalized_direction`, :func:`loss_landscape`.
* Ascent quality of SAM's perturbation: :func:`ascent_quality`, with :func:`rge_ascent_fn`
  (ZO-SAM) and :func:`gradient_ascent_fn` (SAM).

See ``docs/diagnostics.md`` for costs and a worked example.
"""

from zosam_jax.diagnostics.ascent import (
  AscentQuality,
  ascent_quality,
  gradient_ascent_fn,
  rge_ascent_fn,
)
from zosam_jax.diagnostics.gradient_noise import gradient_variance, head_gradient_fn
from zosam_jax.diagnostics.hessian import (
  SpectralDensity,
  TraceEstimate,
  hessian_eigenvalues,
  hessian_spectrum,
  hessian_trace,
  hessian_vector_product,
  spectral_density,
)
from zosam_jax.diagnostics.landscape import (
  LossLandscape,
  filter_normalized_direction,
  loss_landscape,
)

__all__ = [
  "AscentQuality",
  "LossLandscape",
  "SpectralDensity",
  "TraceEstimate",
  "ascent_quality",
  "filter_normalized_direction",
  "gradient_ascent_fn",
  "gradient_variance",
  "head_gradient_fn",
  "hessian_eigenvalues",
  "hessian_spectrum",
  "hessian_trace",
  "hessian_vector_product",
  "loss_landscape",
  "rge_ascent_fn",
  "spectral_density",
]
