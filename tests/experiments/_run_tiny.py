"""Runs the tiny test config in a fresh process (used for the multi-device test).

python -m tests.experiments._run_tiny DATA_DIR SOURCE_DIR WORKDIR OPTIMIZER
"""

from __future__ import annotations

import json
import sys

import jax
import numpy as np

from experiments import train
from tests.experiments.conftest import tiny_config


def main(argv: list[str]) -> None:
  data_dir, source_dir, workdir, optimizer = argv
  config = tiny_config(data_dir, source_dir, optimizer__name=optimizer)
  result = train.train_and_evaluate(config, workdir)
  leaves = [np.asarray(x).tolist() for x in jax.tree.leaves(result["params"])[:2]]
  print("RESULT " + json.dumps({"devices": jax.device_count(), "first_leaves": leaves}))


if __name__ == "__main__":
  main(sys.argv[1:])
