"""``python -m benchmarks.step_cost --study``: the arms it times and the cost table it writes,
which a study's frontier reads (the timings themselves are not checked here)."""

from __future__ import annotations

import json

import pytest

from benchmarks import step_cost
from experiments.runner import frontier
from experiments.runner.spec import StudyError
from tests.experiments.test_study import write_study

BASE = "experiments/configs/fashion_mnist_default.py"


def _study(tmp_path, frontier_key=None, cells=None) -> str:
  arms = [
    {"label": "sgd", "optimizer.name": "sgd"},
    {"label": "sam", "optimizer.name": "sam"},
    {"label": "sam_sub4", "optimizer.name": "sam", "optimizer.probe_fraction": 0.25},
  ]
  raw = {
    "name": "costs",
    "base_config": BASE,
    "fixed": {"num_epochs": 1, "batch_size": 16},
    "cells": cells or [{"sparse.method": m, **arm} for m in ("dense", "rigl") for arm in arms],
    "seeds": [0, 1],
    "group_by": ["sparse.method", "label"],
    "frontier": frontier_key or {"arm_field": "label", "cost": "cost.json"},
  }
  return write_study(tmp_path, raw)


def test_each_arm_is_timed_on_its_first_cell_or_the_one_where_picks(tmp_path):
  path = _study(tmp_path)
  study, arms, sgd = step_cost.study_arms(path)
  assert sgd == "sgd" and [label for label, _ in arms] == ["sgd", "sam", "sam_sub4"]
  assert all(c.value("sparse.method") == "dense" and c.seed == 0 for _, c in arms)
  _, arms, _ = step_cost.study_arms(path, ["sparse.method=rigl"])
  assert all(c.value("sparse.method") == "rigl" for _, c in arms)
  # The config a cell runs: the base config with the cell's overrides (and machine-local extras).
  config = step_cost.cell_config(study, arms[2][1], ["--config.dataset.source_dir=/x"])
  assert (config.optimizer.name, config.optimizer.probe_fraction) == ("sam", 0.25)
  assert (config.label, config.batch_size, config.sparse.method) == ("sam_sub4", 16, "rigl")
  assert config.dataset.source_dir == "/x"


def test_arms_by_optimizer_fields_when_the_frontier_names_no_field(tmp_path):
  cells = [{"optimizer.name": n} for n in ("sgd", "sam", "zo_sam")]
  path = write_study(
    tmp_path,
    {
      "name": "costs",
      "base_config": BASE,
      "cells": cells,
      "group_by": ["optimizer.name"],
      "frontier": {"cost": "c.json"},
    },
  )
  _, arms, sgd = step_cost.study_arms(path)
  assert sgd == "sgd" and [label for label, _ in arms] == ["sgd", "sam", "zo_sam"]


def test_bad_choices_are_refused(tmp_path):
  path = _study(tmp_path)
  with pytest.raises(StudyError, match="give FIELD=VALUE"):
    step_cost.study_arms(path, ["sparse.method"])
  with pytest.raises(StudyError, match="no cell of costs has sparse.method=mest"):
    step_cost.study_arms(path, ["sparse.method=mest"])
  with pytest.raises(StudyError, match="0 SGD arms among the cells chosen"):
    step_cost.study_arms(path, ["label=sam"])
  other = tmp_path / "other"
  other.mkdir()
  no_frontier = write_study(
    other, {"name": "x", "base_config": BASE, "cells": [{"optimizer.name": "sgd"}]}
  )
  with pytest.raises(StudyError, match="has no 'frontier' key"):
    step_cost.study_arms(no_frontier)


def test_the_cost_table_is_what_the_frontier_reads(tmp_path):
  seconds = {"sgd": 0.020, "sam": 0.041, "sam_sub4": 0.025}
  cost = step_cost.cost_table(seconds, "sgd")
  assert cost == pytest.approx({"sgd": 1.0, "sam": 2.05, "sam_sub4": 1.25})
  path = tmp_path / "cost.json"
  path.write_text(json.dumps({"device": "device: x", "rows": [], "cost": cost}))
  read, device, problem = frontier.read_cost(str(path))
  assert read == pytest.approx(cost) and device == "device: x" and problem is None


def test_command_line_refusals(tmp_path, capsys):
  path = _study(tmp_path)
  for argv, expected in (
    ([path], None),  # (a study path alone is not a flag: refused below without --study)
    (["--study", path, "--only", "zo_sam"], "--only and --probe-fraction do not apply to --study"),
    (["--study", path, "--block", "0"], "--block must be >= 1"),
    (["--study", path, "--bogus"], "unrecognized arguments: --bogus"),
    (["--config.seed=1"], "unrecognized arguments: --config.seed=1"),
  ):
    with pytest.raises(SystemExit) as info:
      step_cost.main(argv)
    assert info.value.code == 2
    if expected:
      assert expected in capsys.readouterr().err


@pytest.mark.slow
def test_one_round_writes_a_cost_table(tmp_path, data_dir, fmnist_subset_dir, capsys):
  cells = [
    {"label": "sgd", "optimizer.name": "sgd", "sparse.method": "dense"},
    {"label": "sam_sub4", "optimizer.name": "sam", "optimizer.probe_fraction": 0.25},
  ]
  path = _study(tmp_path, cells=cells)
  out = tmp_path / "cost.json"
  step_cost.main(
    [
      "--study",
      path,
      "--rounds",
      "1",
      "--block",
      "2",
      "--json",
      str(out),
      f"--config.dataset.data_dir={data_dir}",
      f"--config.dataset.source_dir={fmnist_subset_dir}",
      "--config.dataset.train_subset=64",
      "--config.tensorboard=false",
    ]
  )
  data = json.loads(out.read_text())
  assert data["cost"]["sgd"] == 1.0 and data["cost"]["sam_sub4"] > 0
  assert [r["arm"] for r in data["rows"]] == ["sgd", "sam_sub4"]
  assert frontier.read_cost(str(out))[0] == data["cost"]
