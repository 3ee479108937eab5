"""Two processes on localhost (2 virtual CPU devices each, gloo collectives) run one ZO-SAM + RigL
training run through the command line, and it is the run of one process with 4 devices: the same
checkpoints (parameters, BatchNorm statistics, optimizer state, RigL masks) to 1e-5, the same
metrics, written once, into one workdir. Slow: a 2-process resume ends where the uninterrupted
2-process run does, bit for bit."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from experiments import main as cli
from experiments import train
from experiments.workdir import checkpoint_steps
from tests.conftest import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT_S = 420  # For a whole launch; a hung process must not hang CI.
STEPS = 4  # train_subset 256 / batch 64: one epoch; RigL updates its masks after step 2.


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


ZO_SAM_RIGL = {"optimizer.name": "zo_sam", "sparse.method": "rigl", "sparse.update_every": 2}


def _flags(data_dir: str, source_dir: str, workdir: str, method: dict = ZO_SAM_RIGL) -> list[str]:
  """The tiny test config (conftest.tiny_config) on 256 training images, as command-line flags,
  with ``method``'s fields."""
  return [
    "--config=" + os.path.join(REPO, "experiments", "configs", "default.py"),
    f"--workdir={workdir}",
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={source_dir}",
    "--config.dataset.train_subset=256",
    "--config.dataset.test_subset=128",
    "--config.model.name=cnn",
    "--config.batch_size=64",
    "--config.eval_batch_size=128",
    "--config.num_epochs=1",
    "--config.log_every_steps=2",
    "--config.checkpoint_every_steps=2",
    "--config.progress_bar=false",
    *(f"--config.{k}={v}" for k, v in method.items()),
  ]


def _env(devices: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COORDINATOR")}
  env.update(
    XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={devices}"),
    JAX_PLATFORMS="cpu",
    JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",  # jax's default; explicit for older versions.
    PYTHONPATH=REPO,
  )
  return env


def _launch(argvs: list[list[str]], devices: int, logs: str) -> list[str]:
  """Runs one ``experiments.main`` process per argv, together; returns their outputs.

  Each writes to a file (pipes could fill and block); if one fails, the others are killed at
  once (they would otherwise wait for it until the coordinator's heartbeat timeout), and all of
  them after ``TIMEOUT_S``.
  """
  os.makedirs(logs, exist_ok=True)
  paths = [os.path.join(logs, f"process_{i}.log") for i in range(len(argvs))]
  procs = []
  try:
    for argv, path in zip(argvs, paths, strict=True):
      with open(path, "w") as log:
        procs.append(
          subprocess.Popen(
            [sys.executable, "-m", "experiments.main", *argv],
            cwd=REPO,
            env=_env(devices),
            stdout=log,
            stderr=subprocess.STDOUT,
          )
        )
    deadline = time.monotonic() + TIMEOUT_S
    while any(p.poll() is None for p in procs):
      if any(p.returncode not in (None, 0) for p in procs) or time.monotonic() > deadline:
        break
      time.sleep(0.2)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
      p.wait()
  outputs = []
  for path in paths:
    with open(path) as f:
      outputs.append(f.read())
  codes = [p.returncode for p in procs]
  assert codes == [0] * len(procs), "\n".join(
    f"--- process {i} (exit {c}):\n{out[-3000:]}"
    for i, (c, out) in enumerate(zip(codes, outputs, strict=True))
  )
  return outputs


def _two_processes(
  data_dir: str, source_dir: str, workdir: str, logs: str, *extra: str, method: dict = ZO_SAM_RIGL
):
  address = f"127.0.0.1:{_free_port()}"
  argvs = [
    [
      *_flags(data_dir, source_dir, workdir, method),
      f"--coordinator_address={address}",
      "--num_processes=2",
      f"--process_id={i}",
      *extra,
    ]
    for i in range(2)
  ]
  return _launch(argvs, devices=2, logs=logs)


def _load_checkpoint(workdir: str, step: int) -> dict:
  """A saved train state, as numpy arrays, read by this (single-device) process."""
  import orbax.checkpoint as ocp

  path = os.path.join(workdir, "checkpoints", str(step), "state")  # workdir.Checkpoints item
  checkpointer = ocp.StandardCheckpointer()
  tree = checkpointer.metadata(path).item_metadata
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  return jax.tree.map(np.asarray, checkpointer.restore(path, abstract))


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, fmnist_subset_dir):
  """``(reference, two)``: the workdirs of the 1-process 4-device run and of the 2-process run,
  and the 2-process run's outputs. The 2-process run builds its own data_dir from the idx files
  (process 0 first)."""
  tmp = tmp_path_factory.mktemp("multihost")
  reference = str(tmp / "one_process")
  _launch([_flags(data_dir, fmnist_subset_dir, reference)], devices=4, logs=str(tmp / "logs1"))
  two = str(tmp / "two_processes")
  outputs = _two_processes(str(tmp / "data"), fmnist_subset_dir, two, str(tmp / "logs2"))
  return reference, two, outputs


