"""Studies as cluster jobs through submitit: ``--launcher submitit-local`` end to end (the fake
cells, and the tiny study's real ones), a preempted job requeued and resumed, ``--launcher slurm``
against a stand-in ``sbatch``/``sacct`` (the script's resources, the recorded job, a queued cell
left alone), and bad launcher or resource values."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from experiments import study
from tests.experiments.conftest import REPO
from tests.experiments.test_study import (
  TWO,
  calls,
  fake_command,
  read_csv,
  run_fake,
  write_study,
)


def _state(cell):
  with open(os.path.join(cell.workdir, "study_cell.json")) as f:
    return json.load(f)


def test_submitit_local_runs_the_study_and_records_the_jobs(tmp_path):
  code, lines = run_fake(tmp_path, TWO, "--launcher=submitit-local")
  assert code == 0, lines
  for cell in study.parse_study(TWO).expand(str(tmp_path / "wd")):
    assert [c["resume"] for c in calls(cell.workdir)] == [False]
    state = _state(cell)
    (attempt,) = state["attempts"]
    assert attempt["launcher"] == "submitit-local" and attempt["status"] == "ok"
    assert state["jobs"] == [attempt["job_id"]]
    assert f"submitted {cell.cell_id}: submitit-local job {attempt['job_id']}" in lines
    assert f"done  {cell.cell_id} (submitit-local job {attempt['job_id']})" in lines
    assert os.path.isdir(os.path.join(cell.workdir, "submitit"))  # submitit's files and logs.
    assert "final test accuracy" in open(os.path.join(cell.workdir, "log.txt")).read()
  runs = read_csv(tmp_path / "res" / "two" / "runs.csv")
  assert [r["status"] for r in runs] == ["done", "done"]
  code, lines = run_fake(tmp_path, TWO, "--launcher=submitit-local")
  assert code == 0 and "2 cell(s) already done, 0 submitted" in lines, lines


def _wait_for(predicate, timeout=120.0):
  deadline = time.time() + timeout
  while not predicate():
    assert time.time() < deadline, "timed out"
    time.sleep(0.05)


def test_a_preempted_job_is_requeued_and_resumes_the_cell(tmp_path):
  raw = {**TWO, "fixed": {"num_epochs": 3, "fake.sleep": 0.5}, "grid": {"fake.acc": [0.7]}}
  path = write_study(tmp_path, raw)
  (cell,) = study.parse_study(raw).expand(str(tmp_path / "wd"))
  argv = [sys.executable, "-m", "tests.experiments._fake_study", path, "--launcher=submitit-local"]
  argv += [f"--workdirs={tmp_path / 'wd'}", f"--results={tmp_path / 'res'}"]
  env = {**os.environ, "PYTHONPATH": REPO}
  proc = subprocess.Popen(
    argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  metrics = os.path.join(cell.workdir, "metrics.jsonl")
  _wait_for(lambda: os.path.exists(metrics))  # The run has finished its first epoch.
  (attempt,) = _state(cell)["attempts"]
  # What SLURM sends before a time limit or a preemption (submitit asks for USR2).
  os.kill(attempt["pid"], signal.SIGUSR2)
  out = proc.communicate(timeout=120)[0]
  assert proc.returncode == 0, out
  assert [c["resume"] for c in calls(cell.workdir)] == [False, True]
  assert [r["epoch"] for r in study.read_evals(cell.workdir)] == [1, 2, 3]
  attempts = _state(cell)["attempts"]
  assert [a["status"] for a in attempts] == ["interrupted", "ok"]
  assert {a["job_id"] for a in attempts} == {attempt["job_id"]}  # Requeued: the same job.
  assert [a["resume"] for a in attempts] == [False, True]


def _script(path, text):
  path.write_text("#!/bin/bash\n" + text)
  path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
  """``srun``, ``sbatch`` (keeps each script, answers job 4242, 4243, ...) and ``sacct`` (says
  the state in ``bin/state``) on PATH."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  _script(bin_dir / "srun", "exit 0\n")
  _script(
    bin_dir / "sbatch",
    f"n=$(ls {bin_dir}/script_* 2>/dev/null | wc -l)\nid=$((4242 + n))\n"
    f'cp "$1" {bin_dir}/script_$id\necho "Submitted batch job $id"\n',
  )
  _script(
    bin_dir / "sacct",
    'echo "JobID|State|NodeList"\n'
    f'for id in $(ls {bin_dir}/script_* | sed "s/.*script_//"); do\n'
    f'  echo "$id|$(cat {bin_dir}/state)|node1"\ndone\n',
  )
  (bin_dir / "state").write_text("PENDING")
  monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
  return bin_dir


