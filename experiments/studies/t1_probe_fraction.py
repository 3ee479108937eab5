"""T1 companion: ZO-SAM whose probes see a quarter of each batch, in T1's RigL 90% cell.

Probing on a sub-batch cuts ZO-SAM's probe cost by the fraction (limit
``t_sgd + m (2 t_forward(B/4) + t_draw)``) and is the m-sharpness regime that SAM's authors found
to generalise better (Foret et al. 2021). Same protocol as ``t1_accuracy`` (``protocol.py``: real
Fashion-MNIST, small CNN, 5 epochs, batch 128, RigL every 100 steps until 75%, ERK, rho tuned
once for SAM), 3 seeds, so its rows sit beside T1's full-batch ZO-SAM.

Two cells: quarter-batch probes, and full-batch probes re-run with the same code. The second is
there because RigL changed since T1 ran: it now grows from the gradient the head computed (at
``theta + eps`` under ZO-SAM) instead of a separate gradient at ``theta``, and the step of a
mask update follows the mask before the update (docs/sparse_training.md), and the training
input moved to grain (another data order, docs/pipeline.md). T1's own ZO-SAM rows come from the
earlier code; the pair here differs only in ``optimizer.probe_fraction``. To run
the quarter-batch cell alone: ``--cells '0.25-*'``.
"""

from experiments.studies import protocol


def get_study():
  rho = protocol.tuned_rho()
  return {
    "name": "t1_probe_fraction",
    "description": (
      "ZO-SAM (m=1) with probes on the first quarter of each batch against full-batch probes, "
      f"RigL 90%, real Fashion-MNIST (small CNN, {protocol.NUM_EPOCHS} epochs), rho = {rho} "
      "from rho_tuning; compare with t1_accuracy's rigl / 0.9 rows."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {
      **protocol.FIXED,
      "optimizer.rho": rho,
      "optimizer.name": "zo_sam",
      "sparse.method": "rigl",
      "sparse.sparsity": 0.9,
    },
    "grid": {"optimizer.probe_fraction": [0.25, 1.0]},
    "seeds": protocol.SEEDS,
    "group_by": ["sparse.method", "sparse.sparsity", "optimizer.name", "optimizer.probe_fraction"],
    "metrics": ["test_accuracy", "test_loss"],
    "target_accuracy": 0.88,
  }
