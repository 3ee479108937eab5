"""Evaluation over a whole split, and over the corrupted test sets (CIFAR-10-C, Fashion-MNIST-C)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding

from experiments import input_pipeline, multihost
from experiments.checks import parse_list


def to_global(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def evaluate(
  eval_fn, state, split, spec, config, sharding, prefix: str = "test"
) -> dict[str, float]:
  """``<prefix>_loss`` and ``<prefix>_accuracy`` over every example of ``split``."""
  totals = None
  for batch in input_pipeline.eval_batches(
    split, spec, config.eval_batch_size, jax.process_index(), jax.process_count()
  ):
    out = eval_fn(state, to_global(batch, sharding))
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {
    f"{prefix}_loss": float(totals["loss_sum"]) / count,
    f"{prefix}_accuracy": float(totals["correct"]) / count,
  }


def evaluate_corrupted(eval_fn, state, config, data_dir, sharding, writer, step) -> dict:
  """Test accuracy on each requested corruption/severity of the dataset, and their mean."""
  ds = config.dataset
  corruptions = parse_list(ds.corruptions, input_pipeline.CORRUPTIONS[ds.name], "corruption")
  severities = [
    int(s) for s in parse_list(ds.severities, input_pipeline.CORRUPTION_SEVERITIES, "severity")
  ]
  spec = input_pipeline.SPECS[ds.name]
  results = {}
  for corruption in corruptions:
    for severity in severities:
      split = multihost.main_first(  # The first use builds it into data_dir.
        f"corrupted {corruption}_{severity}",
        lambda c=corruption, s=severity: input_pipeline.load_corrupted_split(
          ds.name, c, s, data_dir, ds.test_subset, ds.source_dir
        ),
      )
      out = evaluate(eval_fn, state, split, spec, config, sharding)
      name = f"{corruption}_{severity}"
      results[name] = out["test_accuracy"]
      writer.write({"kind": "corrupted", "step": step, "name": name, **out})
  results["mean"] = float(np.mean(list(results.values())))
  writer.write(
    {"kind": "corrupted", "step": step, "name": "mean", "test_accuracy": results["mean"]}
  )
  return results
