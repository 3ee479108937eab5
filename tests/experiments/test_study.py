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
import statistics
import subprocess
import sys
import time

import pytest

from experiments import study
from experiments.runner import spec as runner_spec
from tests.experiments.conftest import REPO, cli_error

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


def fake_analyze(job):
  return study.analyze_command(job, module="tests.experiments._fake_analyze")


def analyze_calls(workdir):
  path = os.path.join(workdir, "analyze_calls.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line)["argv"] for line in f]


def test_analyze_true_analyses_the_final_checkpoint_or_is_skipped_with_a_note(
  tmp_path, monkeypatch
):
  raw = {**TWO, "analyze": True}
  with monkeypatch.context() as m:
    m.setattr(runner_spec, "analyze_available", lambda: False)  # Where the runner reads it.
    code, lines = run_fake(tmp_path, raw)
  assert code == 0
  assert any("experiments.analyze not found" in line for line in lines)

  code, lines = run_fake(tmp_path, raw, analyze=fake_analyze)  # Done cells get analysed.
  assert code == 0, lines
  for cell in study.parse_study(raw).expand(str(tmp_path / "wd")):
    out = os.path.join(cell.workdir, "analysis", "two", "final")
    assert analyze_calls(cell.workdir) == [[os.path.abspath(cell.workdir), f"--out={out}"]]
    marker = json.load(open(os.path.join(out, "ANALYZED.json")))
    assert marker["step"] == "final" and marker["args"] == [] and marker["wall_s"] > 0
    assert "fake analysis of step 20" in open(os.path.join(out, "analyze_log.txt")).read()
  assert {r["analyzed"] for r in read_csv(tmp_path / "res" / "two" / "runs.csv")} == {"true"}
  assert "## Analysis" not in (tmp_path / "res" / "two" / "summary.md").read_text()

  failing = {**raw, "fixed": {"num_epochs": 2, "fake.analyze_fail": True}}
  code, lines = run_fake(tmp_path, failing, analyze=fake_analyze)
  assert code == 1
  assert sum(line.startswith("ANALYZE FAILED") for line in lines) == 2
  assert all("error: fake analysis failure" in line for line in lines if "FAILED" in line)
  assert {r["analyzed"] for r in read_csv(tmp_path / "res" / "two" / "runs.csv")} == {"false"}


STEPS = {
  **TWO,
  "fixed": {"num_epochs": 3},  # Checkpoints at steps 10, 20, 30.
  "analyze": {
    "args": ["--skip", "spectrum,landscape"],
    "steps": [10, 30, "final"],
    "metrics": {"lambda_1": "hessian.eigenvalues.0"},
  },
}


def test_analysis_per_step_commands_out_folders_and_markers(tmp_path):
  code, lines = run_fake(tmp_path, STEPS, analyze=fake_analyze)
  assert code == 0, lines
  cells = study.parse_study(STEPS).expand(str(tmp_path / "wd"))
  for cell in cells:
    workdir = os.path.abspath(cell.workdir)
    out = os.path.join(workdir, "analysis", "two")
    flags = ["--skip", "spectrum,landscape"]
    assert analyze_calls(cell.workdir) == [
      [workdir, "--step=10", f"--out={out}/step_10", *flags],
      [workdir, "--step=30", f"--out={out}/step_30", *flags],
      [workdir, f"--out={out}/final", *flags],
    ]
    for label, step in (("step_10", 10), ("step_30", 30), ("final", 30)):
      assert json.load(open(os.path.join(out, label, "analysis.json")))["step"] == step
      assert json.load(open(os.path.join(out, label, "ANALYZED.json")))["args"] == flags
  runs = read_csv(tmp_path / "res" / "two" / "runs.csv")
  acc = {0.6: 6.0, 0.8: 8.0}
  for r in runs:
    a = acc[float(r["fake.acc"])]
    assert [r[f"analysis@{lab}"] for lab in ("step_10", "step_30", "final")] == ["done"] * 3
    assert float(r["lambda_1@step_10"]) == pytest.approx(a + 0.01)
    assert float(r["lambda_1@step_30"]) == float(r["lambda_1@final"]) == pytest.approx(a + 0.03)

  # Markers: a second run launches nothing.
  code, lines = run_fake(tmp_path, STEPS, analyze=fake_analyze)
  assert code == 0
  assert not any(line.startswith("start") for line in lines)
  assert all(len(analyze_calls(c.workdir)) == 3 for c in cells)
  # Other args: the analyses are out of date and run again (training is not).
  other = {**STEPS, "analyze": {**STEPS["analyze"], "args": ["--skip", "spectrum"]}}
  code, lines = run_fake(tmp_path, other, analyze=fake_analyze)
  assert code == 0
  assert sum("analysed with other args" in line for line in lines) == 6
  assert all(len(analyze_calls(c.workdir)) == 6 for c in cells)
  assert all(len(calls(c.workdir)) == 1 for c in cells)


def test_step_without_checkpoint_is_a_note_and_counts_as_missing(tmp_path):
  raw = {**TWO, "analyze": {"steps": [20, 25], "metrics": {"trace": "hessian.trace"}}}
  code, lines = run_fake(tmp_path, raw, analyze=fake_analyze)
  assert code == 0, lines
  cells = study.parse_study(raw).expand(str(tmp_path / "wd"))
  assert sum("no checkpoint at step 25" in line for line in lines) == 2
  for cell in cells:
    assert [argv[1] for argv in analyze_calls(cell.workdir)] == ["--step=20"]
    assert not os.path.exists(os.path.join(cell.workdir, "analysis", "two", "step_25"))
  runs = read_csv(tmp_path / "res" / "two" / "runs.csv")
  assert [r["analysis@step_25"] for r in runs] == ["no checkpoint"] * 2
  assert [r["trace@step_25"] for r in runs] == ["", ""]
  assert [float(r["trace@step_20"]) for r in runs] == pytest.approx([60.0, 80.0])
  md = (tmp_path / "res" / "two" / "summary.md").read_text()
  assert "### step_25: step 25" in md and "| 0.6 | 0 of 1 | - |" in md
  assert "| 0.6 | 1 | 60 |" in md
  assert "analysis step_25: no checkpoint at step 25 in 2 finished cell(s)" in md
  # Dry run: says so again and launches nothing.
  code, lines = run_fake(tmp_path, raw, "--dry-run", analyze=fake_analyze)
  assert code == 0 and sum("analysis step_25: no checkpoint at step 25" in x for x in lines) == 2


ACC = {**TWO, "name": "acc", "grid": {"fake.acc": [0.6, 0.8]}, "seeds": [0, 1]}


def test_workdirs_of_analyses_the_other_studys_finished_cells_and_never_trains(tmp_path):
  code, _ = run_fake(tmp_path, ACC, "--cells=0.6-*")  # Half of acc is trained.
  assert code == 0
  hessian = {
    **ACC,
    "name": "acc_hessian",
    "workdirs_of": "acc",
    "grid": {"fake.acc": [0.8, 0.6]},  # Another order: the same cells.
    "analyze": {"metrics": {"trace": "hessian.trace"}},
  }
  launched = []

  def command(cell, resume, extra):
    launched.append(cell.cell_id)
    return fake_command(cell, resume, extra)

  code, lines = run_fake(tmp_path, hessian, "--dry-run", command=command, analyze=fake_analyze)
  assert code == 0 and sum(line.strip() == "waiting for acc" for line in lines) == 2
  assert sum("analyze final:" in line and "_fake_analyze" in line for line in lines) == 2

  code, lines = run_fake(tmp_path, hessian, command=command, analyze=fake_analyze)
  assert code == 0, lines
  assert not launched
  assert not (tmp_path / "wd" / "acc_hessian").exists()
  acc_cells = {c.cell_id: c for c in study.parse_study(ACC).expand(str(tmp_path / "wd"))}
  cells = study.parse_study(hessian).expand(str(tmp_path / "wd"))
  assert {c.cell_id for c in cells} == set(acc_cells)
  for cell in cells:
    assert cell.workdir == acc_cells[cell.cell_id].workdir
    out = os.path.join(cell.workdir, "analysis", "acc_hessian", "final")
    if cell.value("fake.acc") == 0.6:
      assert len(analyze_calls(cell.workdir)) == 1
      assert os.path.exists(os.path.join(out, "ANALYZED.json"))
    else:
      assert not os.path.exists(cell.workdir)
      assert f"waiting for acc: {cell.cell_id} (missing)" in lines
  assert "2 cell(s) of acc done, 2 waiting for acc, 2 analysis(es) to run" in lines
  runs = {r["cell_id"]: r for r in read_csv(tmp_path / "res" / "acc_hessian" / "runs.csv")}
  assert {r["analysis@final"] for r in runs.values()} == {"done", "waiting"}
  md = (tmp_path / "res" / "acc_hessian" / "summary.md").read_text()
  assert "those of study `acc`" in md
  assert "Machine time" not in md  # The analysed runs' training time is the other study's.
  assert "| 0.6 | 2 | 60.5 ± 0.71 |" in md and "| 0.8 | 0 of 2 | - |" in md


def test_shared_cells_link_the_other_studys_finished_runs_and_train_the_rest(tmp_path):
  # acc trains 0.6 (both seeds) and 0.8 seed 0 only; 0.8 seed 1 is left killed (incomplete).
  code, _ = run_fake(tmp_path, ACC, "--cells=0.6-*,0.8-s0-*")
  assert code == 0
  acc_cells = study.parse_study(ACC).expand(str(tmp_path / "wd"))
  killed = next(c for c in acc_cells if c.cell_id.startswith("0.8-s1-"))
  os.makedirs(killed.workdir)
  methods = {
    **ACC,
    "name": "methods",
    "grid": {"fake.acc": [0.6, 0.8, 0.7]},
    "group_by": ["fake.acc"],
    "shares_cells_with": ["acc"],
  }
  cells = {c.cell_id: c for c in study.parse_study(methods).expand(str(tmp_path / "wd"))}
  code, lines = run_fake(tmp_path, methods, "--dry-run")
  assert code == 0 and sum("would share" in line for line in lines) == 3

  launched = []

  def command(cell, resume, extra):
    launched.append(cell.cell_id)
    return fake_command(cell, resume, extra)

  code, lines = run_fake(tmp_path, methods, command=command)
  assert code == 0, lines
  by_hash = {c.config_hash: c for c in acc_cells}
  shared = [c for c in cells.values() if c.config_hash in by_hash and c.cell_id != killed.cell_id]
  assert len(shared) == 3  # Same fixed fields and values as acc's finished cells: same hashes.
  for cell in shared:
    assert os.path.islink(cell.workdir)
    assert os.path.realpath(cell.workdir) == os.path.realpath(by_hash[cell.config_hash].workdir)
    assert not os.path.isabs(os.readlink(cell.workdir))  # The workdirs root can move.
    assert f"shared {cell.cell_id}: the finished run of acc" in lines
    assert len(calls(cell.workdir)) == 1  # Trained once, by acc.
  # The unfinished acc cell is not shared: methods trains its own; so are the new 0.7 cells.
  assert sorted(launched) == sorted(set(cells) - {c.cell_id for c in shared})
  assert not any(os.path.islink(cells[i].workdir) for i in launched)
  assert len(launched) == 3

  runs = {r["cell_id"]: r for r in read_csv(tmp_path / "res" / "methods" / "runs.csv")}
  assert {i for i, r in runs.items() if r["shared_from"] == "acc"} == {c.cell_id for c in shared}
  assert {r["status"] for r in runs.values()} == {"done"}
  md = (tmp_path / "res" / "methods" / "summary.md").read_text()
  assert "over 3 finished runs" in md  # Machine time counts only the runs trained here.
  assert "* Shared runs: 3 finished run(s) are study `acc`'s" in md
  code, lines = run_fake(tmp_path, methods, command=command)
  assert code == 0 and "6 cell(s) already done, 0 to run" in lines and len(launched) == 3


def test_analysis_aggregation_mean_std_by_hand(tmp_path):
  raw = {
    **TWO,
    "name": "agg",
    "grid": {"fake.acc": [0.6, 0.8]},
    "seeds": [0, 1, 3],
    "analyze": {
      "args": ["--skip", "corrupted"],
      "steps": [10, "final"],
      "metrics": {
        "lambda_1": "hessian.eigenvalues.0",
        "lambda_5": "hessian.eigenvalues.-1",
        "ratio": "hessian.lambda1_over_lambda5",
        "var_rel_sgd": "gradient_variance.heads.sgd.relative",
        "cos_m4": "ascent.directions.zo_sam_m4.cosine_mean",
        "fmnist_c": "corrupted.mean_accuracy",
      },
    },
  }
  code, lines = run_fake(tmp_path, raw, analyze=fake_analyze)
  assert code == 0, lines
  seeds = [0, 1, 3]

  def mean_std(xs):
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))

  expected = {}  # (acc, label) -> {metric: (mean, std)}: the fake's formulas.
  for a in (0.6, 0.8):
    for label, t in (("step_10", 10), ("final", 20)):
      lam = [10 * a + s + t / 1000 for s in seeds]
      expected[a, label] = {
        "lambda_1": mean_std(lam),
        "lambda_5": (0.5, 0.0),
        "ratio": mean_std([x / 0.5 for x in lam]),
        "var_rel_sgd": mean_std([t / 100 + s for s in seeds]),
        "cos_m4": mean_std([0.25 + s / 100 for s in seeds]),
      }
  summary = {float(r["fake.acc"]): r for r in read_csv(tmp_path / "res" / "agg" / "summary.csv")}
  md = (tmp_path / "res" / "agg" / "summary.md").read_text()
  for (a, label), metrics in expected.items():
    row = summary[a]
    assert row[f"analyzed@{label}"] == "3"
    for metric, (mean, std) in metrics.items():
      assert float(row[f"{metric}@{label}_mean"]) == pytest.approx(mean)
      assert float(row[f"{metric}@{label}_std"]) == pytest.approx(std, abs=1e-12)
      assert row[f"{metric}@{label}_n"] == "3"
    assert row[f"fmnist_c@{label}_mean"] == "" and row[f"fmnist_c@{label}_n"] == "0"
  lam, lam_std = expected[0.6, "step_10"]["lambda_1"]
  var, var_std = expected[0.6, "step_10"]["var_rel_sgd"]
  assert f"| 0.6 | 3 | {lam:.4g} ± {lam_std:.2g} | 0.5 ± 0 |" in md
  assert f"| {var:.4g} ± {var_std:.2g} |" in md
  assert "## Analysis" in md and "### step_10: step 10" in md and "### final:" in md
  assert "lambda_1 = `hessian.eigenvalues.0`" in md
  assert (
    "fmnist_c@final: `corrupted.mean_accuracy` missing in 6 analysis.json: "
    "skipped (--skip corrupted)" in md
  )
  runs = read_csv(tmp_path / "res" / "agg" / "runs.csv")
  assert float(runs[2]["lambda_1@final"]) == pytest.approx(6 + 3 + 0.02)
  assert "analysed: step_10 6 of 6, final 6 of 6" in lines


