"""``--help`` of the commands: the usage on stdout and exit status 0, before JAX is imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from experiments import main as cli

from .conftest import REPO

MAIN_HELP = [
  "usage: python -m experiments.main",
  "--config=FILE",
  "--config.FIELD=VALUE",
  "--workdir=DIR",
  "--[no]resume",
  "--coordinator_address=HOST:PORT",
  "--num_processes=N",
  "--process_id=I",
  "-h, --help",
  # Where the config fields are documented.
  "experiments/configs/default.py",
  "docs/pipeline.md",
]


def _imported(importtime_log: str) -> set[str]:
  """Modules named in ``python -X importtime``'s lines (``import time: self | total | name``)."""
  return {
    line.rsplit("|", 1)[1].strip()
    for line in importtime_log.splitlines()
    if line.startswith("import time:") and line.count("|") == 2
  }


@pytest.mark.parametrize(
  "module,flag,expected",
  [
    ("experiments.main", "--help", MAIN_HELP),
    ("experiments.main", "-h", MAIN_HELP),
    ("experiments.study", "--help", ["usage: python -m experiments.study", "--dry-run"]),
    ("experiments.analyze", "--help", ["usage: python -m experiments.analyze", "--skip"]),
  ],
)
def test_help_prints_usage_and_exits_0_without_jax(module, flag, expected):
  # A fresh process, as a user runs it: the test process has imported JAX already.
  proc = subprocess.run(
    [sys.executable, "-X", "importtime", "-m", module, flag],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
    env={**os.environ, "PYTHONPATH": REPO},
  )
  assert proc.returncode == 0, proc.stderr[-2000:]
  for text in expected:
    assert text in proc.stdout, (text, proc.stdout)
  imported = _imported(proc.stderr)
  assert "experiments" in imported, proc.stderr[-2000:]  # The log was read.
  assert "jax" not in imported and "grain" not in imported


def test_help_wins_over_other_flags(capsys):
  # Even with flags that would be refused: help is what was asked for.
  assert cli.run(["--config.no_such_field=1", "--help"]) == 0
  out = capsys.readouterr().out
  assert out.startswith("usage: python -m experiments.main")


def test_help_after_double_dash_is_an_argument(capsys):
  # After '--' absl stops reading flags: '-h' there is a stray argument, refused as usual.
  assert cli.run(["--", "-h"]) == 2
  assert "unrecognised argument -h" in capsys.readouterr().err
