"""The study runner (experiments.study): expansion, resumable running, aggregation, bad input.

Cells run ``tests.experiments._fake_main`` (no training) except in the end-to-end test, which
runs ``experiments/studies/tiny.py`` through ``experiments.main``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import study

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BASE = "experiments/configs/default.py"


def fake_command(cell, resume, extra):
  return study.main_command(cell, resume, extra, BASE, module="tests.experiments._fake_main")


def write_study(tmp_path, raw: dict | str, name: str = "study.py") -> str:
  """A study file whose get_study() returns ``raw`` (a dict literal, or the file's text)."""
  path = tmp_path / name
  text = raw if isinstance(raw, str) else f"def get_study():\n  return {raw!r}\n"
  path.write_text(text)
  return str(path)


def run_fake(tmp_path, raw, *args, command=fake_command, **kwargs):
  """Runs a study with the fake cell command; returns (status, lines logged)."""
  lines = []
  argv = [
    write_study(tmp_path, raw),
    f"--workdirs={tmp_path / 'wd'}",
    f"--results={tmp_path / 'res'}",
    *args,
  ]
  code = study.run(argv, command=command, log=lines.append, **kwargs)
  return code, lines


def calls(workdir):
  with open(os.path.join(workdir, "calls.jsonl")) as f:
    return [json.loads(line) for line in f]


def read_csv(path):
  with open(path) as f:
    return list(csv.DictReader(f))


T1 = {
  "name": "t1",
  "base_config": BASE,
  "fixed": {"num_epochs": 10, "dataset.train_subset": 0},
  "grid": {
    "sparse.method": ["rigl", "mest"],
    "optimizer.name": ["sgd", "sam", "zo_sam", "random_perturbation"],
    "sparse.sparsity": [0.9, 0.98],
  },
  "seeds": [0, 1, 2],
  "group_by": ["sparse.method", "sparse.sparsity", "optimizer.name"],
}


# ----------------------------------------------------------------------------- expansion


def test_expansion_counts_ids_and_overrides():
  cells = study.parse_study(T1).expand("wd")
  assert len(cells) == 2 * 4 * 2 * 3
  assert len({c.cell_id for c in cells}) == len(cells)
  first = cells[0]
  assert first.cell_id.startswith("rigl-sgd-0.9-s0-") and len(first.cell_id.split("-")[-1]) == 8
  assert first.workdir == os.path.join("wd", "t1", first.cell_id)
  assert dict(first.overrides) == {
    "num_epochs": 10,
    "dataset.train_subset": 0,
    "sparse.method": "rigl",
    "optimizer.name": "sgd",
    "sparse.sparsity": 0.9,
    "seed": 0,
  }
  assert first.override_args()[-2:] == ["--config.sparse.sparsity=0.9", "--config.seed=0"]
  assert [c.seed for c in cells[:4]] == [0, 1, 2, 0]  # Seeds innermost.
  # Every combination appears once per seed.
  combos = {
    (c.value("sparse.method"), c.value("optimizer.name"), c.value("sparse.sparsity")) for c in cells
  }
  assert len(combos) == 16
  groups = {study.parse_study(T1).group_key(c) for c in cells}
  assert ("mest", 0.98, "random_perturbation") in groups and len(groups) == 16


def test_config_hash_is_stable_and_tracks_overrides():
  cells = study.parse_study(T1).expand("wd")
  # A literal: changing how hashes are made would orphan every existing workdir.
  assert cells[0].config_hash == study.config_hash(BASE, cells[0].overrides) == "4868c1ed"
  assert cells[0].cell_id == "rigl-sgd-0.9-s0-4868c1ed"
  # Same overrides in another order (or from another workdirs root): same hash.
  again = study.parse_study({**T1, "fixed": {"dataset.train_subset": 0, "num_epochs": 10}})
  assert [c.cell_id for c in again.expand("elsewhere")] == [c.cell_id for c in cells]
  # Any changed override, or base config, changes the hash of every cell.
  for changed in (
    {**T1, "fixed": {"num_epochs": 11, "dataset.train_subset": 0}},
    {**T1, "base_config": "experiments/configs/fashion_mnist_default.py"},
  ):
    other = study.parse_study(changed).expand("wd")
    assert all(a.config_hash != b.config_hash for a, b in zip(cells, other, strict=True))
    assert all(a.cell_id[:-8] == b.cell_id[:-8] for a, b in zip(cells, other, strict=True))


def test_explicit_cells_and_values():
  raw = {
    "name": "extra",
    "base_config": BASE,
    "grid": {"optimizer.name": ["sgd"]},
    "cells": [
      {"optimizer.name": "sam", "optimizer.rho": 0.1, "optimizer.adaptive": True},
      {"optimizer.name": "zo_sam", "seed": 7},  # Its own seed: not crossed with seeds.
    ],
    "seeds": [0, 1],
  }
  s = study.parse_study(raw)
  cells = s.expand("wd")
  assert [c.cell_id[:-9] for c in cells] == [
    "sgd-s0",
    "sgd-s1",
    "sam-0.1-true-s0",
    "sam-0.1-true-s1",
    "zo_sam-s7",
  ]
  assert "--config.optimizer.adaptive=true" in cells[2].override_args()
  assert s.group_by == ["optimizer.name", "optimizer.rho", "optimizer.adaptive"]
  assert s.group_key(cells[0]) == ("sgd", None, None)


# ----------------------------------------------------------------------------- running

TWO = {
  "name": "two",
  "base_config": BASE,
  "fixed": {"num_epochs": 2},
  "grid": {"fake.acc": [0.6, 0.8]},
}


def test_finished_cells_are_skipped(tmp_path):
  code, lines = run_fake(tmp_path, TWO)
  assert code == 0, lines
  cells = study.parse_study(TWO).expand(str(tmp_path / "wd"))
  for cell in cells:
    assert [c["resume"] for c in calls(cell.workdir)] == [False]
    assert os.path.exists(os.path.join(cell.workdir, "DONE.json"))
    assert "final test accuracy" in open(os.path.join(cell.workdir, "log.txt")).read()
  code, lines = run_fake(tmp_path, TWO)
  assert code == 0
  assert "2 cell(s) already done, 0 to run" in lines
  assert not any(line.startswith("start") for line in lines)
  for cell in cells:
    assert len(calls(cell.workdir)) == 1  # Nothing launched the second time.


def test_killed_cell_is_resumed_and_wall_time_summed(tmp_path):
  raw = {**TWO, "fixed": {"num_epochs": 3, "fake.die_first": True}, "grid": {"fake.acc": [0.9]}}
  code, lines = run_fake(tmp_path, raw)
  assert code == 1  # The first attempt exits 1.
  assert any(line.startswith("FAILED") for line in lines)
  (cell,) = study.parse_study(raw).expand(str(tmp_path / "wd"))
  assert study.cell_status(cell) == "failed"
  runs = read_csv(tmp_path / "res" / "two" / "runs.csv")
  assert runs[0]["status"] == "failed" and runs[0]["epochs"] == "1"
  assert "dying on purpose" in runs[0]["error"]

  code, lines = run_fake(tmp_path, raw)
  assert code == 0, lines
  assert [c["resume"] for c in calls(cell.workdir)] == [False, True]
  state = json.load(open(os.path.join(cell.workdir, "study_cell.json")))
  assert [a["status"] for a in state["attempts"]] == ["failed", "ok"]
  done = json.load(open(os.path.join(cell.workdir, "DONE.json")))
  assert done["attempts"] == 2
  assert done["wall_time_s"] == pytest.approx(sum(a["wall_s"] for a in state["attempts"]))
  runs = read_csv(tmp_path / "res" / "two" / "runs.csv")
  assert runs[0]["status"] == "done" and runs[0]["epochs"] == "3"
  assert float(runs[0]["test_accuracy"]) == pytest.approx(0.9)
  assert float(runs[0]["wall_time_s"]) == pytest.approx(done["wall_time_s"])


def test_workdir_left_by_a_killed_runner_is_resumed(tmp_path):
  """The runner itself was SIGKILLed: an attempt left open, a config.json, no DONE.json."""
  (cell,) = study.parse_study({**TWO, "grid": {"fake.acc": [0.5]}}).expand(str(tmp_path / "wd"))
  os.makedirs(cell.workdir)
  with open(os.path.join(cell.workdir, "config.json"), "w") as f:
    f.write("{}")
  with open(os.path.join(cell.workdir, "log.txt"), "w") as f:
    f.write("epoch 1/2\n")
  started = time.time() - 30.0
  os.utime(os.path.join(cell.workdir, "log.txt"), (started + 12.0, started + 12.0))
  attempt = {"kind": "train", "started": started, "resume": False, "wall_s": None}
  with open(os.path.join(cell.workdir, "study_cell.json"), "w") as f:
    json.dump({"attempts": [attempt]}, f)
  assert study.cell_status(cell) == "incomplete"
  code, lines = run_fake(tmp_path, {**TWO, "grid": {"fake.acc": [0.5]}})
  assert code == 0, lines
  assert [c["resume"] for c in calls(cell.workdir)] == [True]
  done = json.load(open(os.path.join(cell.workdir, "DONE.json")))
  assert done["attempts"] == 2
  assert 12.0 <= done["wall_time_s"] < 20.0  # The lost attempt: up to log.txt's last write.


def test_failed_cell_is_reported_and_others_go_on(tmp_path):
  raw = {**TWO, "grid": {"fake.fail": [True, False]}}
  code, lines = run_fake(tmp_path, raw)
  assert code == 1
  assert any("FAILED" in line and "error: fake failure" in line for line in lines)
  runs = {r["fake.fail"]: r for r in read_csv(tmp_path / "res" / "two" / "runs.csv")}
  assert runs["true"]["status"] == "failed" and runs["true"]["error"] == "error: fake failure"
  assert runs["false"]["status"] == "done"
  summary = (tmp_path / "res" / "two" / "summary.md").read_text()
  assert "failed: error: fake failure" in summary and "0 of 1" in summary
  # Aggregating alone reports it too.
  code, _ = run_fake(tmp_path, raw, "--only-aggregate")
  assert code == 1


def test_jobs_run_side_by_side(tmp_path):
  raw = {
    **TWO,
    "fixed": {"num_epochs": 1, "fake.sleep": 0.6},
    "grid": {"fake.acc": [0.1, 0.2, 0.3, 0.4]},
  }
  code, lines = run_fake(tmp_path, raw, "--jobs=2")
  assert code == 0, lines
  spans = []
  for cell in study.parse_study(raw).expand(str(tmp_path / "wd")):
    start = calls(cell.workdir)[0]["start"]
    spans.append((start, os.path.getmtime(os.path.join(cell.workdir, "metrics.jsonl"))))
  overlapping = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
  assert overlapping == 2


def test_cells_pattern_and_dry_run(tmp_path):
  code, lines = run_fake(tmp_path, TWO, "--dry-run")
  assert code == 0 and not (tmp_path / "wd").exists() and not (tmp_path / "res").exists()
  assert sum(line.startswith("missing") for line in lines) == 2
  assert any(
    "tests.experiments._fake_main" in line and "--config.fake.acc=0.6" in line for line in lines
  )
  code, lines = run_fake(tmp_path, TWO, "--cells=0.8-*")
  assert code == 0
  runs = {r["fake.acc"]: r["status"] for r in read_csv(tmp_path / "res" / "two" / "runs.csv")}
  assert runs == {"0.6": "missing", "0.8": "done"}


def test_extra_config_args_reach_cells_outside_the_hash(tmp_path):
  code, _ = run_fake(tmp_path, TWO, "--config.dataset.data_dir=/somewhere")
  assert code == 0
  for cell in study.parse_study(TWO).expand(str(tmp_path / "wd")):
    assert "--config.dataset.data_dir=/somewhere" in calls(cell.workdir)[0]["argv"]


def test_analyze_runs_after_cells_or_is_skipped_with_a_note(tmp_path):
  raw = {**TWO, "analyze": True}
  code, lines = run_fake(tmp_path, raw)  # No experiments.analyze module (yet).
  if study.analyze_available():
    pytest.skip("experiments.analyze exists")
  assert code == 0
  assert any("experiments.analyze not found" in line for line in lines)

  def fake_analyze(cell):
    return [sys.executable, "-c", "import sys; print('analysed', sys.argv[1])", cell.workdir]

  code, lines = run_fake(tmp_path, raw, analyze=fake_analyze)  # Done cells get analysed.
  assert code == 0
  for cell in study.parse_study(raw).expand(str(tmp_path / "wd")):
    assert os.path.exists(os.path.join(cell.workdir, "ANALYZED.json"))
    assert "analysed" in open(os.path.join(cell.workdir, "analyze_log.txt")).read()
  assert {r["analyzed"] for r in read_csv(tmp_path / "res" / "two" / "runs.csv")} == {"true"}

  def failing_analyze(cell):
    return [sys.executable, "-c", "raise SystemExit('error: no analysis')"]

  code, lines = run_fake(tmp_path, {**raw, "grid": {"fake.acc": [0.7]}}, analyze=failing_analyze)
  assert code == 1
  assert any(line.startswith("ANALYZE FAILED") and "error: no analysis" in line for line in lines)


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_children_and_they_resume(tmp_path, sig, code):
  raw = {**TWO, "fixed": {"num_epochs": 3, "fake.sleep": 0.4}}
  path = write_study(tmp_path, raw)
  argv = [sys.executable, "-m", "tests.experiments._fake_study", path, "--jobs=2"]
  argv += [f"--workdirs={tmp_path / 'wd'}", f"--results={tmp_path / 'res'}"]
  cells = study.parse_study(raw).expand(str(tmp_path / "wd"))
  proc = subprocess.Popen(
    argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )
  metrics = [os.path.join(c.workdir, "metrics.jsonl") for c in cells]
  deadline = time.time() + 30
  while not all(os.path.exists(m) for m in metrics) and time.time() < deadline:
    time.sleep(0.05)  # Each child has finished its first epoch.
  proc.send_signal(sig)
  out, _ = proc.communicate(timeout=30)
  assert proc.returncode == code, out
  assert "stopped" in out and "run the same command again to resume" in out
  for cell in cells:
    pid = int(open(os.path.join(cell.workdir, "pid")).read())
    with pytest.raises(ProcessLookupError):
      os.kill(pid, 0)
    assert study.cell_status(cell) == "incomplete"
    assert "interrupted" in open(os.path.join(cell.workdir, "log.txt")).read()
  assert not (tmp_path / "res").exists()  # Interrupted: no aggregation.
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=60)
  assert result.returncode == 0, result.stdout + result.stderr
  for cell in cells:
    assert [c["resume"] for c in calls(cell.workdir)] == [False, True]
    assert [r["epoch"] for r in study.read_evals(cell.workdir)] == [1, 2, 3]
    assert json.load(open(os.path.join(cell.workdir, "DONE.json")))["attempts"] == 2


