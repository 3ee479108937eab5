"""T2: ZO-SAM as a drop-in optimizer for the seven sparse-training methods, at 90% sparsity.

{LTH, SNIP, GraSP, SET, DSR, RigL, MEST} x {SGD, ZO-SAM (m=1)}, 3 seeds, the shared protocol
(``protocol.py``), rho from ``rho_tuning``. LTH runs its rounds inside one cell (each round the
full schedule, so an LTH cell costs ``rounds + 1`` times the others). The RigL and MEST cells
are T1's runs (same config hash, same code): ``shares_cells_with`` links T1's finished workdirs
instead of training them again.
"""

from experiments.studies import protocol

# ZO-SAM paper (seed 000), CIFAR-10 ResNet-32 at 90%: its +0.38 to +2.54 points over every method.


def get_study():
  return {
    "name": "t2_methods",
    "description": (
      "Every sparse-training method with SGD and with ZO-SAM at 90% sparsity on real "
      f"Fashion-MNIST (small CNN, {protocol.NUM_EPOCHS} epochs), rho = {protocol.tuned_rho()}."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {**protocol.FIXED, "optimizer.rho": protocol.tuned_rho(), "sparse.sparsity": 0.9},
    "grid": {
      "sparse.method": ["lth", "snip", "grasp", "set", "dsr", "rigl", "mest"],
      "optimizer.name": ["sgd", "zo_sam"],
    },
    "seeds": protocol.SEEDS,
    "group_by": ["sparse.method", "optimizer.name"],
    "metrics": ["test_accuracy", "test_loss"],
    "shares_cells_with": ["t1_accuracy"],
  }
