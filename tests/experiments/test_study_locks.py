"""Runners that share a study: cell locks, several runners splitting the cells, a cell held
elsewhere, a runner killed mid-cell. Cells run ``tests.experiments._fake_main`` (which takes the
workdir's lock like the real one) except in the slow tests, which run the tiny study."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments import study, workdir_lock
from experiments.runner.pool import claim_cell
from tests.experiments import test_study
from tests.experiments.conftest import REPO
from tests.experiments.test_study import BASE, calls, read_csv, run_fake, write_study


def _runner(tmp_path, path, *args, results="res", module="tests.experiments._fake_study"):
  argv = [sys.executable, "-m", module, path, f"--workdirs={tmp_path / 'wd'}"]
  argv += [f"--results={tmp_path / results}", *args]
  env = {**os.environ, "PYTHONPATH": REPO}
  return subprocess.Popen(
    argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
  )


def _started(out):
  return {line.split()[-1] for line in out.splitlines() if line.startswith("start [")}


SIX = {
  "name": "six",
  "base_config": BASE,
  "fixed": {"num_epochs": 2, "fake.sleep": 0.4},
  "grid": {"fake.acc": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]},
}


def test_two_runners_started_together_split_the_cells(tmp_path):
  path = write_study(tmp_path, SIX)
  procs = [_runner(tmp_path, path, results=f"res{i}") for i in range(2)]
  outs = [p.communicate(timeout=120)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  cells = study.parse_study(SIX).expand(str(tmp_path / "wd"))
  for cell in cells:  # Each trained once, in one attempt.
    assert [c["resume"] for c in calls(cell.workdir)] == [False], cell.cell_id
    assert json.load(open(os.path.join(cell.workdir, "DONE.json")))["attempts"] == 1
  a, b = (_started(out) for out in outs)
  assert a and b and not a & b and a | b == {c.cell_id for c in cells}, outs
  for out, other in ((outs[0], b), (outs[1], a)):
    # The other runner's cells: skipped while it trained them, or found done.
    for cell_id in other:
      assert (
        f"running elsewhere: {cell_id}" in out
        or f"done elsewhere: {cell_id}" in out
        or ("already done" in out)
      ), out
  code, _ = run_fake(tmp_path, SIX, "--only-aggregate")
  assert code == 0
  assert {r["status"] for r in read_csv(tmp_path / "res" / "six" / "runs.csv")} == {"done"}


TWO = {**test_study.TWO, "fixed": {"num_epochs": 1}}


def test_a_cell_held_elsewhere_is_skipped_and_reported(tmp_path):
  held, free = study.parse_study(TWO).expand(str(tmp_path / "wd"))
  holder = f"experiments.main (host {socket.gethostname()}, pid {os.getpid()}, since "
  with workdir_lock.exclusive(held.workdir, what="experiments.main"):
    assert study.cell_status(held) == "running"
    code, lines = run_fake(tmp_path, TWO, "--dry-run")
    assert code == 0
    i = lines.index(f"running    {held.cell_id}")
    assert lines[i + 1].startswith(f"           held by {holder}"), lines
    code, lines = run_fake(tmp_path, TWO)
    assert code == 0, lines
    assert any(line.startswith(f"running elsewhere: {held.cell_id} ({holder}") for line in lines)
    assert not any(line.startswith(f"start [1/1] {held.cell_id}") for line in lines), lines
    assert not os.path.exists(os.path.join(held.workdir, "calls.jsonl"))
    rows = {r["cell_id"]: r for r in read_csv(tmp_path / "res" / "two" / "runs.csv")}
    assert rows[held.cell_id]["status"] == "running"
    assert rows[held.cell_id]["held_by"].startswith(holder)
    assert rows[free.cell_id]["status"] == "done" and rows[free.cell_id]["held_by"] == ""
    md = (tmp_path / "res" / "two" / "summary.md").read_text()
    assert "1 done, 1 running" in md and f"`{held.cell_id}` running (not counted yet): " in md
    assert any("1 done, 1 running" in line for line in lines)
  # Released: the next invocation trains it.
  code, lines = run_fake(tmp_path, TWO)
  assert code == 0, lines
  assert [c["resume"] for c in calls(held.workdir)] == [False]
  assert "held_by" not in read_csv(tmp_path / "res" / "two" / "runs.csv")[0]


def test_a_claim_looks_again_under_the_lock(tmp_path):
  """Between listing the cells and claiming one, another runner may have finished it."""
  cell = study.parse_study(TWO).expand(str(tmp_path / "wd"))[0]
  os.makedirs(cell.workdir)
  lock, why = claim_cell(cell, "runner")
  assert lock is not None and why == ""
  assert claim_cell(cell, "other runner")[1].startswith("running elsewhere: runner (host ")
  with open(os.path.join(cell.workdir, "DONE.json"), "w") as f:
    json.dump({}, f)
  lock.release()
  assert claim_cell(cell, "other runner") == (None, "done elsewhere")


def _wait_for(predicate, timeout=60.0):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def _gone(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  return False


def test_a_runner_killed_mid_cell_resumes_that_cell_and_trains_no_other_twice(tmp_path):
  raw = {
    **TWO,
    "fixed": {"num_epochs": 3, "fake.sleep": 0.4},
    "grid": {"fake.acc": [0.1, 0.2, 0.3]},
  }
  path = write_study(tmp_path, raw)
  first, killed, last = study.parse_study(raw).expand(str(tmp_path / "wd"))
  proc = _runner(tmp_path, path)
  metrics = os.path.join(killed.workdir, "metrics.jsonl")
  _wait_for(lambda: os.path.exists(metrics))  # The second cell has finished an epoch.
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  child = int(open(os.path.join(killed.workdir, "pid")).read())
  _wait_for(lambda: _gone(child))  # It got SIGTERM when its runner died (Linux).
  assert workdir_lock.holder(killed.workdir) is None  # Both holders gone: the lock with them.
  assert study.cell_status(killed) == "incomplete"
  again = _runner(tmp_path, path)
  out = again.communicate(timeout=60)[0]
  assert again.returncode == 0, out
  assert [c["resume"] for c in calls(first.workdir)] == [False]
  assert [c["resume"] for c in calls(killed.workdir)] == [False, True]
  assert [c["resume"] for c in calls(last.workdir)] == [False]
  assert [r["epoch"] for r in study.read_evals(killed.workdir)] == [1, 2, 3]
  attempts = json.load(open(os.path.join(killed.workdir, "study_cell.json")))["attempts"]
  assert [a["status"] for a in attempts] == ["lost", "ok"]


# ----------------------------------------------------------------------------- real runs


def _tiny(tmp_path, data_dir, source_dir, *args, results="res"):
  extra = [f"--config.dataset.data_dir={data_dir}", f"--config.dataset.source_dir={source_dir}"]
  return _runner(
    tmp_path,
    "experiments/studies/tiny.py",
    *extra,
    *args,
    results=results,
    module="experiments.study",
  )


@pytest.mark.slow
def test_two_runners_on_the_tiny_study_train_each_cell_once(tmp_path, data_dir, fmnist_subset_dir):
  procs = [_tiny(tmp_path, data_dir, fmnist_subset_dir, results=f"res{i}") for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outs
  a, b = (_started(out) for out in outs)
  assert not a & b and len(a | b) == 2, outs
  for cell in study.load_study("experiments/studies/tiny.py").expand(str(tmp_path / "wd")):
    log = open(os.path.join(cell.workdir, "log.txt")).read()
    assert log.count("=== ") == 1 and log.count("final test accuracy") == 1, log
    assert "Resumed" not in log and "orbax-checkpoint-tmp" not in log
    assert json.load(open(os.path.join(cell.workdir, "DONE.json")))["attempts"] == 1


@pytest.mark.slow
def test_a_killed_runner_resumes_a_real_cell_from_its_checkpoint(
  tmp_path, data_dir, fmnist_subset_dir
):
  every = "--config.checkpoint_every_steps=2"  # Machine-local: outside the cells' hash.
  cells = study.load_study("experiments/studies/tiny.py").expand(str(tmp_path / "wd"))
  proc = _tiny(tmp_path, data_dir, fmnist_subset_dir, every)
  ckpt = os.path.join(cells[0].workdir, "checkpoints")
  _wait_for(lambda: os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)), 300)
  proc.send_signal(signal.SIGKILL)
  proc.communicate()
  _wait_for(lambda: workdir_lock.holder(cells[0].workdir) is None)
  again = _tiny(tmp_path, data_dir, fmnist_subset_dir, every)
  out = again.communicate(timeout=600)[0]
  assert again.returncode == 0, out
  log = open(os.path.join(cells[0].workdir, "log.txt")).read()
  assert "Resumed from step " in log and log.count("final test accuracy") == 1, log
  other = open(os.path.join(cells[1].workdir, "log.txt")).read()
  assert other.count("=== ") == 1, other  # Not started before the kill: trained once.