# ----------------------------------------------------------------------------- aggregation


def fabricate(cell, accuracies, *, done=True, epoch_time=10.0, wall=100.0):
  """A workdir as a finished (or not) run would leave it, with these per-epoch accuracies."""
  os.makedirs(cell.workdir, exist_ok=True)
  with open(os.path.join(cell.workdir, "metrics.jsonl"), "w") as f:
    for i, acc in enumerate(accuracies, 1):
      f.write(json.dumps({"kind": "train", "step": 10 * i, "epoch": float(i), "loss": 1.0}) + "\n")
      record = {
        "kind": "eval",
        "step": 10 * i,
        "epoch": i,
        "test_accuracy": acc,
        "test_loss": 1 - acc,
        "train_epoch_time_s": epoch_time + i,
        "eval_time_s": 1.0,
      }
      f.write(json.dumps(record) + "\n")
  if done:
    with open(os.path.join(cell.workdir, "DONE.json"), "w") as f:
      json.dump({"wall_time_s": wall, "attempts": 1}, f)


AGG = {
  "name": "agg",
  "base_config": BASE,
  "fixed": {"num_epochs": 3},
  "grid": {"optimizer.name": ["sgd", "sam"]},
  "seeds": [0, 1, 2],
  "metrics": ["test_accuracy", "test_loss"],
  "paper": {"source": "Table 1 of the paper", "scale": 100, "values": {("sgd",): 84.0}},
  "target_accuracy": 0.8,
}


