"""The frontier study F1 and its tuning study, built from a hand-made regime and tuned radii (P0
is not finished, so ``get_study()`` cannot run yet): their arms, and that every cell is a config
the trainer accepts and whose step traces, without training."""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import pytest

from experiments import checks, input_pipeline, train
from experiments import main as main_lib
from experiments.runner import validate
from experiments.studies import f1_frontier, f1_tuning, regime
from tests.experiments.conftest import REPO

REGIME = regime.Regime(
  label_noise=0.4,
  sparse_method="rigl",
  sparsity=0.9,
  rho={"dense": 0.05, "sparse": 0.1},
  gains={},
  fallback=False,
)
TUNED = {"asam": {"dense": 0.5, "sparse": 1.0}, "control": {"dense": 1.5, "sparse": 5.0}}
SPEC = input_pipeline.SPECS["fashion_mnist"]

# The arms with their overrides at SAM's radius r, ASAM's a and the control's c.
EXPECTED = {
  "sgd": {"optimizer.name": "sgd"},
  "sam": {"optimizer.name": "sam", "optimizer.rho": "r"},
  "asam": {"optimizer.name": "sam", "optimizer.adaptive": True, "optimizer.rho": "a"},
  "zo_sam_m1": {
    "optimizer.name": "zo_sam",
    "optimizer.rho": "r",
    "optimizer.zeroth_order.num_directions": 1,
  },
  "zo_sam_m16": {
    "optimizer.name": "zo_sam",
    "optimizer.rho": "r",
    "optimizer.zeroth_order.num_directions": 16,
  },
  "zo_sam_guided": {
    "optimizer.name": "zo_sam",
    "optimizer.rho": "r",
    "optimizer.zeroth_order.num_directions": 1,
    "optimizer.guidance": "previous_gradient",
  },
  "zo_sam_quarter": {
    "optimizer.name": "zo_sam",
    "optimizer.rho": "r",
    "optimizer.zeroth_order.num_directions": 1,
    "optimizer.probe_fraction": 0.25,
  },
  "control": {"optimizer.name": "random_perturbation", "optimizer.rho": "r"},
  "control_tuned": {"optimizer.name": "random_perturbation", "optimizer.rho": "c"},
  "sam_sub4": {"optimizer.name": "sam", "optimizer.rho": "r", "optimizer.probe_fraction": 0.25},
  "sam_sub8": {"optimizer.name": "sam", "optimizer.rho": "r", "optimizer.probe_fraction": 0.125},
  **{
    f"looksam_{name}_a{alpha}": {
      "optimizer.name": "looksam",
      "optimizer.rho": "r",
      "optimizer.looksam.update_every": 5,
      "optimizer.looksam.alpha": alpha,
      "optimizer.probe_fraction": fraction,
    }
    for name, fraction in (("sub4", 0.25), ("sub8", 0.125))
    for alpha in (0.7, 0.1)
  },
  "ssam_f": {
    "optimizer.name": "sparse_sam",
    "optimizer.rho": "r",
    "optimizer.sparse_sam.mask_method": "fisher",
    "optimizer.sparse_sam.sparsity": 0.5,
    "optimizer.sparse_sam.update_every": 100,
  },
  "ssam_d": {
    "optimizer.name": "sparse_sam",
    "optimizer.rho": "r",
    "optimizer.sparse_sam.mask_method": "dynamic",
    "optimizer.sparse_sam.sparsity": 0.5,
    "optimizer.sparse_sam.update_every": 100,
  },
  "esam": {
    "optimizer.name": "esam",
    "optimizer.rho": "r",
    "optimizer.esam.beta": 0.6,
    "optimizer.esam.gamma": 0.5,
  },
  "gsam": {"optimizer.name": "gsam", "optimizer.rho": "r", "optimizer.gsam.alpha": 0.1},
  **{
    f"{name}_a{alpha}": {
      "optimizer.name": name,
      "optimizer.rho": "r",
      "optimizer.looksam.update_every": 5,
      "optimizer.looksam.alpha": alpha,
      **({"optimizer.zeroth_order.num_directions": 1} if name == "zo_looksam" else {}),
    }
    for name in ("looksam", "zo_looksam")
    for alpha in (0.7, 0.1)
  },
}


def _radii(where: str) -> dict[str, float]:
  return {"r": REGIME.rho[where], "a": TUNED["asam"][where], "c": TUNED["control"][where]}


def test_f1_arms_cells_and_settings():
  raw = f1_frontier.study(REGIME, TUNED)
  study = validate.parse_study(raw)  # The runner's validation (keys, cells, frontier).
  assert list(f1_frontier.arms(0.05, 0.5, 1.5)) == list(EXPECTED)
  expected_cells = []
  for where, sparse in (
    ("dense", {"sparse.method": "dense"}),
    ("sparse", {"sparse.method": "rigl", "sparse.sparsity": 0.9}),
  ):
    radii = _radii(where)
    for label, arm in EXPECTED.items():
      values = {k: radii.get(v, v) if isinstance(v, str) else v for k, v in arm.items()}
      expected_cells.append({**sparse, "label": label, **values})
  assert raw["cells"] == expected_cells
  assert len(study.expand("wd")) == 2 * len(EXPECTED) * 3
  assert study.seeds == [0, 1, 2]
  # The test set (no validation split), P0's training examples and noise, 40 epochs.
  fixed = study.fixed
  assert "dataset.validation_size" not in fixed and fixed["dataset.train_subset"] == 10000
  assert (fixed["dataset.label_noise"], fixed["dataset.label_noise_kind"]) == (0.4, "symmetric")
  assert fixed["num_epochs"] == 40 and fixed["batch_size"] == 128
  assert study.metrics[0] == "test_accuracy" and "max:test_accuracy" in study.metrics
  assert study.group_by == ["sparse.method", "sparse.sparsity", "label"]
  assert (study.frontier.arm_field, study.frontier.cost) == ("label", f1_frontier.COST)


