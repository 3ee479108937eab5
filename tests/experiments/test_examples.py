"""The Flax examples (examples/flax_linen.py, examples/flax_nnx.py) run a few real steps."""

from __future__ import annotations

import numpy as np
import pytest

from examples import flax_linen, flax_nnx


@pytest.mark.parametrize("example", [flax_linen, flax_nnx], ids=["linen", "nnx"])
def test_example_trains_with_a_head(example, data_dir, fmnist_subset_dir, capsys):
  argv = ["--head", "sam", "--steps", "4", "--batch_size", "32"]
  argv += ["--data_dir", data_dir, "--source_dir", fmnist_subset_dir]
  argv += ["--train_subset", "512", "--test_subset", "256"]
  out = example.main(argv)
  assert out["steps"] == 4
  assert np.isfinite(out["after"]["loss"]) and out["after"]["loss"] < out["before"]["loss"]
  printed = capsys.readouterr().out
  assert "before training: test loss" in printed and "after 4 steps" in printed


def test_example_refuses_a_batch_larger_than_the_data(data_dir, fmnist_subset_dir):
  argv = ["--batch_size", "1024", "--data_dir", data_dir, "--source_dir", fmnist_subset_dir]
  with pytest.raises(SystemExit, match="--batch_size 1024 must not exceed the 512"):
    flax_linen.main(argv + ["--train_subset", "512", "--test_subset", "256"])
