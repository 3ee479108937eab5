"""T5 (flatness), T6 (robustness) and T7 (the zeroth-order ascent) at the end of T1's RigL runs.

Analyses T1's RigL runs at 90% and 98% sparsity at their final checkpoint (no retraining:
``workdirs_of``):

* T5: the top Hessian eigenvalue, lambda_1/lambda_5 and Hutchinson's trace of the training loss
  (1024 training examples, BatchNorm in inference mode; 30 Lanczos steps, 30 trace samples);
* T6: Fashion-MNIST-C accuracy, the mean over 18 corruptions x 5 severities;
* T7: cosine between ZO-SAM's ascent direction and the exact gradient for m = 1, 4, 16 (at the
  run's mask, so the two sparsities give the masked estimator at two dimensions), and the loss
  increase of its perturbation relative to SAM's;
* and the update-direction variance of T4 at the final step.

The ZO-SAM paper claims flatter minima and better CIFAR-10-C accuracy than SGD; the SSAM paper
flatter Hessian spectra for sparse perturbations.
"""

from experiments.studies import t1_accuracy

METRICS = {
  "lambda_1": "hessian.eigenvalues.0",
  "lambda_1_over_5": "hessian.lambda1_over_lambda5",
  "trace": "hessian.trace",
  "fmnist_c": "corrupted.mean_accuracy",
  "cos_m1": "ascent.directions.zo_sam_m1.cosine_mean",
  "cos_m4": "ascent.directions.zo_sam_m4.cosine_mean",
  "cos_m16": "ascent.directions.zo_sam_m16.cosine_mean",
  "rise_m1": "ascent.directions.zo_sam_m1.increase_ratio",
  "rise_m16": "ascent.directions.zo_sam_m16.increase_ratio",
  "var_rel_sgd": "gradient_variance.heads.sgd.relative",
  "var_rel_zo_sam": "gradient_variance.heads.zo_sam_m1.relative",
}


def get_study():
  t1 = t1_accuracy.get_study()
  return {
    "name": "t5_t7_final",
    "description": (
      "Hessian (1024 examples), Fashion-MNIST-C mean accuracy, ZO ascent cosine/loss increase "
      "and update variance at the final checkpoint of T1's RigL runs."
    ),
    "base_config": t1["base_config"],
    "fixed": t1["fixed"],
    "grid": {**t1["grid"], "sparse.method": ["rigl"]},
    "seeds": t1["seeds"],
    "group_by": t1["group_by"],
    "metrics": t1["metrics"],
    "workdirs_of": t1["name"],
    "analyze": {
      "args": ["--skip", "spectrum,landscape", "--examples", "1024", "--no-progress-bar"],
      "steps": ["final"],
      "metrics": METRICS,
    },
  }