def test_two_processes_are_one_four_device_run(runs):
  reference, two, outputs = runs
  # One workdir: the same config, the same checkpoint steps, each written completely.
  with (
    open(os.path.join(reference, "config.json")) as f,
    open(os.path.join(two, "config.json")) as g,
  ):
    got, want = json.load(g), json.load(f)
  assert got["dataset"].pop("data_dir") != want["dataset"].pop("data_dir")  # Built by process 0.
  assert got == want
  assert checkpoint_steps(two) == checkpoint_steps(reference) == [2, STEPS]
  for step in (2, STEPS):
    got, want = _load_checkpoint(two, step), _load_checkpoint(reference, step)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert int(got["step"]) == step
    # The parameters agree to 1e-5; RigL's masks and every integer state (counters, keys) exactly.
    # Gradient-valued state (momentum, the gradient slot) only to 1e-2 of its scale: gloo sums
    # across processes in another order than one process does, and by step 4 that float32
    # rounding, passed through ReLU kinks and the ZO ascent, reaches ~2e-4 of the gradient's size
    # on one machine and 2.1e-3 on another (17 of 4608 momentum entries). A wrong reduction (half
    # the batch, a sum for a mean) would differ by the gradient's own size.
    for (path, g), w in zip(
      jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want), strict=True
    ):
      if not np.issubdtype(w.dtype, np.floating):
        np.testing.assert_array_equal(g, w)
      elif path[0].key in ("params", "batch_stats"):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
      else:
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-2 * max(float(np.max(np.abs(w))), 1e-6))
  # RigL did move weights between the two checkpoints, so the masks were compared after an update.
  masks = [_load_checkpoint(reference, s)["opt_state"]["weight_mask"] for s in (2, STEPS)]
  assert any(np.any(a != b) for a, b in zip(*map(jax.tree.leaves, masks), strict=True))
  # Metrics written once (process 0), the same records as the reference's.
  got, want = (
    _without_timing(train.read_metrics(two)),
    _without_timing(train.read_metrics(reference)),
  )
  assert [(r["kind"], r["step"]) for r in got] == [("train", 2), ("train", 4), ("eval", 4)]
  assert [r.keys() for r in got] == [r.keys() for r in want]
  for g, w in zip(got, want, strict=True):
    np.testing.assert_allclose(
      [g[k] for k in g if k != "kind"], [w[k] for k in w if k != "kind"], rtol=1e-5, atol=1e-6
    )
  # Both processes ran every device of the run; only process 0 logged.
  assert "4 device(s)" in outputs[0] and "final test accuracy" in outputs[0]
  assert "epoch 1/1" not in outputs[1] and "final test accuracy" not in outputs[1]


