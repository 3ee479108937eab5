"""P0's decision rule (experiments/studies/regime.py) on hand-made results."""

from __future__ import annotations

import csv

import pytest

from experiments.studies import regime


def _rows(values):
  """``values``: {(noise, method, sparsity, name, rho): accuracy} -> runs.csv-like rows."""
  return [
    {
      "dataset.label_noise": str(noise),
      "sparse.method": method,
      "sparse.sparsity": "" if sparsity is None else str(sparsity),
      "optimizer.name": name,
      "optimizer.rho": "" if rho is None else str(rho),
      "validation_accuracy": str(acc),
      "status": "done",
    }
    for (noise, method, sparsity, name, rho), acc in values.items()
  ]


def _cells(noise, sgd, sam, method="dense", sparsity=None):
  out = {(noise, method, sparsity, "sgd", None): sgd}
  out |= {(noise, method, sparsity, "sam", rho): acc for rho, acc in sam.items()}
  return out


def test_both_gains_at_least_two_points_the_larger_smaller_gain_wins():
  rows = _rows(
    _cells(0.4, 0.64, {0.02: 0.70, 0.05: 0.75, 0.1: 0.72})  # dense gain 0.11 at 0.05
    | _cells(0.4, 0.74, {0.02: 0.77, 0.05: 0.80, 0.1: 0.81}, "rigl", 0.9)  # 0.07 at 0.1
    | _cells(0.2, 0.80, {0.02: 0.81, 0.05: 0.84, 0.1: 0.83})  # 0.04
    | _cells(0.2, 0.82, {0.02: 0.85, 0.05: 0.86, 0.1: 0.84}, "rigl", 0.9)  # 0.04
  )
  chosen = regime.choose(rows)
  assert (chosen.label_noise, chosen.sparse_method, chosen.sparsity) == (0.4, "rigl", 0.9)
  assert chosen.rho == {"dense": 0.05, "sparse": 0.1} and not chosen.fallback
  assert chosen.gains[(0.4, "dense", "")] == pytest.approx(0.11)


def test_a_noise_level_whose_sparse_gain_is_short_does_not_qualify():
  rows = _rows(
    _cells(0.4, 0.64, {0.05: 0.75})
    | _cells(0.4, 0.74, {0.05: 0.755}, "rigl", 0.9)  # 0.015 < 0.02
    | _cells(0.2, 0.80, {0.05: 0.83})
    | _cells(0.2, 0.82, {0.05: 0.845}, "rigl", 0.9)  # both 0.025 at 0.2
  )
  assert regime.choose(rows).label_noise == 0.2


def test_no_qualifying_level_falls_back_to_the_best_sparse_gain():
  rows = _rows(
    _cells(0.4, 0.64, {0.05: 0.75})
    | _cells(0.4, 0.74, {0.05: 0.75}, "rigl", 0.9)  # 0.01
    | _cells(0.4, 0.70, {0.05: 0.715}, "rigl", 0.98)  # 0.015: the largest sparse gain
  )
  chosen = regime.choose(rows)
  assert chosen.fallback and (chosen.sparse_method, chosen.sparsity) == ("rigl", 0.98)


def test_ties_go_to_noise_0_4_and_to_the_smaller_rho():
  rows = _rows(
    _cells(0.4, 0.60, {0.02: 0.65, 0.05: 0.65})
    | _cells(0.4, 0.60, {0.05: 0.65}, "rigl", 0.9)
    | _cells(0.2, 0.60, {0.05: 0.65})
    | _cells(0.2, 0.60, {0.05: 0.65}, "rigl", 0.9)
  )
  chosen = regime.choose(rows)
  assert chosen.label_noise == 0.4 and chosen.rho["dense"] == 0.02


def test_no_regime_is_chosen_from_an_unfinished_p0(tmp_path):
  rows = _rows(_cells(0.4, 0.64, {0.05: 0.73}) | _cells(0.4, 0.74, {0.05: 0.82}, "rigl", 0.9))
  path = tmp_path / "runs.csv"

  def write(rows):
    with open(path, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=["cell_id", *rows[0]])
      writer.writeheader()
      writer.writerows({"cell_id": f"c{i}", **r} for i, r in enumerate(rows))

  write(rows)
  assert regime.chosen(str(path)).label_noise == 0.4
  write(rows + [{**rows[0], "status": "incomplete", "validation_accuracy": "0.7"}])
  with pytest.raises(regime.P0NotFinished, match="1 of P0's 5 cells are not finished"):
    regime.chosen(str(path))