def _config(study, cell):
  return main_lib.parse_args(
    [f"--config={study.base_config}", "--workdir=unused", *cell.override_args()]
  ).config


def test_every_f1_cell_is_a_config_the_trainer_accepts_and_its_step_traces():
  study = validate.parse_study(f1_frontier.study(REGIME, TUNED))
  cells = [c for c in study.expand("wd") if c.seed == 0]  # Other seeds: the same overrides.
  batch = {
    "image": jax.ShapeDtypeStruct((128, 28, 28, 1), jnp.float32),
    "label": jax.ShapeDtypeStruct((128,), jnp.int32),
    "clean_label": jax.ShapeDtypeStruct((128,), jnp.int32),
  }
  for cell in cells:
    config = _config(study, cell)
    assert config.label == cell.value("label")
    checks.validate_config(config, device_count=1)
    checks.configure(config, SPEC, 78)  # Builds the optimizer: the library checks its values.
    if cell.value("sparse.method") == "rigl":  # Head, probe fraction and RigL: traced, not run.
      model, tx, state = train.build_abstract(config, SPEC, 78)
      out = jax.eval_shape(train.train_step_fn(config, model, tx), state, batch)
      assert out["params"].keys() == state["params"].keys()


def test_f1_tuning_cells_are_valid_configs():
  raw = f1_tuning.study(REGIME)
  study = validate.parse_study(raw)
  cells = study.expand("wd")
  assert len(cells) == 2 * (3 + 3) and study.seeds == [0]
  assert study.fixed["dataset.validation_size"] == 10000  # Validation, never the test set.
  assert study.metrics[0] == "validation_accuracy"
  rhos = {}
  for cell in cells:
    config = _config(study, cell)
    checks.validate_config(config, device_count=1)
    checks.configure(config, SPEC, 78)
    assert config.dataset.label_noise == 0.4
    arm = "asam" if config.optimizer.adaptive else config.optimizer.name
    rhos.setdefault((arm, config.sparse.method), []).append(config.optimizer.rho)
  assert rhos == {
    ("asam", "dense"): [0.2, 0.5, 1.0],
    ("random_perturbation", "dense"): [0.5, 1.5, 5.0],
    ("asam", "rigl"): [0.2, 0.5, 1.0],
    ("random_perturbation", "rigl"): [0.5, 1.5, 5.0],
  }


def _tuning_rows(values):
  """``{(arm, method, rho): accuracy}`` -> runs.csv-like rows."""
  return [
    {
      "cell_id": f"{arm}-{method}-{rho}",
      "sparse.method": method,
      "optimizer.name": "sam" if arm == "asam" else "random_perturbation",
      "optimizer.adaptive": "true" if arm == "asam" else "",
      "optimizer.rho": str(rho),
      "validation_accuracy": str(acc),
      "status": "done",
    }
    for (arm, method, rho), acc in values.items()
  ]


def test_the_tuning_rule_best_on_validation_ties_to_the_smaller():
  values = {
    ("asam", "dense", 0.2): 0.70,
    ("asam", "dense", 0.5): 0.74,
    ("asam", "dense", 1.0): 0.73,
    ("asam", "rigl", 0.2): 0.80,
    ("asam", "rigl", 0.5): 0.79,
    ("asam", "rigl", 1.0): 0.80,  # tie with 0.2: the smaller wins
    ("control", "dense", 0.5): 0.60,
    ("control", "dense", 1.5): 0.61,
    ("control", "dense", 5.0): 0.65,
    ("control", "rigl", 0.5): 0.70,
    ("control", "rigl", 1.5): 0.72,
    ("control", "rigl", 5.0): 0.50,
  }
  assert f1_tuning.tuned(_tuning_rows(values)) == {
    "asam": {"dense": 0.5, "sparse": 0.2},
    "control": {"dense": 5.0, "sparse": 1.5},
  }
  rows = _tuning_rows(values)
  rows[3]["status"] = "failed"
  with pytest.raises(f1_tuning.TuningNotFinished, match="1 of f1_tuning's 12 cells"):
    f1_tuning.tuned(rows)


def test_the_tuned_values_come_from_the_committed_runs(tmp_path):
  with pytest.raises(FileNotFoundError, match="f1_tuning.py` first"):
    f1_tuning.tuned_values(str(tmp_path / "runs.csv"))


def test_get_study_needs_p0_and_the_tuning(monkeypatch):
  # Today P0 is not finished (or its results are absent): F1 cannot be expanded.
  try:
    f1_frontier.get_study()
  except (regime.P0NotFinished, f1_tuning.TuningNotFinished, FileNotFoundError):
    pass
  monkeypatch.setattr(regime, "chosen", lambda path=None: REGIME)
  monkeypatch.setattr(f1_tuning, "tuned_values", lambda path=None: TUNED)
  assert f1_frontier.get_study() == f1_frontier.study(REGIME, TUNED)
  assert f1_tuning.get_study() == f1_tuning.study(REGIME)


def test_the_evidence_chain_runs_p0_confirm_then_the_tuning_then_f1():
  with open(os.path.join(REPO, "experiments", "studies", "run_evidence.sh")) as f:
    studies = re.findall(r"^study (\w+)", f.read(), re.MULTILINE)
  order = [s for s in studies if s in ("p0_label_noise", "p0_confirm", "f1_tuning", "f1_frontier")]
  assert order == ["p0_label_noise", "p0_label_noise", "p0_confirm", "f1_tuning", "f1_frontier"]
  assert {"t9_channel_regrowth", "t3_convergence"} <= set(studies)