def test_aggregation_mean_std_by_hand(tmp_path):
  cells = study.parse_study(AGG).expand(str(tmp_path / "wd"))
  sgd, sam = cells[:3], cells[3:]
  for cell, final in zip(sgd, (0.80, 0.82, 0.87), strict=True):
    fabricate(cell, [0.5, 0.7, final], wall=100.0 + cell.seed)
  fabricate(sam[0], [0.6, 0.85, 0.90])
  fabricate(sam[1], [0.6, 0.75, 0.79])
  fabricate(sam[2], [0.6], done=False)  # Killed after epoch 1.
  code, lines = run_fake(tmp_path, AGG, "--only-aggregate")
  assert code == 0, lines
  out = tmp_path / "res" / "agg"

  runs = read_csv(out / "runs.csv")
  assert [r["status"] for r in runs] == ["done"] * 5 + ["incomplete"]
  assert runs[0]["cell_id"] == cells[0].cell_id and runs[0]["config_hash"] == cells[0].config_hash
  assert runs[0]["optimizer.name"] == "sgd" and runs[0]["num_epochs"] == "3"
  assert [r["seed"] for r in runs] == ["0", "1", "2"] * 2
  assert float(runs[2]["test_accuracy"]) == 0.87 and float(runs[2]["wall_time_s"]) == 102.0
  assert runs[5]["epochs"] == "1" and float(runs[5]["test_accuracy"]) == 0.6

  summary = {r["optimizer.name"]: r for r in read_csv(out / "summary.csv")}
  std = math.sqrt(((0.80 - 0.83) ** 2 + (0.82 - 0.83) ** 2 + (0.87 - 0.83) ** 2) / 2)
  assert float(summary["sgd"]["test_accuracy_mean"]) == pytest.approx(0.83)
  assert float(summary["sgd"]["test_accuracy_std"]) == pytest.approx(std)
  assert float(summary["sgd"]["wall_time_s_mean"]) == pytest.approx(101.0)
  assert summary["sgd"]["n"] == "3" and summary["sam"]["n"] == "2"
  assert summary["sam"]["n_asked"] == "3"
  assert float(summary["sam"]["test_accuracy_mean"]) == pytest.approx(0.845)
  assert float(summary["sam"]["test_accuracy_std"]) == pytest.approx(math.sqrt(2 * 0.055**2))
  assert float(summary["sgd"]["ours_minus_paper"]) == pytest.approx(83.0 - 84.0)
  assert summary["sam"]["paper"] == ""

  md = (out / "summary.md").read_text()
  assert f"| sgd | 3 | 0.8300 ± {std:.4f} |" in md
  assert "| sam | 2 of 3 | 0.8450 ± 0.0778 |" in md
  assert "84.00 | -1.00 |" in md and "Table 1 of the paper" in md
  assert "optimizer.name=sam: n=2 of 3" in md
  assert "2 of 2 done" not in md and "5 done, 1 incomplete" in md
  for name in ("curves_test_accuracy.png", "curves_test_loss.png"):
    assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"]({name})" in md


