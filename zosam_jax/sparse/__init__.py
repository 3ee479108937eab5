"""Sparse training as optax wrappers: LTH, SNIP, GraSP (static); SET, DSR, RigL, MEST (dynamic).

Usage::

    tx = optax.chain(zj.zo_sam(rho=0.05, num_directions=4, smoothing=1e-3, seed=0),
                     optax.sgd(0.05, momentum=0.9))
    tx = zj.sparse.rigl(sparsity=0.9, sparsity_distribution="erk", update_every=100,
                        end_step=30_000).wrap(tx, params)
    opt_state = tx.init(params)
    updates, opt_state = tx.update(None, opt_state, params, loss_fn=loss_fn)
    params = optax.apply_updates(params, updates)   # pruned weights are exactly 0

Every method takes ``pattern="unstructured" | "channel" | "n:m"`` (with ``n_m=(N, M)``): whole
output channels, or ``N`` of every ``M`` consecutive weights along the input axis (see
:class:`SparseMethod`).
"""

from zosam_jax._src.groups import PATTERNS
from zosam_jax.sparse.distributions import SPARSITY_DISTRIBUTIONS, erk_densities, keep_counts
from zosam_jax.sparse.dynamic import DSR, MEST, SET, DynamicMethod, RigL, dsr, mest, rigl, set_
from zosam_jax.sparse.masks import (
  count_active,
  default_prunable,
  dense_mask,
  keep_top_k,
  leaf_paths,
  prunable_leaves,
  select_highest,
  select_lowest,
  validate_mask,
)
from zosam_jax.sparse.registry import get_method, method_names, register_method
from zosam_jax.sparse.schedules import DROP_SCHEDULES, UpdateSchedule
from zosam_jax.sparse.static import (
  LTH,
  SNIP,
  GraSP,
  grasp,
  grasp_scores,
  lth,
  samples_per_class,
  snip,
  snip_scores,
)
from zosam_jax.sparse.wrapper import (
  MaskUpdate,
  SparseMethod,
  SparseState,
  reset_moments,
  sparse_wrapper,
)

__all__ = [
  "PATTERNS",
  "SPARSITY_DISTRIBUTIONS",
  "DROP_SCHEDULES",
  "DSR",
  "LTH",
  "MEST",
  "SET",
  "SNIP",
  "DynamicMethod",
  "GraSP",
  "MaskUpdate",
  "RigL",
  "SparseMethod",
  "SparseState",
  "UpdateSchedule",
  "count_active",
  "default_prunable",
  "dense_mask",
  "dsr",
  "erk_densities",
  "get_method",
  "grasp",
  "grasp_scores",
  "keep_counts",
  "leaf_paths",
  "lth",
  "mest",
  "method_names",
  "prunable_leaves",
  "register_method",
  "reset_moments",
  "rigl",
  "samples_per_class",
  "select_highest",
  "select_lowest",
  "set_",
  "snip",
  "snip_scores",
  "sparse_wrapper",
  "keep_top_k",
  "validate_mask",
]
