"""``variance``: the variance across training batches of the update direction of the SGD
(exact gradient), SAM and ZO-SAM (m=1) heads (BatchNorm in training mode)."""

from __future__ import annotations

from typing import Any

from experiments.analyze.json_values import finite
from experiments.analyze.losses import batch_loss
from experiments.analyze.restored import Restored
from experiments.analyze.settings import BATCH_NORM


def measure(r: Restored, model: Any) -> dict[str, Any]:
  """The variance across training batches of the SGD, SAM and ZO-SAM (m=1) directions."""
  import jax

  import zosam_jax as zj
  import zosam_jax.diagnostics as zd

  s, key, dropout_key = r.settings, r.keys["variance"], r.dropout_key
  rho, rho_source = r.rho()
  adaptive = bool(r.run.config.optimizer.adaptive)
  heads = {
    "sgd": (zj.exact_gradient(), None),
    "sam": (zj.sam(rho, adaptive=adaptive), None),
    "zo_sam_m1": (
      zj.zo_sam(rho, zeroth_order=r.zeroth_order(1), adaptive=adaptive),
      key,
    ),
  }
  batches = r.train_batches(s.batches)
  out: dict[str, Any] = {
    "batches": s.batches,
    "batch_size": int(batches["label"].shape[1]),
    "rho": rho,
    "rho_source": rho_source,
    "adaptive": adaptive,
    "batch_norm": BATCH_NORM["variance"],
    "heads": {},
  }
  for name, (head, head_key) in heads.items():

    def compute(params, batch_stats, batches, mask, head=head, head_key=head_key):
      def loss_of_batch(p, b):
        return batch_loss(model, p, batch_stats, b, dropout_key)

      grad_fn = zd.head_gradient_fn(head, loss_of_batch, key=head_key, weight_mask=mask)
      return zd.gradient_variance(grad_fn, params, batches, weight_mask=mask)

    stats = jax.device_get(jax.jit(compute)(r.params, r.batch_stats, batches, r.weight_mask))
    out["heads"][name] = {k: finite(v) for k, v in stats.items()}
  return out
