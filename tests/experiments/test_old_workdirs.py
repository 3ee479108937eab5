"""Workdirs written by earlier versions stay readable by the analysis: configs without the fields
added since (filled at their defaults) and checkpoints whose optimizer state has another layout
(the weights, BatchNorm statistics and sparse mask are read, the rest is left as built)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import workdir as workdir_lib
from experiments.configs import default


def test_with_defaults_fills_only_the_missing_fields():
  saved = default.get_config().to_dict()
  del saved["model"]["dtype"], saved["accumulation_steps"], saved["optimizer"]["guidance"]
  saved["batch_size"], saved["optimizer"]["rho"] = 7, 0.123
  config = workdir_lib.with_defaults(ml_collections.ConfigDict(saved))
  fresh = default.get_config()
  assert config.model.dtype == fresh.model.dtype
  assert config.accumulation_steps == fresh.accumulation_steps
  assert config.optimizer.guidance == fresh.optimizer.guidance
  assert (config.batch_size, config.optimizer.rho) == (7, 0.123)  # Saved values are kept.
  assert "dtype" not in saved["model"]  # The caller's config is not changed.


class _NewState(NamedTuple):
  weight_mask: dict
  prior: jax.Array


def test_restore_weights_reads_a_checkpoint_of_another_optimizer_layout(tmp_path):
  config = default.get_config()
  rng = np.random.default_rng(0)
  params = {"dense": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)}}
  stats = {"bn": {"mean": rng.normal(size=(4,)).astype(np.float32)}}
  mask = {"dense": {"kernel": rng.random((3, 4)) < 0.5}}
  old = {
    "step": np.int32(5),
    "params": params,
    "batch_stats": stats,
    "opt_state": {"weight_mask": mask, "retired_field": np.ones(2, np.float32)},
  }
  ckpt = workdir_lib.Checkpoints(str(tmp_path), config)
  ckpt.save(5, old, {"next_step": 5})
  ckpt.wait()

  built = {
    "step": jnp.int32(0),
    "params": jax.tree.map(jnp.zeros_like, params),
    "batch_stats": jax.tree.map(jnp.zeros_like, stats),
    "opt_state": _NewState(jax.tree.map(jnp.ones_like, mask), jnp.full(3, 7.0)),
  }
  with pytest.raises(Exception):  # noqa: B017 - orbax raises several types for a layout mismatch.
    ckpt.restore(built, step=5)
  got = ckpt.restore_weights(built, 5)
  np.testing.assert_array_equal(got["params"]["dense"]["kernel"], params["dense"]["kernel"])
  np.testing.assert_array_equal(got["batch_stats"]["bn"]["mean"], stats["bn"]["mean"])
  np.testing.assert_array_equal(
    got["opt_state"].weight_mask["dense"]["kernel"], mask["dense"]["kernel"]
  )
  assert got["opt_state"].weight_mask["dense"]["kernel"].dtype == jnp.bool_
  np.testing.assert_array_equal(got["opt_state"].prior, np.full(3, 7.0))  # As built.
