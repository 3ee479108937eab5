"""Faults around a run's workdir: a second run or an analysis while it trains, a damaged latest
checkpoint, a checkpoint that cannot be written, a metrics line cut short.

One tiny SGD run (tiny_config: 8 steps, checkpoints at 3, 6 and 8, two kept) is the reference;
the others are runs of the same config, so they compile nothing new (the package's compilation
cache) and must end with the reference's metrics.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments import analyze, train, workdir_lock
from experiments import main as cli
from experiments.errors import CheckpointError
from experiments.workdir import UNREADABLE_DIR, Checkpoints, MetricWriter, checkpoint_steps
from tests.experiments.conftest import REPO, tiny_config

# tiny_config's values as command-line flags of experiments.main.
TINY_FLAGS = [
  "--config=" + os.path.join(REPO, "experiments", "configs", "default.py"),
  "--config.model.name=cnn",
  "--config.batch_size=64",
  "--config.eval_batch_size=128",
  "--config.num_epochs=1",
  "--config.log_every_steps=4",
  "--config.checkpoint_every_steps=3",
  "--config.progress_bar=false",
]


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in records]


@pytest.fixture(scope="module")
def sgd_run(tmp_path_factory, data_dir, fmnist_subset_dir):
  """The reference: one uninterrupted run (checkpoints 6 and 8 kept)."""
  workdir = str(tmp_path_factory.mktemp("faults") / "ref")
  result = train.train_and_evaluate(tiny_config(data_dir, fmnist_subset_dir), workdir)
  assert checkpoint_steps(workdir) == [6, 8]
  return workdir, result


def _same_run(workdir, reference):
  assert _without_timing(train.read_metrics(workdir)) == _without_timing(
    train.read_metrics(reference)
  )


def _copy(reference, tmp_path):
  workdir = str(tmp_path / "copy")
  shutil.copytree(reference, workdir)
  return workdir


def _damage(workdir, step):
  """Cuts the largest array file of checkpoint ``step`` in half (a copy cut short)."""
  files = glob.glob(
    os.path.join(workdir, "checkpoints", str(step), "state", "**", "*"), recursive=True
  )
  largest = max((f for f in files if os.path.isfile(f)), key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)


def test_a_second_run_or_analysis_of_a_busy_workdir_exits_2(
  tmp_path, data_dir, fmnist_subset_dir, sgd_run, monkeypatch, capsys
):
  """While a run trains (here, in this process), ``experiments.main`` on its workdir and
  ``experiments.analyze`` of it exit 2 with one line naming it, before reading any data; the run
  ends with the metrics it has alone."""
  workdir = str(tmp_path / "w")
  data = [
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={fmnist_subset_dir}",
  ]
  argv = [f"--workdir={workdir}", *TINY_FLAGS, *data]
  env = {**os.environ, "PYTHONPATH": REPO}
  seen = {}
  original = train.train_and_evaluate

  def with_intruders(config, workdir_, *, resume=False, step_hook=None):
    def hook(step):
      if step == 4 and not seen:  # Mid-run, past a checkpoint: start the two intruders.
        procs = {
          "main": [sys.executable, "-m", "experiments.main", *argv],
          "analyze": [sys.executable, "-m", "experiments.analyze", workdir],
        }
        procs = {
          k: subprocess.Popen(
            v, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
          )
          for k, v in procs.items()
        }
        outputs = {k: p.communicate(timeout=300) for k, p in procs.items()}
        seen.update({k: (procs[k].returncode, *out) for k, out in outputs.items()})

    return original(config, workdir_, resume=resume, step_hook=hook)

  monkeypatch.setattr(train, "train_and_evaluate", with_intruders)
  assert cli.run(argv) == 0
  holder = f"in use by experiments.main (host {socket.gethostname()}, pid {os.getpid()}, since "
  for name, (code, out, err) in seen.items():
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (name, out, err)
    assert lines[0].startswith(f"error: workdir {workdir} is {holder}"), lines
  _same_run(workdir, sgd_run[0])
  assert checkpoint_steps(workdir) == [6, 8]
  assert workdir_lock.holder(workdir) is None and open(os.path.join(workdir, ".lock")).read() == ""


def test_analysing_an_lth_round_of_a_run_in_training_is_refused(tmp_path, capsys):
  """A round folder (``W/round_1``) is covered by its run's lock, which the run holds."""
  workdir = tmp_path / "lth"
  (workdir / "round_1" / "checkpoints" / "8").mkdir(parents=True)
  (workdir / "config.json").write_text("{}")
  (workdir / "round_1" / "config.json").write_text("{}")
  with workdir_lock.exclusive(str(workdir), what="experiments.main"):
    assert analyze.run([str(workdir / "round_1")]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and f"workdir {workdir} is in use by experiments.main" in err[0], err


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
  tmp_path, data_dir, fmnist_subset_dir, sgd_run, capsys
):
  reference, result = sgd_run
  workdir = _copy(reference, tmp_path)
  _damage(workdir, 8)
  config = tiny_config(data_dir, fmnist_subset_dir)
  resumed = train.train_and_evaluate(config, workdir, resume=True)
  out = capsys.readouterr().out
  assert "warning: checkpoint step 8 (" in out and "does not restore; moved to" in out
  assert "Resumed from step 6 of 8" in out
  # Set aside, not deleted; step 8 trained and saved again, as the uninterrupted run did.
  (moved,) = os.listdir(os.path.join(workdir, UNREADABLE_DIR))
  assert moved.startswith("8_")
  assert checkpoint_steps(workdir) == [6, 8]
  _same_run(workdir, reference)
  for a, b in zip(
    jax.tree.leaves(result["params"]), jax.tree.leaves(resumed["params"]), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_no_checkpoint_that_restores_stops_with_a_clear_error(tmp_path, sgd_run, capsys):
  workdir = _copy(sgd_run[0], tmp_path)
  _damage(workdir, 8)
  _damage(workdir, 6)
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert cli.run([f"--workdir={workdir}", "--resume"]) == 1
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1].startswith(
    f"error: no checkpoint in {os.path.join(workdir, 'checkpoints')} restores: step 8 ("
  )
  assert "; step 6 (" in err[-1] and "nothing was moved or deleted" in err[-1]
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before
  assert not os.path.exists(os.path.join(workdir, UNREADABLE_DIR))