def test_slurm_jobs_carry_the_resources_and_a_queued_cell_is_not_submitted_again(
  tmp_path, fake_slurm
):
  raw = {**TWO, "grid": {"fake.acc": [0.5]}, "slurm": {"partition": "gpu", "extra": {"qos": "hi"}}}
  (cell,) = study.parse_study(raw).expand(str(tmp_path / "wd"))
  flags = ["--launcher=slurm", "--detach", "--slurm-gpus-per-job=1", "--slurm-cpus-per-task=4"]
  flags += ["--slurm-mem-gb=8", "--slurm-time-min=30", "--slurm-extra", "account=abc"]
  code, lines = run_fake(tmp_path, raw, *flags)
  assert code == 0, lines
  assert f"submitted {cell.cell_id}: slurm job 4242" in lines
  script = (fake_slurm / "script_4242").read_text()
  for line in (
    "#SBATCH --partition=gpu",
    "#SBATCH --gpus-per-node=1",
    "#SBATCH --cpus-per-task=4",
    "#SBATCH --mem=8GB",
    "#SBATCH --time=30",
    "#SBATCH --account=abc",
    "#SBATCH --qos=hi",
    "#SBATCH --signal=USR2@120",
    f"export PYTHONPATH={REPO}",
  ):
    assert line in script, (line, script)
  (attempt,) = _state(cell)["attempts"]
  assert (attempt["launcher"], attempt["job_id"], attempt["status"]) == ("slurm", "4242", "queued")
  rows = read_csv(tmp_path / "res" / "two" / "runs.csv")
  assert rows[0]["status"] == "queued" and rows[0]["held_by"] == "slurm job 4242 (PENDING)"
  # Another runner (or this one again) leaves a queued cell alone.
  code, lines = run_fake(tmp_path, raw, *flags)
  assert code == 0 and f"queued: {cell.cell_id} (slurm job 4242 (PENDING))" in lines, lines
  code, lines = run_fake(tmp_path, raw, "--dry-run")
  assert (
    f"queued     {cell.cell_id}" in lines and "           held by slurm job 4242 (PENDING)" in lines
  )
  assert sorted(p.name for p in fake_slurm.glob("script_*")) == ["script_4242"]
  # Gone from the queue without running (scancel): the next invocation submits it again.
  (fake_slurm / "state").write_text("CANCELLED by 0")
  assert study.cell_status(cell) == "incomplete"
  code, lines = run_fake(tmp_path, raw, *flags)
  assert code == 0 and f"submitted {cell.cell_id}: slurm job 4243" in lines, lines
  attempts = _state(cell)["attempts"]
  assert [(a["job_id"], a["status"]) for a in attempts] == [("4242", "queued"), ("4243", "queued")]
  assert _state(cell)["jobs"] == ["4242", "4243"]


@pytest.mark.parametrize(
  "args,raw,expected",
  [
    (["--launcher=foo"], {}, "--launcher must be one of local, slurm, submitit-local; got 'foo'"),
    (
      ["--launcher=slurm", "--slurm-gpus-per-job=-1"],
      {},
      "--slurm-gpus-per-job must be an integer >= 0, got '-1'",
    ),
    (["--launcher=slurm", "--slurm-mem-gb=0"], {}, "--slurm-mem-gb must be a number > 0, got '0'"),
    (["--launcher=slurm", "--slurm-time-min=1.5"], {}, "--slurm-time-min must be an integer >= 1"),
    (
      ["--launcher=slurm", "--slurm-cpus-per-task=x"],
      {},
      "--slurm-cpus-per-task must be an integer >= 1",
    ),
    (["--launcher=slurm", "--slurm-extra", "=1"], {}, "--slurm-extra must be FLAG=VALUE"),
    (["--slurm-partition=gpu"], {}, "--slurm-partition is for --launcher slurm or submitit-local"),
    (["--detach"], {}, "--detach is for --launcher slurm or submitit-local"),
    (["--launcher=slurm", "--jobs=2"], {}, "--jobs is for --launcher local"),
    ([], {"slurm": {"gpus_per_job": -2}}, "slurm.gpus_per_job must be an integer >= 0, got -2"),
    ([], {"slurm": {"nodes": 2}}, "unknown key(s) in slurm: nodes; valid: partition, time_min"),
    ([], {"slurm": 4}, "slurm must be a dict of partition, time_min"),
    (["--launcher=slurm"], {}, "--launcher slurm needs SLURM's sbatch and srun on PATH"),
  ],
)
def test_bad_launcher_or_resources_exit_2_before_anything_runs(
  tmp_path, capsys, monkeypatch, args, raw, expected
):
  monkeypatch.setenv("PATH", str(tmp_path))  # No SLURM here (nor anything else).
  path = write_study(tmp_path, {**TWO, **raw})
  argv = [path, f"--workdirs={tmp_path / 'wd'}", f"--results={tmp_path / 'res'}", *args]
  assert study.run(argv, command=fake_command, log=lambda s: None) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
  assert not (tmp_path / "wd").exists() and not (tmp_path / "res").exists()


# In the default run (issue 27 asks for the tiny study through submitit in CI): one real
# one-epoch cell in a fresh process behind submitit's two (about 45 s on a busy 2-core machine).
def test_the_tiny_study_through_submitit_local(tmp_path, data_dir, fmnist_subset_dir):
  """experiments/studies/tiny.py's SGD cell, a real one-epoch run, as a submitit job."""
  argv = [
    sys.executable,
    "-m",
    "experiments.study",
    "experiments/studies/tiny.py",
    "--launcher=submitit-local",
    "--cells=sgd-*",
    f"--workdirs={tmp_path / 'wd'}",
    f"--results={tmp_path / 'res'}",
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={fmnist_subset_dir}",
  ]
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  runs = {r["optimizer.name"]: r for r in read_csv(tmp_path / "res" / "tiny" / "runs.csv")}
  assert runs["sgd"]["status"] == "done" and runs["sam"]["status"] == "missing"
  assert 0.1 < float(runs["sgd"]["test_accuracy"]) <= 1.0
  workdir = tmp_path / "wd" / "tiny" / runs["sgd"]["cell_id"]
  state = json.loads((workdir / "study_cell.json").read_text())
  assert state["attempts"][0]["launcher"] == "submitit-local" and state["jobs"]
  assert "final test accuracy" in (workdir / "log.txt").read_text()
