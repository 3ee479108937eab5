"""The Flax examples (examples/flax_linen.py, examples/flax_nnx.py) run as scripts, a few steps.

Each runs as a user runs it, ``python examples/NAME.py`` from the repository root in a fresh
process, against the zosam_jax this test imported (the checkout, or an installed wheel).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import zosam_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
HAVE_FASHION_MNIST = os.path.isfile(os.path.join(DEBIAN_DIR, "t10k-labels-idx1-ubyte.gz"))
SMALL = ["--batch_size", "32", "--train_subset", "512", "--test_subset", "256"]


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
  # The folder holding the zosam_jax this session imported goes first on the script's path, so
  # the script does not pick up another copy (an editable install of another checkout).
  library = os.path.dirname(os.path.dirname(os.path.abspath(zosam_jax.__file__)))
  env = {**os.environ, "PYTHONPATH": library}
  return subprocess.run(
    [sys.executable, os.path.join("examples", f"{name}.py"), *args],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )


def losses(stdout: str, steps: int) -> tuple[float, float]:
  """The test losses the script printed before and after training."""
  before = re.search(r"before training: test loss ([0-9.]+)", stdout)
  after = re.search(rf"after {steps} steps: test loss ([0-9.]+)", stdout)
  assert before and after, stdout
  return float(before.group(1)), float(after.group(1))


@pytest.mark.parametrize("name", ["flax_linen", "flax_nnx"])
def test_example_trains_with_a_head(name):
  proc = run_example(name, "--head", "sam", "--steps", "4", *SMALL)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  before, after = losses(proc.stdout, 4)
  assert after < before
  # Debian's files are read when installed; otherwise the script says it trains on synthetic data.
  assert ("synthetic data" in proc.stdout) != HAVE_FASHION_MNIST, proc.stdout


def test_example_falls_back_to_synthetic_data(tmp_path):
  args = ["--head", "zo_sam", "--steps", "4", "--data-dir", str(tmp_path), *SMALL]
  proc = run_example("flax_linen", *args)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  assert f"note: {tmp_path}: no Fashion-MNIST idx files" in proc.stdout
  before, after = losses(proc.stdout, 4)
  assert after < before  # the synthetic classes are learnable


def test_example_refuses_a_batch_larger_than_the_data():
  proc = run_example("flax_linen", "--batch_size", "1024", "--train_subset", "512")
  assert proc.returncode != 0
  assert "--batch_size 1024 must not exceed the 512 training images" in proc.stderr
