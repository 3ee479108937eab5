"""``corrupted``: Fashion-MNIST-C accuracy per corruption x severity, their mean, and the
clean accuracy."""

from __future__ import annotations

from typing import Any

from experiments.analyze.json_values import finite
from experiments.analyze.restored import Restored
from experiments.analyze.settings import BATCH_NORM


def measure(r: Restored, model: Any) -> dict[str, Any]:
  """Clean and Fashion-MNIST-C accuracy of the restored state."""
  import jax
  import ml_collections

  from experiments import evaluation, steps
  from experiments import workdir as workdir_lib

  run, s = r.run, r.settings
  config = ml_collections.ConfigDict(run.config.to_dict())
  if s.corruptions:
    config.dataset.corruptions = s.corruptions
  if s.severities:
    config.dataset.severities = s.severities
  eval_step = jax.jit(steps.make_eval_step(model), out_shardings=r.replicated)
  split_name = "validation" if config.dataset.validation_size else "test"
  clean = evaluation.evaluate(
    eval_step, r.state, run.eval_split, run.spec, config, r.batch_sharding, split_name
  )
  results = evaluation.evaluate_corrupted(
    eval_step,
    r.state,
    config,
    run.data_dir,
    r.batch_sharding,
    workdir_lib.MetricWriter(run.workdir, enabled=False),  # Leaves metrics.jsonl alone.
    run.step,
  )
  mean = results.pop("mean")
  return {
    "dataset": f"{config.dataset.name}_corrupted",
    "corruptions": config.dataset.corruptions,
    "severities": config.dataset.severities,
    "test_subset": config.dataset.test_subset,
    "clean_split": split_name,
    "clean_accuracy": finite(clean[f"{split_name}_accuracy"]),
    "accuracy": {k: finite(v) for k, v in results.items()},
    "mean_accuracy": finite(mean),
    "batch_norm": BATCH_NORM["corrupted"],
  }