def test_epochs_and_seconds_to_target(tmp_path):
  evals = [
    {"epoch": 1, "test_accuracy": 0.5, "train_epoch_time_s": 10.0},
    {"epoch": 2, "test_accuracy": 0.85, "train_epoch_time_s": 11.0},
    {"epoch": 3, "test_accuracy": 0.95, "train_epoch_time_s": 12.0},
    {"epoch": 4, "test_accuracy": 0.97, "train_epoch_time_s": 13.0},
  ]
  assert study.time_to_target(evals, "test_accuracy", 0.9) == (3, 33.0)
  assert study.time_to_target(evals, "test_accuracy", 0.5) == (1, 10.0)
  assert study.time_to_target(evals, "test_accuracy", 0.99) == (None, None)

  cells = study.parse_study(AGG).expand(str(tmp_path / "wd"))
  fabricate(cells[0], [0.5, 0.81, 0.9], epoch_time=10.0)  # 0.8 at epoch 2: 11 + 12 s.
  fabricate(cells[1], [0.79, 0.80, 0.9], epoch_time=20.0)  # Epoch 2: 21 + 22 s.
  fabricate(cells[2], [0.1, 0.2, 0.3])  # Never.
  code, _ = run_fake(tmp_path, AGG, "--only-aggregate")
  assert code == 0
  out = tmp_path / "res" / "agg"
  runs = read_csv(out / "runs.csv")
  assert [r["epochs_to_target"] for r in runs[:3]] == ["2", "2", ""]
  assert [r["seconds_to_target"] for r in runs[:3]] == ["23.0", "43.0", ""]
  sgd = read_csv(out / "summary.csv")[0]
  assert sgd["reached"] == "2" and float(sgd["seconds_to_target_mean"]) == 33.0
  assert float(sgd["seconds_to_target_std"]) == pytest.approx(math.sqrt(200.0))
  md = (out / "summary.md").read_text()
  assert "## Time to reach test_accuracy ≥ 0.8" in md
  assert "| sgd | 2 of 3 | 2.00 ± 0.00 | 33.0 ± 14.1 |" in md


