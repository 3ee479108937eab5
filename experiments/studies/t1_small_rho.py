"""T1 at the radius the extended grid prefers: RigL 90%, the three perturbing arms at rho = 0.005.

``rho_tuning`` picked rho = 0.02 at the lower edge of its grid; ``rho_tuning_low`` then found
validation accuracy still rising as rho shrinks (0.005: 0.9046, 0.01: 0.9039, 0.02: 0.9020,
SGD: 0.9010; one seed). T1 had been running with 0.02, so this study repeats its RigL 90% cell
for SAM, ZO-SAM (m=1) and the random-perturbation control at 0.005, seeds 0-2, everything else
as T1. SGD does not depend on rho: compare with T1's SGD rows.
"""

from experiments.studies import protocol, t1_accuracy

RHO = 0.005


def get_study():
  t1 = t1_accuracy.get_study()
  return {
    "name": "t1_small_rho",
    "description": (
      f"T1's RigL 90% cell with rho = {RHO} (the best of rho_tuning_low) for the perturbing "
      "arms; SGD is in T1."
    ),
    "base_config": t1["base_config"],
    "fixed": {
      **protocol.FIXED,
      "optimizer.rho": RHO,
      "sparse.method": "rigl",
      "sparse.sparsity": 0.9,
    },
    "grid": {"optimizer.name": ["sam", "zo_sam", "random_perturbation"]},
    "seeds": t1["seeds"],
    "group_by": ["optimizer.name"],
    "metrics": t1["metrics"],
    "target_accuracy": t1["target_accuracy"],
  }