def test_lookup_paths_in_analysis_json():
  data = {"h": {"eig": [3.0, 2.0, 1.0], "flag": True, "none": None}, "c": {"skipped": "why"}}
  assert study.lookup(data, "h.eig.0") == (3.0, None)
  assert study.lookup(data, "h.eig.-1") == (1.0, None)
  assert study.lookup(data, "h.eig.3") == (None, "index 3 is outside a list of 3")
  assert study.lookup(data, "h.eig") == (None, "not a number (list)")
  assert study.lookup(data, "h.flag")[0] is None
  assert study.lookup(data, "h.none") == (None, "null (not finite)")
  assert study.lookup(data, "c.mean_accuracy") == (None, "why")
  assert study.lookup(data, "x.y") == (None, "no 'x' there")


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


def test_eval_records_skip_a_last_line_cut_by_a_kill_but_not_a_bad_line_before(tmp_path):
  cell = study.parse_study(TWO).expand(str(tmp_path / "wd"))[0]
  assert study.read_evals(cell.workdir) == []  # Not started.
  fabricate(cell, [0.5, 0.6])
  path = os.path.join(cell.workdir, "metrics.jsonl")
  with open(path, "a") as f:
    f.write('{"kind": "eval", "step": 30, "epo')  # Killed while writing epoch 3's record.
  assert [r["epoch"] for r in study.read_evals(cell.workdir)] == [1, 2]
  with open(path) as f:
    lines = f.readlines()
  with open(path, "w") as f:
    f.writelines([lines[0], "not json\n", *lines[1:]])
  with pytest.raises(ValueError):
    study.read_evals(cell.workdir)


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
  # Finished runs only: 100 + 101 + 102 (SGD) + 100 + 100 (SAM) seconds.
  assert f"* Machine time: {503 / 3600:.2f} h of wall time over 5 finished runs" in md
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
  # eval_every_steps: records inside an epoch carry that epoch's time so far.
  interim = [
    {"epoch": 0.5, "test_accuracy": 0.3, "train_epoch_time_s": 4.0},
    evals[0],
    {"epoch": 1.25, "test_accuracy": 0.6, "train_epoch_time_s": 3.0},
    {"epoch": 1.5, "test_accuracy": 0.8, "train_epoch_time_s": 6.0},
    evals[1],
    {"epoch": 2.5, "test_accuracy": 0.92, "train_epoch_time_s": 5.5},
    evals[2],
  ]
  assert study.time_to_target(interim, "test_accuracy", 0.3) == (0.5, 4.0)
  assert study.time_to_target(interim, "test_accuracy", 0.55) == (1.25, 13.0)
  assert study.time_to_target(interim, "test_accuracy", 0.8) == (1.5, 16.0)
  assert study.time_to_target(interim, "test_accuracy", 0.85) == (2, 21.0)
  assert study.time_to_target(interim, "test_accuracy", 0.9) == (2.5, 26.5)
  # A run resumed mid-epoch 2 timed only part of it: no seconds from there on, epochs still.
  resumed = [*interim[:4], {**evals[1], "train_epoch_time_partial": True}, *interim[5:]]
  assert study.time_to_target(resumed, "test_accuracy", 0.8) == (1.5, 16.0)
  assert study.time_to_target(resumed, "test_accuracy", 0.85) == (2, None)
  assert study.time_to_target(resumed, "test_accuracy", 0.9) == (2.5, None)

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
    (
      {**TWO, "paper": {"values": {(0.6,): 1.0}, "effect": "ratio"}},
      "paper['effect'] must be one of difference, relative_error, none, got 'ratio'",
    ),
    ({**TWO, "cells": [{"fake.acc": 0.6}]}, "are the same run"),
    ({**TWO, "target_accuracy": "high"}, "target_accuracy must be a number"),
    ({**TWO, "analyze": "yes"}, "analyze must be True, False or a dict with keys args, steps"),
    ({**TWO, "analyze": {"step": [1]}}, "analyze: unknown key(s) step; valid: args, steps"),
    ({**TWO, "analyze": {"args": "--skip x"}}, "analyze['args'] must be a list of strings"),
    ({**TWO, "analyze": {"args": ["--bogus"]}}, "unrecognized arguments: --bogus"),
    ({**TWO, "analyze": {"args": ["--skip", "nope"]}}, "unknown part(s) in --skip: nope"),
    ({**TWO, "analyze": {"args": ["--step", "5"]}}, "sets --step or --out: the runner sets"),
    ({**TWO, "analyze": {"args": ["--out=x"]}}, "sets --step or --out: the runner sets"),
    ({**TWO, "analyze": {"args": ["other_dir"]}}, "holds a workdir ('other_dir')"),
    ({**TWO, "analyze": {"steps": []}}, "analyze['steps'] must be a non-empty list of checkpoint"),
    ({**TWO, "analyze": {"steps": 5}}, "analyze['steps'] must be a non-empty list"),
    ({**TWO, "analyze": {"steps": [-1]}}, "analyze['steps']: -1 is not allowed; give a non-empty"),
    ({**TWO, "analyze": {"steps": [True]}}, "analyze['steps']: True is not allowed"),
    ({**TWO, "analyze": {"steps": ["last"]}}, "analyze['steps']: 'last' is not allowed"),
    ({**TWO, "analyze": {"steps": [1.5]}}, "analyze['steps']: 1.5 is not allowed"),
    ({**TWO, "analyze": {"steps": [5, "final", 5]}}, "analyze['steps'] repeats a step"),
    ({**TWO, "analyze": {"metrics": ["trace"]}}, "analyze['metrics'] must be a dict"),
    ({**TWO, "analyze": {"metrics": {"lambda-1": "a.b"}}}, "'lambda-1' is not a column name"),
    ({**TWO, "analyze": {"metrics": {"t": ""}}}, "analyze['metrics']['t'] must be a dotted path"),
    ({**TWO, "analyze": {"metrics": {"t": "a..b"}}}, "analyze['metrics']['t'] must be a dotted"),
    ({**TWO, "analyze": {"metrics": {"t": 3}}}, "analyze['metrics']['t'] must be a dotted path"),
    ({**TWO, "workdirs_of": "other"}, "workdirs_of needs 'analyze' (True or a dict)"),
    ({**TWO, "workdirs_of": "other", "analyze": False}, "workdirs_of needs 'analyze'"),
    ({**TWO, "workdirs_of": "two", "analyze": True}, "workdirs_of names this study itself"),
    ({**TWO, "workdirs_of": "a/b", "analyze": True}, "workdirs_of must be the name of another"),
    ({**TWO, "shares_cells_with": "two"}, "shares_cells_with names this study itself"),
    ({**TWO, "shares_cells_with": [3]}, "shares_cells_with must be a list of other studies'"),
    ({**TWO, "shares_cells_with": ["a/b"]}, "shares_cells_with must be a list of other studies'"),
    (
      {**TWO, "shares_cells_with": ["t1"], "workdirs_of": "t1", "analyze": True},
      "shares_cells_with and workdirs_of exclude each other",
    ),
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
  missing = tmp_path / "none.py"
  assert cli_error("experiments.study", str(missing), timeout=60) == [
    f"error: study config {missing} does not exist"
  ]


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
  md, paired = (out / "summary.md").read_text().split("## Paired differences")
  assert md.count("\n| rigl |") + md.count("\n| mest |") == 16
  # Against SGD, 3 arms in each of 4 cell groups; against SAM, 2 (SGD is not compared again).
  assert paired.count("\n| rigl |") + paired.count("\n| mest |") == 12 + 8
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


