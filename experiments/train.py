"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

One run (``trainer.train_run``), or with ``sparse.method=lth`` LTH's rounds of runs
(``lottery.train_lottery``). The names other modules read from here (``build``, ``train_run``,
``read_metrics``, ...) are re-exported from where they are defined.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_collections

from experiments import lottery, optimizers
from experiments.checks import validate_config
from experiments.errors import ConfigError
from experiments.trainer import TIMING_KEYS, build, build_abstract, train_run, train_step_fn
from experiments.workdir import read_metrics

__all__ = [
  "ConfigError",
  "TIMING_KEYS",
  "build",
  "build_abstract",
  "read_metrics",
  "train_and_evaluate",
  "train_run",
  "train_step_fn",
  "validate_config",
]


def train_and_evaluate(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  resume: bool = False,
  step_hook: Callable[[int], None] | None = None,
) -> dict[str, Any]:
  """Trains and evaluates: one run (:func:`train_run`), or with ``sparse.method=lth`` its rounds
  (``lottery.train_lottery``; ``step_hook`` sees each round's steps). Returns the final metrics."""
  if config.sparse.method in optimizers.ROUND_BASED_SPARSE:
    return lottery.train_lottery(config, workdir, resume=resume, step_hook=step_hook)
  return train_run(config, workdir, resume=resume, step_hook=step_hook)
