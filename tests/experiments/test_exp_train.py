"""End-to-end training on a real Fashion-MNIST subset: SGD, ZO-SAM, resume, determinism,
multi-device equality, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import train
from experiments.workdir import Checkpoints
from tests.conftest import xla_flags
from tests.experiments.conftest import REPO, SUBSET, cli_error, tiny_config


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in records]


def _run(tmp_path, data_dir, source_dir, name, **overrides):
  workdir = str(tmp_path / name)
  config = tiny_config(data_dir, source_dir, **overrides)
  return workdir, train.train_and_evaluate(config, workdir)


@pytest.fixture(scope="module")
def zo_sam_run(tmp_path_factory, data_dir, fmnist_subset_dir):
  """One uninterrupted 1-epoch ZO-SAM run, shared by several tests."""
  tmp = tmp_path_factory.mktemp("zo_sam_run")
  return _run(tmp, data_dir, fmnist_subset_dir, "run", optimizer__name="zo_sam")


def _check_run(workdir, result, min_accuracy=0.3):
  records = train.read_metrics(workdir)
  steps = SUBSET["train"] // 64
  assert [r["step"] for r in records if r["kind"] == "train"] == [4, 8]
  evals = [r for r in records if r["kind"] == "eval"]
  assert len(evals) == 1 and evals[0]["step"] == steps
  assert min_accuracy < result["test_accuracy"] <= 1.0  # 10 classes: chance is 0.1.
  assert np.isfinite(result["test_loss"])
  assert max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints"))) == steps
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["num_epochs"] == 1


def test_one_epoch_sgd(tmp_path, data_dir, fmnist_subset_dir):
  workdir, result = _run(tmp_path, data_dir, fmnist_subset_dir, "sgd", optimizer__name="sgd")
  _check_run(workdir, result)
  # eval_every_steps=3 adds evaluations inside the epoch and changes nothing else.
  steps = SUBSET["train"] // 64
  other, again = _run(
    tmp_path, data_dir, fmnist_subset_dir, "w3", optimizer__name="sgd", eval_every_steps=3
  )
  records, plain = train.read_metrics(other), train.read_metrics(workdir)
  evals = [r for r in records if r["kind"] == "eval"]
  assert [(r["step"], r["epoch"]) for r in evals] == [(3, 3 / steps), (6, 6 / steps), (steps, 1)]
  assert _without_timing([r for r in records if r not in evals[:2]]) == _without_timing(plain)
  assert again["test_accuracy"] == result["test_accuracy"]
  seconds = [r["train_epoch_time_s"] for r in evals]
  assert 0 < seconds[0] < seconds[1] < seconds[2]  # The epoch's training time so far.


def test_held_out_run_names_its_evaluation_split(tmp_path, data_dir, fmnist_subset_dir, capsys):
  """With dataset.validation_size the start-up line and the metrics name the held-out split."""
  held = 128
  _, result = _run(
    tmp_path, data_dir, fmnist_subset_dir, "w", optimizer__name="sgd", dataset__validation_size=held
  )
  out = capsys.readouterr().out
  assert f"({SUBSET['train'] - held} train / {held} held-out validation)" in out
  assert " test" not in out
  assert 0.0 <= result["validation_accuracy"] <= 1.0 and "test_accuracy" not in result


def test_one_epoch_zo_sam(zo_sam_run):
  _check_run(*zo_sam_run)


RIGL = {"optimizer__name": "zo_sam", "sparse__method": "rigl", "sparse__update_every": 2}


@pytest.fixture(scope="module")
def rigl_run(tmp_path_factory, data_dir, fmnist_subset_dir):
  """One uninterrupted 1-epoch ZO-SAM + RigL (90%, mask update every 2 steps) run."""
  tmp = tmp_path_factory.mktemp("rigl_run")
  return _run(tmp, data_dir, fmnist_subset_dir, "run", **RIGL)


def test_one_epoch_zo_sam_with_rigl(rigl_run):
  _check_run(*rigl_run)
  kernels = [x for x in jax.tree.leaves(rigl_run[1]["params"]) if x.ndim >= 2]
  density = sum(int(np.count_nonzero(k)) for k in kernels) / sum(k.size for k in kernels)
  assert 0.05 < density < 0.15  # 90% sparse over the prunable kernels.


def _rigl_pattern_run(tmp_path, data_dir, source_dir, pattern, min_accuracy=0.3, **overrides):
  """A checked one-epoch ZO-SAM + RigL run with ``pattern`` at 50% sparsity; its params."""
  workdir, result = _run(
    tmp_path,
    data_dir,
    source_dir,
    "w",
    sparse__pattern=pattern,
    sparse__sparsity=0.5,
    **overrides,
    **RIGL,
  )
  _check_run(workdir, result, min_accuracy)
  return result["params"]


@pytest.mark.slow
def test_one_epoch_zo_sam_with_rigl_2_4(tmp_path, data_dir, fmnist_subset_dir):
  # 2:4 on every kernel but the stem (one input channel: no block of 4 along its input axis).
  params = _rigl_pattern_run(
    tmp_path, data_dir, fmnist_subset_dir, "n:m", sparse__dense_layers="conv0"
  )
  for name in ("conv1", "fc0", "head"):
    kernel = np.asarray(params[name]["kernel"])
    moved = np.moveaxis(kernel, kernel.ndim - 2, -1)
    blocks = (moved != 0).reshape(moved.shape[:-1] + (-1, 4)).sum(-1)
    assert blocks.max() <= 2 and blocks.mean() > 1.9, name  # exactly 2 active of every 4
  assert np.count_nonzero(params["conv0"]["kernel"]) == params["conv0"]["kernel"].size


@pytest.mark.slow
def test_one_epoch_zo_sam_with_rigl_channels(tmp_path, data_dir, fmnist_subset_dir):
  params = _rigl_pattern_run(
    tmp_path,
    data_dir,
    fmnist_subset_dir,
    "channel",
    min_accuracy=0.2,
    sparse__sparsity_distribution="uniform",  # ERK would keep the small stem dense
    sparse__dense_layers="head",
  )
  for name in ("conv0", "conv1", "fc0"):
    kernel = np.asarray(params[name]["kernel"])
    alive = (kernel != 0).reshape(-1, kernel.shape[-1]).any(0)
    assert alive.sum() <= round(0.5 * kernel.shape[-1]), name  # whole channels pruned


def _resume_matches(tmp_path, data_dir, source_dir, reference, **overrides):
  ref_dir, ref = reference
  workdir = str(tmp_path / "killed")
  config = tiny_config(data_dir, source_dir, **overrides)

  class Killed(Exception):
    pass

  def kill_at_5(step):
    if step == 5:
      raise Killed  # Past the checkpoint of step 3, mid log window.

  with pytest.raises(Killed):
    train.train_and_evaluate(config, workdir, step_hook=kill_at_5)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
  # Mid-epoch (8 steps an epoch): the checkpoint holds the data iterator's position.
  position = Checkpoints(workdir, config).restore_data(3)
  assert position["next_step"] == 3 and position["grain"]
  result = train.train_and_evaluate(config, workdir, resume=True)

  # The resumed epoch timed steps 4-8 only, and its record says so; the reference timed all 8.
  def partial(directory):
    return [
      r["train_epoch_time_partial"] for r in train.read_metrics(directory) if r["kind"] == "eval"
    ]

  assert partial(workdir) == [True] and partial(ref_dir) == [False]
  for a, b in zip(jax.tree.leaves(ref["params"]), jax.tree.leaves(result["params"]), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert _without_timing(train.read_metrics(workdir)) == _without_timing(
    train.read_metrics(ref_dir)
  )


def test_resume_matches_uninterrupted_run_bitwise(
  tmp_path, data_dir, fmnist_subset_dir, zo_sam_run
):
  _resume_matches(tmp_path, data_dir, fmnist_subset_dir, zo_sam_run, optimizer__name="zo_sam")


@pytest.mark.slow
def test_resume_with_rigl_matches_bitwise(tmp_path, data_dir, fmnist_subset_dir, rigl_run):
  _resume_matches(tmp_path, data_dir, fmnist_subset_dir, rigl_run, **RIGL)


# Slow: test_resume_matches_uninterrupted_run_bitwise trains the same seed again from step 0 (to
# its kill) and must end with the uninterrupted run's parameters and metrics bit for bit, and
# test_one_epoch_sgd's two runs of one seed must log the same records.
@pytest.mark.slow
def test_same_seed_same_metrics(tmp_path, data_dir, fmnist_subset_dir, zo_sam_run):
  ref_dir, _ = zo_sam_run
  workdir, _ = _run(tmp_path, data_dir, fmnist_subset_dir, "again", optimizer__name="zo_sam")
  assert _without_timing(train.read_metrics(workdir)) == _without_timing(
    train.read_metrics(ref_dir)
  )


# Slow: in the default suite test_multihost runs the trainer on 4 devices (one process) against
# 2 processes, test_data_parallel checks a sharded step against a single-device one, and
# test_exp_bad_input the refusal of a batch the devices cannot split.
@pytest.mark.slow
def test_four_devices_match_one_device(tmp_path, data_dir, fmnist_subset_dir, zo_sam_run):
  ref_dir, ref = zo_sam_run
  workdir = str(tmp_path / "four")
  env = {
    **os.environ,
    "XLA_FLAGS": xla_flags("--xla_force_host_platform_device_count=4"),
    "JAX_PLATFORMS": "cpu",
    "PYTHONPATH": REPO,
  }
  cmd = [
    sys.executable,
    "-m",
    "tests.experiments._run_tiny",
    data_dir,
    fmnist_subset_dir,
    workdir,
    "zo_sam",
  ]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.split("RESULT ", 1)[1])
  assert out["devices"] == 4
  ref_records = train.read_metrics(ref_dir)
  records = train.read_metrics(workdir)
  # Accuracies count examples of 256 (4 logged steps of 64; the 256 test examples): another
  # reduction order may move one logit pair across a near tie, so they may differ by one.
  one_example = 1 / 256 + 1e-9
  for key in ("loss", "accuracy", "test_loss", "test_accuracy"):
    a = [r[key] for r in ref_records if key in r]
    b = [r[key] for r in records if key in r]
    atol = one_example if "accuracy" in key else 1e-3
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=atol, err_msg=key)
  for a, b in zip(jax.tree.leaves(ref["params"])[:2], out["first_leaves"], strict=True):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-4)
  # The same 4 devices refuse a batch they cannot split evenly, before compiling.
  bad = tmp_path / "bad"
  assert cli_error("experiments.main", f"--workdir={bad}", "--config.batch_size=66", env=env) == [
    "error: batch_size 66 is not divisible by the 4 devices; use a multiple of 4"
  ]
  assert not os.path.exists(tmp_path / "bad")


def test_plot(tmp_path, zo_sam_run):
  from experiments import plot

  out = plot.plot_workdirs([zo_sam_run[0]], str(tmp_path / "curves.png"))
  with open(out, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_cifar10_with_corrupted_eval_on_mock_data(tmp_path):
  """The CIFAR-10 path end to end (augmentation, CIFAR-10-C evaluation) on tfds mock data."""
  import tensorflow_datasets as tfds

  config = tiny_config(str(tmp_path / "tfds"), "")
  config.dataset.name = "cifar10"
  config.dataset.random_crop = config.dataset.flip = True
  config.dataset.cutout = 16
  config.dataset.eval_corrupted = True
  config.dataset.corruptions = "fog,snow"
  config.dataset.severities = "5"
  config.batch_size, config.eval_batch_size = 16, 16
  workdir = str(tmp_path / "w")
  with tfds.testing.mock_data(num_examples=32, policy=tfds.testing.MockPolicy.USE_CODE):
    result = train.train_and_evaluate(config, workdir)
  assert set(result["corrupted"]) == {"fog_5", "snow_5", "mean"}
  kinds = [r["kind"] for r in train.read_metrics(workdir)]
  assert kinds.count("eval") == 1 and kinds.count("corrupted") == 3


SLOW_CASES = [
  {"optimizer__name": "sam"},
  {"optimizer__name": "sparse_sam", "optimizer__sparse_sam__update_every": 4},
  {"optimizer__name": "sparse_sam", "optimizer__sparse_sam__mask_method": "dynamic"},
  {"optimizer__name": "sparse_sam", "optimizer__sparse_sam__ascent": "zeroth_order"},
  {
    "optimizer__name": "zo_sam",
    "optimizer__zeroth_order__num_directions": 3,
    "optimizer__zeroth_order__probe_batch_size": 3,
  },
  {"optimizer__name": "looksam", "optimizer__looksam__update_every": 2},
  {"optimizer__name": "zo_looksam", "optimizer__looksam__update_every": 2},
  {"optimizer__name": "gsam", "optimizer__gsam__rho_min": 0.01},
  {"optimizer__name": "esam"},
  {"optimizer__name": "zo_esam"},
  {"optimizer__name": "adaptive_zo_sam", "optimizer__adaptive_zo_sam__max_directions": 3},
  {"optimizer__name": "random_perturbation"},
  {
    "optimizer__name": "zo_sam",
    "optimizer__guidance": "previous_gradient",
    "sparse__method": "rigl",
    "sparse__update_every": 2,
  },
  {
    "optimizer__name": "zo_looksam",
    "optimizer__guidance": "previous_gradient",
    "optimizer__looksam__update_every": 2,
  },
]


# The trainer's path is the same for the three (the head sees loss values only); ZOSA, the one
# with an ascent, runs in the default suite and MeZO and ZO-SGD with the other heads' one-epoch
# runs (slow). tests/test_zosa.py tests each of them in the library.
@pytest.mark.parametrize(
  "name",
  [
    pytest.param("mezo", marks=pytest.mark.slow),
    pytest.param("zo_sgd", marks=pytest.mark.slow),
    "zosa",
  ],
)
def test_fully_zeroth_order_training_from_the_trainer(tmp_path, data_dir, fmnist_subset_dir, name):
  """Black-box training is one flag: the head sees loss values only (state protocol: its value
  and aux feed the metrics like any head's)."""
  workdir, result = _run(
    tmp_path, data_dir, fmnist_subset_dir, "w", optimizer__name=name, optimizer__momentum=0.0
  )
  train_records = [r for r in train.read_metrics(workdir) if r["kind"] == "train"]
  assert all(np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1 for r in train_records)
  assert np.isfinite(result["test_loss"]) and 0.0 <= result["test_accuracy"] <= 1.0


SLOW_SPARSE = ["snip", "grasp", "set", "dsr", "mest"]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", SLOW_CASES, ids=lambda o: "-".join(map(str, o.values())))
def test_other_optimizers_one_epoch(tmp_path, data_dir, fmnist_subset_dir, overrides):
  # 8 steps: better than chance (LookSAM/ESAM update on less signal per step than SGD).
  _check_run(*_run(tmp_path, data_dir, fmnist_subset_dir, "w", **overrides), min_accuracy=0.2)


@pytest.mark.slow
@pytest.mark.parametrize("method", SLOW_SPARSE)
def test_other_sparse_methods_one_epoch(tmp_path, data_dir, fmnist_subset_dir, method):
  overrides = {"optimizer__name": "zo_sam", "sparse__method": method, "sparse__update_every": 2}
  if method == "grasp":
    overrides["sparse__grasp_samples_per_class"] = 2  # 512 images: every class has 2.
  _check_run(*_run(tmp_path, data_dir, fmnist_subset_dir, "w", **overrides))
