"""End-to-end run of experiments/standalone/zosa/compare.py in its tiny --quick mode (slow:
compiles)."""

import csv
import os

import pytest

from experiments.standalone.zosa import compare as zosa_compare


@pytest.mark.slow
def test_quick_comparison_writes_tables_and_curves_at_equal_budgets(tmp_path):
  out = str(tmp_path / "cmp")
  result = zosa_compare.main(
    [
      "--quick",
      "--no_blackbox",
      "--dims=100",
      "--functions=quadratic",
      "--optimizers=zosa,zo_sgd,mezo",
      f"--out={out}",
    ]
  )
  for name in ("runs.csv", "summary.csv", "summary.md", "curves_queries.png", "curves_seconds.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0
  with open(os.path.join(out, "runs.csv")) as f:
    rows = list(csv.DictReader(f))
  assert {r["optimizer"] for r in rows} == {"zosa", "zo_sgd", "mezo"}
  budget = 360
  for r in rows:  # every optimizer spends the budget, to within one step
    q, per_step = int(r["queries"]), int(r["queries_per_step"])
    assert budget - per_step < q <= budget, r
  assert len(result["summary"]) == 3
