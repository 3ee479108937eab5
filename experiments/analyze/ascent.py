"""``ascent``: how well ZO-SAM's ascent direction (m = 1, 4, 16) stands in for SAM's gradient,
on one training batch: cosine to the gradient and loss increase."""

from __future__ import annotations

import math
from typing import Any

from experiments.analyze.json_values import finite, finite_list
from experiments.analyze.losses import batch_loss
from experiments.analyze.restored import Restored
from experiments.analyze.settings import BATCH_NORM


def measure(r: Restored, model: Any) -> dict[str, Any]:
  """Cosine to the gradient and loss increase of SAM's and ZO-SAM's ascent directions."""
  import jax

  import zosam_jax.diagnostics as zd

  s, key, dropout_key = r.settings, r.keys["ascent"], r.dropout_key
  rho, rho_source = r.rho()
  batch = {k: v[0] for k, v in r.train_batches(1).items()}
  directions = {"sam": None, **{f"zo_sam_m{m}": m for m in s.ascent_directions}}
  out: dict[str, Any] = {
    "rho": rho,
    "rho_source": rho_source,
    "num_samples": s.ascent_samples,
    "batch_size": int(batch["label"].shape[0]),
    "batch_norm": BATCH_NORM["ascent"],
    "directions": {},
  }
  for name, m in directions.items():

    def compute(params, batch_stats, batch, mask, m=m):
      def loss_fn(p):
        return batch_loss(model, p, batch_stats, batch, dropout_key)

      if m is None:
        ascent_fn = zd.gradient_ascent_fn(loss_fn)
      else:
        ascent_fn = zd.rge_ascent_fn(loss_fn, zeroth_order=r.zeroth_order(m), weight_mask=mask)
      return zd.ascent_quality(
        loss_fn,
        params,
        ascent_fn,
        rho=rho,
        key=key,
        weight_mask=mask,
        num_samples=s.ascent_samples,
      )

    q = jax.device_get(jax.jit(compute)(r.params, r.batch_stats, batch, r.weight_mask))
    entry = {
      "num_directions": m,
      "cosine_mean": finite(q.cosine_mean),
      "cosine_std": finite(q.cosine_std),
      "increase_mean": finite(q.increase_mean),
      "increase_std": finite(q.increase_std),
      "sam_increase": finite(q.sam_increase),
      "increase_ratio": finite(q.increase_ratio),
      "cosines": finite_list(q.cosines),
    }
    if m is not None:  # The scale of a random direction's cosine: sqrt(m / d).
      entry["sqrt_m_over_d"] = math.sqrt(m / r.active)
    out["directions"][name] = entry
  return out