@pytest.mark.slow
def test_analysis_study_end_to_end(tmp_path, data_dir, fmnist_subset_dir):
  """tiny.py's two runs, then a ``workdirs_of`` study running the real experiments.analyze
  (Hessian only, small settings) on their final checkpoint and on a step that was not saved."""
  common = [f"--workdirs={tmp_path / 'wd'}", f"--results={tmp_path / 'res'}"]
  local = [
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={fmnist_subset_dir}",
  ]
  train = [sys.executable, "-m", "experiments.study", "experiments/studies/tiny.py"]
  result = subprocess.run(
    train + common + local, cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert result.returncode == 0, result.stdout + result.stderr
  path = tmp_path / "tiny_hessian.py"
  path.write_text(
    "from experiments.studies import tiny\n\n\n"
    "def get_study():\n"
    "  return {**tiny.get_study(), 'name': 'tiny_hessian', 'workdirs_of': 'tiny',\n"
    "          'analyze': {'args': ['--skip', 'spectrum,landscape,variance,ascent,corrupted',\n"
    "                               '--examples', '128', '--iterations', '5',\n"
    "                               '--trace-samples', '2', '--no-progress-bar'],\n"
    "                      'steps': ['final', 4],\n"
    "                      'metrics': {'step': 'step', 'lambda_1': 'hessian.eigenvalues.0',\n"
    "                                  'trace': 'hessian.trace'}}}\n"
  )
  argv = [sys.executable, "-m", "experiments.study", str(path)] + common
  result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr
  assert result.stdout.count("no checkpoint at step 4") == 2
  runs = read_csv(tmp_path / "res" / "tiny_hessian" / "runs.csv")
  assert [r["analysis@final"] for r in runs] == ["done", "done"]
  assert [r["analysis@step_4"] for r in runs] == ["no checkpoint", "no checkpoint"]
  for r in runs:
    assert r["step@final"] == "8.0"  # 512 images / batch 64: the last checkpoint is step 8.
    assert float(r["lambda_1@final"]) > 0 and float(r["trace@final"]) != 0
    out = tmp_path / "wd" / "tiny" / r["cell_id"] / "analysis" / "tiny_hessian" / "final"
    assert (out / "ANALYZED.json").exists() and (out / "analysis.json").exists()
  md = (tmp_path / "res" / "tiny_hessian" / "summary.md").read_text()
  assert "### final: the final checkpoint" in md and "| sgd | 1 |" in md


PAIRED = {
  "name": "paired",
  "base_config": BASE,
  "fixed": {"num_epochs": 1},
  "grid": {"sparse.sparsity": [0.9, 0.98], "optimizer.name": ["sgd", "sam", "zo_sam"]},
  "seeds": [0, 1, 2],
  "group_by": ["sparse.sparsity", "optimizer.name"],
  "metrics": ["test_accuracy", "test_loss"],
  "paper": {
    "scale": 100,
    "comparable": True,
    "values": {(0.9, "sgd"): 90.0, (0.9, "zo_sam"): 91.0},
  },
}


def test_paired_section_is_the_runs_csv_rows_minus_sgd_and_sam(tmp_path):
  """summary.md's paired differences and paired.csv are runs.csv's rows subtracted seed by seed,
  and ``python -m experiments.stats --write`` re-renders the same section from runs.csv."""
  from experiments import stats

  cells = study.parse_study(PAIRED).expand(str(tmp_path / "wd"))
  finals = {
    (0.9, "sgd"): [0.900, 0.902, 0.904],
    (0.9, "sam"): [0.905, 0.903, 0.910],
    (0.9, "zo_sam"): [0.901, 0.904, None],  # Seed 2 unfinished: pairs on seeds 0 and 1 only.
    (0.98, "sgd"): [0.850, 0.860, 0.855],
    (0.98, "sam"): [0.851, 0.858, 0.860],
    (0.98, "zo_sam"): [0.849, 0.865, 0.870],
  }
  for cell in cells:
    final = finals[(cell.value("sparse.sparsity"), cell.value("optimizer.name"))][cell.seed]
    fabricate(cell, [0.5] if final is None else [final], done=final is not None)
  code, lines = run_fake(tmp_path, PAIRED, "--only-aggregate")
  assert code == 0, lines
  out = tmp_path / "res" / "paired"
  runs = read_csv(out / "runs.csv")
  acc = {
    (r["sparse.sparsity"], r["optimizer.name"], r["seed"]): float(r["test_accuracy"])
    for r in runs
    if r["status"] == "done"
  }

  paired = read_csv(out / "paired.csv")
  assert [(r["sparse.sparsity"], r["arm"], r["reference"]) for r in paired] == [
    ("0.9", "sam", "sgd"),
    ("0.9", "zo_sam", "sgd"),
    ("0.98", "sam", "sgd"),
    ("0.98", "zo_sam", "sgd"),
    ("0.9", "zo_sam", "sam"),
    ("0.98", "zo_sam", "sam"),
  ]
  t2 = 4.302652729749464  # t_{0.975, 2}: 3 paired seeds.
  for r in paired:
    seeds = ["0", "1"] if (r["sparse.sparsity"], r["arm"]) == ("0.9", "zo_sam") else ["0", "1", "2"]
    diffs = [
      acc[(r["sparse.sparsity"], r["arm"], s)] - acc[(r["sparse.sparsity"], r["reference"], s)]
      for s in seeds
    ]
    assert int(r["n"]) == len(seeds)
    assert [float(r[f"diff_s{s}"]) for s in seeds] == pytest.approx(diffs)
    assert float(r["mean"]) == pytest.approx(sum(diffs) / len(diffs))
    if len(seeds) == 3:
      half = t2 * statistics.stdev(diffs) / math.sqrt(3)
      assert float(r["half_width"]) == pytest.approx(half)
      assert float(r["ci_low"]) == pytest.approx(sum(diffs) / 3 - half)
  # ZO-SAM at 90%: the paper's +1 point (comparable: its own difference) against 2 seeds.
  zo = paired[1]
  assert zo["diff_s2"] == "" and float(zo["effect"]) == pytest.approx(0.01)
  half = 12.706204736174696 * statistics.stdev([0.001, 0.002]) / math.sqrt(2)  # t_{0.975, 1}
  assert float(zo["half_width"]) == pytest.approx(half)
  assert zo["verdict"] == "not reproduced"  # Includes 0, short of +1 point.

  md = (out / "summary.md").read_text()
  assert "## Paired differences" in md and "Student t over the n paired seeds" in md
  assert md.index("## Paired differences") < md.index("## Curves")
  sam = [acc[("0.9", "sam", s)] - acc[("0.9", "sgd", s)] for s in "012"]
  mean = sum(sam) / 3
  half = t2 * statistics.stdev(sam) / math.sqrt(3)
  cells_md = [f"{100 * d:+.2f}" for d in sam]
  expected = f"{100 * mean:+.2f} [{100 * (mean - half):+.2f}, {100 * (mean + half):+.2f}]"
  assert f"| 0.9 | sam | {' | '.join(cells_md)} | {expected} | - | " in md
  assert "| 0.9 | zo_sam | +0.10 | +0.20 | - | +0.15 [" in md

  before = md
  assert (
    stats.main([str(out / "runs.csv"), "--study", write_study(tmp_path, PAIRED), "--write"]) == 0
  )
  assert (out / "summary.md").read_text() == before


def test_metric_value_final_and_peak():
  evals = [{"a": 0.5}, {"a": 0.9}, {"b": 1.0}, {"a": 0.7}]
  assert study.metric_value(evals, "a") == 0.7
  assert study.metric_value(evals, "max:a") == 0.9
  assert study.metric_value(evals, "min:a") == 0.5
  assert study.metric_value(evals, "c") is None and study.metric_value([], "max:a") is None
  spec = {"name": "x", "base_config": "experiments/configs/default.py", "grid": {"f": [1]}}
  with pytest.raises(study.StudyError, match="prefix must be 'max:' or 'min:'"):
    study.parse_study({**spec, "metrics": ["p:a"]})
