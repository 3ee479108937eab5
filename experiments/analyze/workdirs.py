"""Checks of the workdirs and flags, before anything is compiled, and the data of each run."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

from experiments.analyze.settings import Run, Settings
from experiments.cli import UsageError

# An LTH round's folder inside its run's workdir (experiments/lottery.py's ``round_dir``).
ROUND_DIR_RE = re.compile(r"^round_[0-9]+$")


def lock_folders(workdirs: Sequence[str]) -> list[str]:
  """The folders whose locks cover ``workdirs``: each one and, for an LTH round folder, the run's
  workdir, whose lock the training holds (its rounds are trained inside it)."""
  out = []
  for workdir in workdirs:
    out.append(workdir)
    parent = os.path.dirname(os.path.abspath(workdir))
    if ROUND_DIR_RE.match(os.path.basename(os.path.abspath(workdir))) and os.path.isfile(
      os.path.join(parent, "config.json")
    ):
      out.append(parent)
  return list(dict.fromkeys(out))


def check_workdir(workdir: str, step: int | None) -> Run:
  """Reads ``workdir``'s config and picks the checkpoint; opens and compiles nothing.

  Raises:
    UsageError: no such folder, no readable ``config.json``, no checkpoint, or none of ``step``.
    errors.ConfigError: a config the trainer refuses.
  """
  import ml_collections

  from experiments import checks
  from experiments import workdir as workdir_lib

  if not os.path.isdir(workdir):
    raise UsageError(f"workdir {workdir} does not exist")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UsageError(f"workdir {workdir} has no config.json (is it a run's folder?)")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise UsageError(f"cannot read {path}: {e}") from None
  config = workdir_lib.with_defaults(config)  # Fields added since the run was written.
  checks.validate_config(config)
  steps = workdir_lib.checkpoint_steps(workdir)
  if not steps:
    raise UsageError(f"workdir {workdir} has no checkpoint (checkpoints/ is missing or empty)")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise UsageError(
      f"workdir {workdir} has no checkpoint of step {step}; saved steps: "
      f"{', '.join(map(str, steps))}"
    )
  return Run(workdir=workdir, config=config, step=step)


def load_data(run: Run) -> None:
  """The run's training split, evaluation split and seeded training batches (no compile)."""
  from experiments import input_pipeline

  run.data_dir = run.config.dataset.data_dir or input_pipeline.default_data_dir()
  try:
    data = input_pipeline.load_run_data(run.config, run.data_dir)
  except ValueError as e:  # e.g. a batch larger than the training split
    raise UsageError(f"{run.workdir}: {e}") from None
  run.spec, run.train_split, run.eval_split, run.batches = data


def corrupted_skip_reason(run: Run, settings: Settings) -> str | None:
  if "corrupted" in settings.skip:
    return "skipped (--skip corrupted)"
  if run.config.dataset.name != "fashion_mnist":
    return (
      f"skipped: the run's dataset is {run.config.dataset.name}; Fashion-MNIST-C is only for "
      "fashion_mnist runs"
    )
  return None


def check_corruption_flags(runs: Sequence[Run], settings: Settings) -> None:
  from experiments import checks, input_pipeline

  for run in runs:
    if corrupted_skip_reason(run, settings):
      continue
    ds = run.config.dataset
    known = input_pipeline.CORRUPTIONS[ds.name]
    checks.parse_list(settings.corruptions or ds.corruptions, known, "corruption")
    checks.parse_list(
      settings.severities or ds.severities, input_pipeline.CORRUPTION_SEVERITIES, "severity"
    )
