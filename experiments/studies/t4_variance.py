"""T4: the variance of each optimizer's update direction early, midway and at the end of training.

Analyses T1's MEST runs at 90% and 98% sparsity (no retraining: ``workdirs_of``), at steps 390
(1/6 of training), 1170 (half) and the final step 2340; those runs keep a checkpoint every 390
steps. At each checkpoint ``experiments.analyze``'s ``variance`` part measures, over 10 training
batches, the variance of the update direction of the SGD, SAM and ZO-SAM (m=1) heads (all three
at the same parameters, the run's rho), relative to the squared norm of its mean. The ZO-SAM
paper (seed 000) reports about a third of SGD's gradient variance for ZO-SAM at 90% sparsity.
T1's RigL runs were trained before checkpoints were kept every 390 steps, hence MEST here.
"""

from experiments.studies import t1_accuracy

STEPS = [390, 1170, "final"]
HEADS = {"sgd": "sgd", "sam": "sam", "zo_sam": "zo_sam_m1"}


def get_study():
  t1 = t1_accuracy.get_study()
  return {
    "name": "t4_variance",
    "description": (
      "Relative variance (variance / squared norm of the mean) of the SGD, SAM and ZO-SAM (m=1) "
      "update directions over 10 training batches, at steps 390, 1170 and 2340 of T1's MEST "
      "runs; each row is the optimizer the run was trained with."
    ),
    "base_config": t1["base_config"],
    "fixed": t1["fixed"],
    "grid": {**t1["grid"], "sparse.method": ["mest"]},
    "seeds": t1["seeds"],
    "group_by": t1["group_by"],
    "metrics": t1["metrics"],
    "workdirs_of": t1["name"],
    "analyze": {
      "args": ["--skip", "hessian,spectrum,landscape,ascent,corrupted", "--no-progress-bar"],
      "steps": STEPS,
      "metrics": {
        f"var_rel_{name}": f"gradient_variance.heads.{key}.relative" for name, key in HEADS.items()
      },
    },
  }
