"""The frontier of a study (``frontier`` key): its validation, and frontier.csv / frontier.png /
the summary's ``## Frontier`` section against runs.csv and paired.csv (cells run
``tests.experiments._fake_main``, whose final test accuracy is the cell's ``fake.acc``)."""

from __future__ import annotations

import csv
import json
import statistics

import pytest

from experiments import stats, study
from tests.experiments.test_study import read_csv, run_fake

# Final test accuracy per (cell group, arm label) and seed 0, 1, 2.
ACC = {
  ("dense", "sgd"): [0.80, 0.81, 0.79],
  ("dense", "sam"): [0.85, 0.87, 0.84],  # +5, +6, +5 points: its interval lies above 0
  ("dense", "zo"): [0.82, 0.80, 0.80],
  ("dense", "extra"): [0.81, 0.81, 0.80],  # no cost: listed, left off the figure
  ("rigl", "sgd"): [0.80, 0.80, 0.80],
  ("rigl", "sam"): [0.83, 0.78, 0.80],  # +3, -2, 0: its interval holds 0, so no fraction
  ("rigl", "zo"): [0.80, 0.81, 0.79],
}
COST = {"sgd": 1.0, "sam": 2.03, "zo": 1.41}


def frontier_study(cost_path: str, **frontier) -> dict:
  return {
    "name": "front",
    "base_config": "experiments/configs/default.py",
    "fixed": {"num_epochs": 1},
    "cells": [
      {"sparse.method": method, "label": arm, "fake.acc": acc, "seed": seed}
      for (method, arm), accs in ACC.items()
      for seed, acc in enumerate(accs)
    ],
    "group_by": ["sparse.method", "label"],
    "metrics": ["test_accuracy"],
    "frontier": {"arm_field": "label", "cost": cost_path, **frontier},
  }


def _write_cost(tmp_path) -> str:
  path = tmp_path / "cost.json"
  path.write_text(json.dumps({"device": "device: test", "rows": [], "cost": COST}))
  return str(path)


def test_frontier_csv_is_paired_csv_and_runs_csv(tmp_path):
  code, _ = run_fake(tmp_path, frontier_study(_write_cost(tmp_path)))
  assert code == 0
  out = tmp_path / "res" / "front"
  runs = read_csv(out / "runs.csv")
  paired = read_csv(out / "paired.csv")
  front = read_csv(out / "frontier.csv")
  assert [(r["sparse.method"], r["arm"]) for r in front] == list(ACC)

  sgd_rows = {
    m: [float(r["test_accuracy"]) for r in runs if r["label"] == "sgd" and r["sparse.method"] == m]
    for m in ("dense", "rigl")
  }
  for r in front:
    method, arm = r["sparse.method"], r["arm"]
    values = [
      float(x["test_accuracy"]) for x in runs if (x["sparse.method"], x["label"]) == (method, arm)
    ]
    assert float(r["test_accuracy_mean"]) == pytest.approx(statistics.fmean(values))
    assert r["cost"] == ("" if arm not in COST else f"{COST[arm]:.12g}")
    if arm == "sgd":
      assert (r["gain"], r["verdict"], r["ci_low"]) == ("0", "reference", "")
      continue
    # The paired comparison against SGD, exactly as paired.csv has it ...
    (p,) = [
      p for p in paired if (p["sparse.method"], p["arm"], p["reference"]) == (method, arm, "sgd")
    ]
    assert (r["gain"], r["ci_low"], r["ci_high"], r["n"], r["verdict"]) == (
      p["mean"],
      p["ci_low"],
      p["ci_high"],
      p["n"],
      p["verdict"],
    )
    # ... and by hand from runs.csv: the seed-by-seed differences, their t-interval.
    diffs = [a - b for a, b in zip(values, sgd_rows[method], strict=True)]
    mean, half = stats.t_interval(diffs)
    assert float(r["gain"]) == pytest.approx(mean)
    assert float(r["ci_low"]) == pytest.approx(mean - half)
    assert float(r["ci_high"]) == pytest.approx(mean + half)

  # The fraction of SAM's gain: only in the dense group, where SAM's interval lies above 0.
  sam_dense = statistics.fmean([0.05, 0.06, 0.05])
  by = {(r["sparse.method"], r["arm"]): r for r in front}
  assert float(by["dense", "sam"]["fraction_of_sam"]) == pytest.approx(1.0)
  zo_gain = statistics.fmean([0.02, -0.01, 0.01])
  assert float(by["dense", "zo"]["fraction_of_sam"]) == pytest.approx(zo_gain / sam_dense)
  assert float(by["dense", "zo"]["sam_gain"]) == pytest.approx(sam_dense)
  assert all(r["fraction_of_sam"] == "" for r in front if r["sparse.method"] == "rigl")

  summary = (out / "summary.md").read_text()
  section = summary[summary.index("## Frontier") :]
  assert summary.index("## Paired differences") < summary.index("## Frontier")
  assert "| dense | zo | 1.41 | +0.67 [" in section
  assert f"| {float(by['dense', 'zo']['fraction_of_sam']):.2f} | inconclusive |" in section
  assert "| dense | sgd | 1.00 | 0 (reference) | 0.00 | reference |" in section
  assert "| dense | extra | - |" in section
  assert "left off the figure, no cost in" in section and "extra" in section
  assert "sparse.method=rigl: no fraction of SAM's gain" in section
  assert (out / "frontier.png").exists()
  with open(out / "frontier.csv") as f:
    header = next(csv.reader(f))
  assert header == [
    "sparse.method",
    "arm",
    "cost",
    "test_accuracy_mean",
    "runs",
    "n",
    "gain",
    "ci_low",
    "ci_high",
    "half_width",
    "verdict",
    "sam_gain",
    "fraction_of_sam",
  ]


