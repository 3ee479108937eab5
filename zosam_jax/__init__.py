"""zosam_jax: sharpness-aware and zeroth-order optimisation for sparse training, in JAX/Optax.

Heads of an ``optax.chain`` (they take ``loss_fn=`` as an extra argument of ``update``):
``exact_gradient``, ``sam``, ``zo_sam``, ``random_perturbation`` (the control), ``sparse_sam``,
and the general ``sharpness_aware``. Efficient variants (same interface): ``looksam``, ``gsam``,
``esam`` (each with a zeroth-order ascent option where it applies) and ``adaptive_zo_sam``.
Zeroth-order options travel as one ``ZerothOrderOptions``.
Sparse training (LTH, SNIP, GraSP, SET, DSR, RigL, MEST) wraps any chain: ``zosam_jax.sparse``.
Fully zeroth-order optimizers (only loss values): ``zosa``, ``zo_sgd``, ``zo_adam``, ``mezo``.
Read-only measurements (Hessian, gradient variance, landscapes, ascent quality):
``diagnostics``. Pure functions: ``rge``, ``rge_dynamic``, ``sam_gradient``, ``zo_sam_gradient``.

State protocol: the state of every head and every zeroth-order optimizer has a ``value`` (the
loss its exact pass, or its probes at ``theta``, measured) and an ``aux`` (that pass's aux with
``has_aux=True``); read them with ``optax.tree_utils.tree_get(opt_state, "value")``.
"""

from zosam_jax import (
  diagnostics,
  efficient_sam,
  estimators,
  perturbation_masks,
  sparse,
  synthetic,
  typing,
  zeroth_order,
)
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax.efficient_sam import (
  AdaptiveZOSAMState,
  GSAMState,
  LookSAMState,
  adaptive_zo_sam,
  esam,
  gsam,
  looksam,
)
from zosam_jax.estimators import (
  ProbeInfo,
  rge,
  rge_dynamic,
  rge_with_coefficients,
  sample_direction,
)
from zosam_jax.sharpness import (
  SharpnessAwareState,
  exact_gradient,
  perturbation,
  random_perturbation,
  sam,
  sam_gradient,
  sharpness_aware,
  sparse_sam,
  zo_sam,
  zo_sam_gradient,
)
from zosam_jax.zeroth_order import ZerothOrderState, mezo, zo_adam, zo_sgd, zosa

# The one version source: the build reads this literal without importing the package
# (pyproject.toml, [tool.setuptools.dynamic]), so it must stay a plain string.
__version__ = "0.3.0"

__all__ = [
  "AdaptiveZOSAMState",
  "GSAMState",
  "LookSAMState",
  "ProbeInfo",
  "SharpnessAwareState",
  "ZerothOrderOptions",
  "ZerothOrderState",
  "adaptive_zo_sam",
  "diagnostics",
  "efficient_sam",
  "esam",
  "estimators",
  "exact_gradient",
  "gsam",
  "looksam",
  "mezo",
  "perturbation",
  "perturbation_masks",
  "random_perturbation",
  "rge",
  "rge_dynamic",
  "rge_with_coefficients",
  "sam",
  "sam_gradient",
  "sample_direction",
  "sharpness_aware",
  "sparse",
  "sparse_sam",
  "synthetic",
  "typing",
  "zeroth_order",
  "zo_adam",
  "zo_sam",
  "zo_sam_gradient",
  "zo_sgd",
  "zosa",
]