def _read_only(path):
  """Makes ``path`` unwritable, for root too (``chattr +i``); returns the undo, or skips."""
  if os.geteuid() != 0:
    os.chmod(path, 0o555)
    return lambda: os.chmod(path, 0o755)
  if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", path]).returncode:
    pytest.skip("running as root without a working chattr: no way to make a folder read-only")
  return lambda: subprocess.run(["chattr", "-i", path], check=True)


def test_a_checkpoint_that_cannot_be_written_stops_the_run_and_keeps_the_previous(
  tmp_path, data_dir, fmnist_subset_dir, sgd_run
):
  reference, result = sgd_run
  workdir = str(tmp_path / "w")
  config = tiny_config(data_dir, fmnist_subset_dir)
  undo = []

  def lock_folder_at_5(step):
    if step == 5:  # After the checkpoint of step 3, before that of step 6.
      undo.append(_read_only(os.path.join(workdir, "checkpoints")))

  try:
    with pytest.raises(CheckpointError) as e:
      train.train_and_evaluate(config, workdir, step_hook=lock_folder_at_5)
  finally:
    for fn in undo:
      fn()
  assert str(e.value).startswith(
    f"could not save the checkpoint of step 6 in {os.path.join(workdir, 'checkpoints')} ("
  )
  assert str(e.value).endswith(
    "the checkpoint of step 3 is intact: fix it and run again with --resume"
  )
  assert checkpoint_steps(workdir) == [3]
  resumed = train.train_and_evaluate(config, workdir, resume=True)
  _same_run(workdir, reference)
  for a, b in zip(
    jax.tree.leaves(result["params"]), jax.tree.leaves(resumed["params"]), strict=True
  ):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert Checkpoints(workdir, config).latest_step() == 8


def test_truncate_after_a_last_metrics_line_cut_short(tmp_path):
  """A run killed while appending a record, resumed from the checkpoint of step 4."""
  writer = MetricWriter(str(tmp_path), enabled=True)
  for step in (2, 4, 6):
    writer.write({"kind": "train", "step": step})
  with open(writer.path, "a") as f:
    f.write('{"kind": "eval", "st')
  writer.truncate_after(4)
  assert [r["step"] for r in train.read_metrics(str(tmp_path))] == [2, 4]
  with open(writer.path) as f:
    assert f.read().endswith('"step": 4}\n')
  with open(writer.path, "a") as f:
    f.write("not json\n")
  writer.write({"kind": "train", "step": 8})
  with pytest.raises(ValueError):  # A bad line before the last is not a kill's: not dropped.
    writer.truncate_after(8)