def test_a_missing_cost_table_lists_every_arm_without_a_figure(tmp_path):
  code, _ = run_fake(tmp_path, frontier_study(str(tmp_path / "nowhere.json")))
  assert code == 0
  out = tmp_path / "res" / "front"
  front = read_csv(out / "frontier.csv")
  assert len(front) == len(ACC) and all(r["cost"] == "" for r in front)
  assert not (out / "frontier.png").exists()
  summary = (out / "summary.md").read_text()
  assert "nowhere.json` does not exist yet" in summary
  # The study without the key: its stale frontier files go.
  raw = frontier_study("x")
  del raw["frontier"]
  code, _ = run_fake(tmp_path, raw, "--only-aggregate")
  assert code == 0 and not (out / "frontier.csv").exists()


def test_paired_differences_use_the_arm_field():
  # With arm_field "label", SAM is the arm labelled "sam" even where other arms share its
  # optimizer.name (SAM on a sub-batch): the comparisons against SAM exist.
  raw = frontier_study("cost.json")
  parsed = study.parse_study(raw)
  assert stats.study_arm_fields(parsed) == ["label"]
  rows = [
    {
      "sparse.method": c["sparse.method"],
      "label": c["label"],
      "seed": c["seed"],
      "test_accuracy": c["fake.acc"],
      "status": "done",
    }
    for c in raw["cells"]
  ]
  comparisons = stats.compare(rows, parsed.group_by, "test_accuracy", arm_fields=["label"])
  assert {c["reference"] for c in comparisons} == {"sgd", "sam"}


@pytest.mark.parametrize(
  "frontier, expected",
  [
    ("cost.json", "frontier must be a dict with keys cost, arm_field"),
    ({"cost": "c.json", "arms": {}}, "frontier: unknown key(s) arms; valid: cost, arm_field"),
    ({"arm_field": "label"}, "frontier['cost'] (required) must be the path of a cost table"),
    ({"cost": ""}, "frontier['cost'] (required)"),
    (
      {"cost": "c.json", "arm_field": "optimizer.rho"},
      "frontier['arm_field'] must be one of group_by (sparse.method, label), got 'optimizer.rho'",
    ),
    ({"cost": "c.json"}, "frontier needs arms: give frontier['arm_field']"),
  ],
)
def test_bad_frontier_keys_are_refused(frontier, expected):
  raw = frontier_study("c.json")
  raw["frontier"] = frontier
  with pytest.raises(study.StudyError) as info:
    study.parse_study(raw)
  assert expected in str(info.value)


def test_a_frontier_without_an_sgd_arm_is_refused():
  raw = frontier_study("c.json")
  raw["cells"] = [c for c in raw["cells"] if c["label"] != "sgd"]
  with pytest.raises(study.StudyError, match="frontier: no cell has label='sgd'"):
    study.parse_study(raw)


def test_cost_table_problems_are_notes(tmp_path):
  from experiments.runner import frontier

  bad = tmp_path / "bad.json"
  bad.write_text("{not json")
  assert "is unreadable" in frontier.read_cost(str(bad))[2]
  bad.write_text(json.dumps({"rows": []}))
  assert "has no 'cost' mapping" in frontier.read_cost(str(bad))[2]
  bad.write_text(json.dumps({"cost": {"sgd": 1.0, "sam": -1, "zo": "x"}, "device": "d"}))
  cost, device, problem = frontier.read_cost(str(bad))
  assert cost == {"sgd": 1.0} and device == "d" and "sam, zo (left out)" in problem
