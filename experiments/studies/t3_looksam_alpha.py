"""A diagnostic of T3's LookSAM arm: its final accuracy against the reuse weight ``alpha``.

In T3, LookSAM (the paper's ``k = 5``, ``alpha = 0.7``, at the shared rho) ended about 3 points
below SGD and SAM and never reached 89%. Between refreshes LookSAM steps along
``g + alpha ||g||/||g_v|| g_v``: the reused component's norm is ``alpha ||g||`` however small the
measured ``g_v`` was. This study asks whether the gap follows ``alpha``. With ``alpha = 0``,
LookSAM is a SAM step every ``k`` steps and plain gradient steps in between, so if the
implementation is sound it should end within the seed spread of SGD and SAM.

One seed, not a tuned arm: T3's table keeps the paper's defaults, as every arm keeps its own.
Same cell as T3's LookSAM seed 0 except ``optimizer.looksam.alpha``.
"""

from experiments.studies import t3_convergence


def get_study():
  t3 = t3_convergence.get_study()
  return {
    "name": "t3_looksam_alpha",
    "description": (
      "Diagnostic, one seed: T3's LookSAM cell (RigL 90%, k = 5) against the reuse weight alpha "
      "(T3 ran alpha = 0.7)."
    ),
    "base_config": t3["base_config"],
    "fixed": {**t3["fixed"], "optimizer.name": "looksam"},
    "grid": {"optimizer.looksam.alpha": [0.0, 0.1, 0.35]},
    "seeds": [0],
    "group_by": ["optimizer.looksam.alpha"],
    "metrics": t3["metrics"],
    "target_accuracy": t3["target_accuracy"],
  }