def test_aggregate_of_an_empty_study(tmp_path):
  code, _ = run_fake(tmp_path, AGG, "--only-aggregate")
  assert code == 0
  md = (tmp_path / "res" / "agg" / "summary.md").read_text()
  assert "6 missing" in md and "| sgd | 0 of 3 | - | - |" in md
  assert not list((tmp_path / "res" / "agg").glob("*.png"))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
  "raw,expected",
  [
    ("x = 1\n", "has no get_study()"),
    ("def get_study(:\n", "failed to load: SyntaxError"),
    ("def get_study():\n  return [1]\n", "must return a dict"),
    ({**TWO, "grids": {}}, "unknown key(s) grids"),
    ({**TWO, "grid": {}}, "empty grid"),
    ({**TWO, "grid": {"optimizer.name": []}}, "grid['optimizer.name'] is empty"),
    ({**TWO, "grid": {"optimizer.name": "sgd"}}, "grid['optimizer.name'] must be a list"),
    ({**TWO, "grid": {"a": [1, 1]}}, "repeats a value"),
    ({**TWO, "grid": {"a": [[1]]}}, "is not a number, string or bool"),
    ({**TWO, "grid": {"bad key": [1]}}, "is not a config field name"),
    ({k: v for k, v in TWO.items() if k != "name"}, "'name' (a non-empty string) is required"),
    ({**TWO, "name": "a/b"}, "may only hold letters"),
    ({**TWO, "base_config": "nope.py"}, "base_config nope.py does not exist"),
    ({**TWO, "seeds": []}, "seeds must be a non-empty list"),
    ({**TWO, "fixed": {"seed": 1}}, "list seeds in 'seeds'"),
    ({**TWO, "fixed": {"fake.acc": 1}}, "both fixed and varied"),
    ({**TWO, "group_by": ["nope"]}, "group_by field(s) nope are not in"),
    ({**TWO, "paper": {("a", "b"): 1.0}}, "has 2 value(s); group_by has 1"),
    ({**TWO, "cells": [{"fake.acc": 0.6}]}, "are the same run"),
    ({**TWO, "target_accuracy": "high"}, "target_accuracy must be a number"),
  ],
)
def test_bad_study_exits_2_before_anything_runs(tmp_path, capsys, raw, expected):
  launched = []

  def command(cell, resume, extra):
    launched.append(cell)
    return fake_command(cell, resume, extra)

  path = write_study(tmp_path, raw)
  argv = [path, f"--workdirs={tmp_path / 'wd'}", f"--results={tmp_path / 'res'}"]
  assert study.run(argv, command=command, log=lambda s: None) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
  assert not launched and not (tmp_path / "wd").exists() and not (tmp_path / "res").exists()