@pytest.mark.slow
def test_two_process_resume_matches_uninterrupted(runs, tmp_path, data_dir, fmnist_subset_dir):
  _, two, _ = runs
  # A run killed after its step-2 checkpoint: the later checkpoint and metrics are gone.
  workdir = str(tmp_path / "resumed")
  shutil.copytree(two, workdir)
  shutil.rmtree(os.path.join(workdir, "checkpoints", str(STEPS)))
  assert checkpoint_steps(workdir) == [2]
  outputs = _two_processes(data_dir, fmnist_subset_dir, workdir, str(tmp_path / "logs"), "--resume")
  assert "Resumed from step 2" in outputs[0] and "Resumed" not in outputs[1]
  got, want = _load_checkpoint(workdir, STEPS), _load_checkpoint(two, STEPS)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_array_equal(g, w)
  assert _without_timing(train.read_metrics(workdir)) == _without_timing(train.read_metrics(two))


@pytest.mark.slow
def test_two_process_lth_is_one_four_device_run(tmp_path, data_dir, fmnist_subset_dir):
  # One pruning round after the dense one: process 0 writes the rewind point and the mask, and
  # both processes read them back.
  method = {
    "optimizer.name": "sgd",
    "sparse.method": "lth",
    "sparse.sparsity_distribution": "global",
    "sparse.lth.rounds": 1,
    "sparse.lth.rewind_step": 1,
  }
  reference, two = str(tmp_path / "one_process"), str(tmp_path / "two_processes")
  _launch(
    [_flags(data_dir, fmnist_subset_dir, reference, method)], devices=4, logs=str(tmp_path / "l1")
  )
  _two_processes(data_dir, fmnist_subset_dir, two, str(tmp_path / "l2"), method=method)
  for r in (0, 1):
    rdir, rref = os.path.join(two, f"round_{r}"), os.path.join(reference, f"round_{r}")
    got, want = _load_checkpoint(rdir, STEPS), _load_checkpoint(rref, STEPS)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  mask, ref_mask = (np.load(os.path.join(d, "round_1", "mask.npz")) for d in (two, reference))
  assert sorted(mask.files) == sorted(ref_mask.files)
  for name in mask.files:
    np.testing.assert_array_equal(mask[name], ref_mask[name])
  got, want = (
    _without_timing(train.read_metrics(two)),
    _without_timing(train.read_metrics(reference)),
  )
  assert [(r["round"], r["kind"], r["step"]) for r in got] == [
    (r["round"], r["kind"], r["step"]) for r in want
  ]


@pytest.mark.parametrize(
  "argv,expected",
  [
    (["--num_processes=2", "--process_id=2"], "--process_id must be in [0, 1] for --num_proc"),
    (["--process_id=-1"], "--process_id must be >= 0, got -1"),
    (["--num_processes=0"], "--num_processes must be >= 1, got 0"),
    (["--coordinator_address=localhost"], "--coordinator_address must be HOST:PORT"),
  ],
)
def test_bad_multihost_flags_stop_before_start_up(tmp_path, capsys, monkeypatch, argv, expected):
  def boom(*args, **kwargs):
    raise AssertionError("started or compiled before rejecting bad input")

  monkeypatch.setattr(jax.distributed, "initialize", boom)
  monkeypatch.setattr(jax, "jit", boom)
  workdir = tmp_path / "w"
  assert cli.run([f"--workdir={workdir}", *argv]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
  assert not workdir.exists()
  # Each process would name its own folder: a shared one must be given.
  assert cli.run(["--num_processes=2", "--process_id=0"]) == 2
  assert "multi-host runs need --workdir" in capsys.readouterr().err


def test_multihost_without_coordinator_says_what_to_pass(tmp_path):
  # In a fresh process: jax.distributed.initialize must come before any backend is started.
  env = _env(1)  # Without JAX_COORDINATOR_ADDRESS.
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "experiments.main",
      f"--workdir={tmp_path / 'w'}",
      "--config.distributed=true",
    ],
    cwd=REPO,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [
    "error: multi-host start-up: coordinator_address should be defined (pass "
    "--coordinator_address=HOST:PORT --num_processes=N --process_id=I, or start under a cluster "
    "manager JAX detects: Slurm, Open MPI, Cloud TPU)"
  ]
  assert not (tmp_path / "w").exists()
