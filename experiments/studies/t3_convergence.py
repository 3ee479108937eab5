"""T3: epochs and wall-clock seconds to a target test accuracy, RigL at 90% sparsity.

SGD, SAM, ESAM, LookSAM, GSAM, ZO-SAM, ZO-LookSAM and ZO-ESAM under the shared protocol, 3 seeds.
Seconds are training seconds (``train_epoch_time_s``, compilation and evaluation excluded) and
only mean something when the machine runs nothing else: run this study alone (``--jobs 1``).
The paper (ZO-SAM, seed 000) reports epochs to 90% on CIFAR-10: SGD 104, ESAM 75, LookSAM 79,
GSAM 84, ZO-SAM 70.
"""

from experiments.studies import protocol


def get_study():
  return {
    "name": "t3_convergence",
    "description": (
      "Epochs and training seconds to 90% test accuracy on real Fashion-MNIST (small CNN, RigL "
      f"90%, {protocol.NUM_EPOCHS} epochs), rho = {protocol.tuned_rho()}. Seconds are only "
      "comparable within one quiet machine."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {
      **protocol.FIXED,
      "optimizer.rho": protocol.tuned_rho(),
      "sparse.method": "rigl",
      "sparse.sparsity": 0.9,
    },
    "grid": {
      "optimizer.name": [
        "sgd",
        "sam",
        "esam",
        "looksam",
        "gsam",
        "zo_sam",
        "zo_looksam",
        "zo_esam",
      ],
    },
    "seeds": protocol.SEEDS,
    "group_by": ["optimizer.name"],
    "metrics": ["test_accuracy"],
    "target_accuracy": 0.90,
  }