@pytest.mark.parametrize(
  "args,expected",
  [
    (["--jobs=0"], "--jobs must be >= 1"),
    (["--bogus"], "unrecognised argument --bogus"),
    (["--cells=zz*"], "--cells zz* matches no cell"),
    (["--only-aggregate", "--dry-run"], "exclude each other"),
  ],
)
def test_bad_command_line_exits_2(tmp_path, capsys, args, expected):
  argv = [write_study(tmp_path, TWO), f"--workdirs={tmp_path / 'wd'}", *args]
  assert study.run(argv, command=fake_command, log=lambda s: None) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
  assert not (tmp_path / "wd").exists()


def test_missing_study_file_from_the_command_line(tmp_path):
  result = subprocess.run(
    [sys.executable, "-m", "experiments.study", str(tmp_path / "none.py")],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=60,
  )
  assert result.returncode == 2
  assert result.stderr.strip() == f"error: study config {tmp_path / 'none.py'} does not exist"


# ----------------------------------------------------------------------------- end to end


def test_tiny_study_end_to_end(tmp_path, data_dir, fmnist_subset_dir):
  """experiments/studies/tiny.py through experiments.main: 2 real one-epoch runs."""
  argv = [
    sys.executable,
    "-m",
    "experiments.study",
    "experiments/studies/tiny.py",
    "--jobs=2",
    f"--workdirs={tmp_path / 'wd'}",
    f"--results={tmp_path / 'res'}",
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={fmnist_subset_dir}",
  ]
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  out = tmp_path / "res" / "tiny"
  runs = read_csv(out / "runs.csv")
  assert [r["optimizer.name"] for r in runs] == ["sgd", "sam"]
  assert all(r["status"] == "done" and r["epochs"] == "1" for r in runs)
  assert all(0.1 < float(r["test_accuracy"]) <= 1.0 for r in runs)
  md = (out / "summary.md").read_text()
  assert "| sgd | 1 |" in md and "| sam | 1 |" in md
  assert (out / "curves_test_accuracy.png").stat().st_size > 1000
  for r in runs:
    workdir = tmp_path / "wd" / "tiny" / r["cell_id"]
    assert (workdir / "DONE.json").exists() and (workdir / "checkpoints").is_dir()
    assert "final test accuracy" in (workdir / "log.txt").read_text()
  # Run again: nothing to do.
  again = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)
  assert again.returncode == 0 and "2 cell(s) already done, 0 to run" in again.stdout


