"""Training batches on grain: resuming from the iterator's checkpointed state (mid-epoch),
worker processes, seeds, and the checkpoint layout that holds the state."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import input_pipeline as ip
from experiments import workdir as workdir_lib

SPEC = ip.DatasetSpec("x", 10, (8, 8, 3), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
AUG = ip.Augment(random_crop=True, crop_padding=2, flip=True, cutout=4)


def _split(n: int = 50) -> ip.Split:
  rng = np.random.default_rng(0)
  return ip.Split(n, rng.integers(0, 255, (n, 8, 8, 3), np.uint8), np.arange(n) % 10)


def _assert_same(batches, expected):
  assert len(batches) == len(expected)
  for got, want in zip(batches, expected, strict=True):
    np.testing.assert_array_equal(got["image"], want["image"])
    np.testing.assert_array_equal(got["label"], want["label"])


def test_resume_mid_epoch_from_the_iterator_state():
  # 50 examples, batch 8: 6 steps an epoch (2 examples dropped each epoch). The state is taken
  # at step 9, mid-way through the second epoch, and goes through JSON as in a checkpoint.
  batches = ip.TrainBatches(_split(), SPEC, 8, seed=4, augment=AUG)
  assert batches.steps_per_epoch == 6
  uninterrupted = list(batches.iterator(0, 15))
  _assert_same(uninterrupted, [batches.batch(s) for s in range(15)])
  it = batches.iterator(0, 15)
  for _ in range(9):
    next(it)
  state = json.loads(json.dumps(it.get_state()))
  assert state["next_step"] == 9 and state["first_step"] == 0
  it.close()
  again = ip.TrainBatches(_split(), SPEC, 8, seed=4, augment=AUG)
  resumed = again.iterator(9, 15, state=state)
  _assert_same(list(resumed), uninterrupted[9:])
  # A state saved at another step is refused; without a state the iterator starts at the step.
  with pytest.raises(ValueError, match="saved at step 9, not 8"):
    again.iterator(8, 15, state=state)
  _assert_same(list(again.iterator(9, 15)), uninterrupted[9:])


def test_state_of_a_resumed_iterator_resumes_again():
  # A run resumed at step 4 without a saved state (an older checkpoint) iterates from there; its
  # own state, taken later, restores relative to that start.
  batches = ip.TrainBatches(_split(), SPEC, 8, seed=1, augment=AUG)
  it = batches.iterator(4, 12)
  for _ in range(3):
    next(it)
  state = it.get_state()
  assert (state["first_step"], state["next_step"]) == (4, 7)
  _assert_same(list(batches.iterator(7, 12, state=state)), [batches.batch(s) for s in range(7, 12)])


def test_epochs_reshuffle_and_nearby_seeds_do_not_share_epochs():
  split = _split(48)
  orders = {}
  for seed in (0, 1):
    batches = ip.TrainBatches(split, SPEC, 8, seed=seed, augment=ip.Augment())
    labels = [batches.batch(s)["label"] for s in range(12)]
    orders[seed] = [np.concatenate(labels[:6]), np.concatenate(labels[6:])]
    for epoch in orders[seed]:  # Every example once an epoch (48 = 6 batches of 8).
      np.testing.assert_array_equal(np.sort(epoch), np.sort(split.labels))
  assert not np.array_equal(orders[0][0], orders[0][1])
  # grain shuffles epoch e with seed (shuffle seed + e): the run seed is hashed first, so
  # seed 1's first epoch is not seed 0's second.
  assert not np.array_equal(orders[1][0], orders[0][1])


def test_worker_processes_give_the_same_batches_and_state():
  split = _split()
  two = ip.TrainBatches(split, SPEC, 8, seed=2, augment=AUG, workers=2)
  expected = [two.batch(s) for s in range(10)]
  it = two.iterator(0, 10)
  first = [next(it) for _ in range(4)]
  state = json.loads(json.dumps(it.get_state()))
  it.close()
  _assert_same(first, expected[:4])
  resumed = two.iterator(4, 10, state=state)
  _assert_same(list(resumed), expected[4:])
  resumed.close()
  # Saved with 2 workers, resumed in-process: grain's state cannot be used, the batches match.
  zero = ip.TrainBatches(split, SPEC, 8, seed=2, augment=AUG)
  _assert_same(list(zero.iterator(4, 10, state=state)), expected[4:])


def test_checkpoints_hold_state_and_data_and_read_older_ones(tmp_path):
  import orbax.checkpoint as ocp

  config = ml_collections.ConfigDict({"keep_checkpoints": 5})
  state = {"w": jnp.arange(3.0), "step": jnp.int32(0)}
  # An older checkpoint: the state alone, one unnamed item.
  older = ocp.CheckpointManager(
    os.path.abspath(tmp_path / "checkpoints"),
    options=ocp.CheckpointManagerOptions(create=True, enable_async_checkpointing=False),
  )
  older.save(2, args=ocp.args.StandardSave({**state, "step": jnp.int32(2)}))
  older.wait_until_finished()
  ckpt = workdir_lib.Checkpoints(str(tmp_path), config)
  assert int(ckpt.restore(state)["step"]) == 2 and ckpt.restore_data(2) is None
  data = {"first_step": 0, "next_step": 5, "workers": 0, "grain": {"next_index": 5}}
  ckpt.save(5, {**state, "step": jnp.int32(5)}, data)
  ckpt.wait()
  again = workdir_lib.Checkpoints(str(tmp_path), config)
  assert again.latest_step() == 5 and int(again.restore(state)["step"]) == 5
  assert again.restore_data(5) == data
  assert int(again.restore(state, step=2)["step"]) == 2
