"""T1: does ZO-SAM improve sparse training, and is it the zeroth-order information that helps?

{RigL, MEST} x {SGD, SAM, ZO-SAM (m=1), random-perturbation control} x {90%, 98%} sparsity,
3 seeds, the shared protocol (``protocol.py``), rho tuned once for SAM (``rho_tuning.py``) and
used by all three perturbing arms. The control costs what ZO-SAM costs less its two probe
forwards; if ZO-SAM does no better, the zeroth-order direction is not what helps.
"""

from experiments.studies import protocol

# ZO-SAM paper (seed 000), CIFAR-10 ResNet-32 test accuracy in %, SGD -> ZO-SAM.
PAPER = {
  ("rigl", 0.9, "sgd"): 93.07,
  ("rigl", 0.9, "zo_sam"): 93.66,
  ("rigl", 0.98, "sgd"): 89.00,
  ("rigl", 0.98, "zo_sam"): 90.61,
  ("mest", 0.98, "sgd"): 89.22,
  ("mest", 0.98, "zo_sam"): 91.53,
}


def get_study():
  return {
    "name": "t1_accuracy",
    "description": (
      "Test accuracy on real Fashion-MNIST (small CNN, "
      f"{protocol.NUM_EPOCHS} epochs), rho = {protocol.tuned_rho()} from rho_tuning. "
      "The paper's CIFAR-10 numbers are beside ours for the direction of the effect only."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {**protocol.FIXED, "optimizer.rho": protocol.tuned_rho()},
    "grid": {
      "sparse.method": ["rigl", "mest"],
      "sparse.sparsity": [0.9, 0.98],
      "optimizer.name": ["sgd", "sam", "zo_sam", "random_perturbation"],
    },
    "seeds": protocol.SEEDS,
    "group_by": ["sparse.method", "sparse.sparsity", "optimizer.name"],
    "metrics": ["test_accuracy", "test_loss"],
    "paper": {
      "source": protocol.PAPER_SOURCE,
      "metric": "test_accuracy",
      "scale": 100,
      "comparable": False,
      "values": PAPER,
    },
    "target_accuracy": 0.88,
  }