def test_curves_split_into_panels_for_many_groups(tmp_path):
  """16 groups over 3 fields: one panel per (method, sparsity), one line per optimizer."""
  raw = {**T1, "seeds": [0, 1], "paper": {("rigl", 0.9, "zo_sam"): 93.66}}
  cells = study.parse_study(raw).expand(str(tmp_path / "wd"))
  for i, cell in enumerate(cells):
    if cell.seed == 0 or i % 3:  # Some groups have one seed of two.
      fabricate(cell, [0.3 + 0.01 * (i % 7), 0.5 + 0.01 * (i % 5), 0.6 + 0.01 * (i % 4)])
  code, _ = run_fake(tmp_path, raw, "--only-aggregate")
  assert code == 0
  out = tmp_path / "res" / "t1"
  assert (out / "curves_test_accuracy.png").stat().st_size > 10_000
  md = (out / "summary.md").read_text()
  assert md.count("\n| rigl |") + md.count("\n| mest |") == 16
  rows = [line for line in md.splitlines() if line.startswith(("| rigl", "| mest"))]
  assert [r.split(" | ")[:3] for r in rows[:5]] == [
    ["| rigl", "0.9", o] for o in ("sgd", "sam", "zo_sam", "random_perturbation")
  ] + [["| rigl", "0.98", "sgd"]]  # Sorted by group_by, values in the study's order.
  assert "| rigl | 0.9 | zo_sam | 1 of 2 |" in md and "93.66 |" in md
  assert "look 100x ours: percent? Set `paper['scale'] = 100`" in md  # Plain mapping: scale 1.


def test_paper_numbers_from_another_dataset_are_shown_not_subtracted(tmp_path):
  """``comparable: False`` keeps the paper's column and drops ``ours − paper``."""
  from experiments import study as st

  path = tmp_path / "s.py"
  path.write_text(
    "def get_study():\n"
    "  return {'name': 'p', 'base_config': 'experiments/configs/default.py',\n"
    "          'grid': {'optimizer.name': ['sgd', 'sam']},\n"
    "          'paper': {'source': 'X', 'scale': 100, 'comparable': False,\n"
    "                    'values': {('sgd',): 93.0}}}\n"
  )
  row = {"_group": ("sgd",), "status": "done", "test_accuracy": 0.9, "wall_time_s": 1.0}
  row.update(epochs_to_target=None, seconds_to_target=None)
  for comparable, expected in ((True, 90.0 - 93.0), (False, None)):
    path.write_text(
      path.read_text().replace(f"'comparable': {not comparable}", f"'comparable': {comparable}")
    )
    study = st.load_study(str(path))
    assert study.paper["comparable"] is comparable
    (group,) = st.summarize(study, [row])
    assert group["paper"] == 93.0
    assert group["ours_minus_paper"] == (None if expected is None else pytest.approx(expected))
