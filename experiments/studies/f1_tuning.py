"""F1's tuning: ASAM's radius and the random-perturbation control's magnitude, in P0's regime.

The tuning budgets, fixed before any F1 run (docs/studies.md, "The evidence round"): SAM's rho is
P0's (3 trials on validation per sparsity) and is shared by every SAM-family arm of F1; ASAM and
the control each get as many, 3 trials on validation per sparsity (dense and the sparse cell P0's
rule chose), seed 0, at their own scale; no other arm is tuned.

* ASAM (``optimizer.name=sam``, ``optimizer.adaptive=true``): rho in {0.2, 0.5, 1.0} (the ASAM
  paper's CIFAR-10 radius is 0.5; its perturbation is scaled element-wise by ``|w| + 0.01``).
* The control (``random_perturbation``): rho in {0.5, 1.5, 5.0}, about 3%, 10% and 33% of the
  CNN's initial weight norm (14.9), bracketing the relative perturbations of 0.2-0.4 at which a
  random weight perturbation helps (Li et al., TMLR 2024); SAM's 0.05 is 0.3%.

Everything else as P0 (``p0_label_noise.FIXED``: 10k noisy training examples, 40 epochs,
validated on the next 10k clean training examples; the test set is not read). The rule, written
before the runs (:func:`tuned`): per arm and sparsity, the rho whose final validation accuracy
(the last epoch's) is best, ties to the smaller rho; applied once every cell is finished.
"""

from __future__ import annotations

import csv
import os

from experiments.studies import p0_label_noise, protocol, regime

NAME = "f1_tuning"
METRIC = "validation_accuracy"
ASAM_RHOS = [0.2, 0.5, 1.0]
CONTROL_RHOS = [0.5, 1.5, 5.0]
# arm -> (its optimizer overrides, the radii tried)
ARMS = {
  "asam": ({"optimizer.name": "sam", "optimizer.adaptive": True}, ASAM_RHOS),
  "control": ({"optimizer.name": "random_perturbation"}, CONTROL_RHOS),
}


class TuningNotFinished(RuntimeError):
  """F1's tuning has cells that are not done: the rule is applied once, to all of them."""


def sparsity_cells(chosen: regime.Regime) -> dict[str, dict]:
  """``{"dense": overrides, "sparse": overrides}``: the two cells of the regime."""
  return {
    "dense": {"sparse.method": "dense"},
    "sparse": {"sparse.method": chosen.sparse_method, "sparse.sparsity": chosen.sparsity},
  }


def cells(chosen: regime.Regime) -> list[dict]:
  """Every (sparsity, arm, rho) once, at the regime's noise level."""
  return [
    {"dataset.label_noise": chosen.label_noise, **where, **overrides, "optimizer.rho": rho}
    for where in sparsity_cells(chosen).values()
    for overrides, rhos in ARMS.values()
    for rho in rhos
  ]


def study(chosen: regime.Regime) -> dict:
  return {
    "name": NAME,
    "description": (
      "F1's tuning in P0's regime (label noise "
      f"{chosen.label_noise}, dense and {chosen.sparse_method} {chosen.sparsity}): ASAM rho "
      f"{{{', '.join(map(str, ASAM_RHOS))}}} and the random-perturbation control's rho "
      f"{{{', '.join(map(str, CONTROL_RHOS))}}}, 3 trials each per sparsity on held-out "
      "validation (the test set is not read), seed 0; the best final validation accuracy wins, "
      "ties to the smaller rho."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": p0_label_noise.FIXED,
    "cells": cells(chosen),
    "seeds": [0],
    "group_by": [
      "sparse.method",
      "sparse.sparsity",
      "optimizer.name",
      "optimizer.adaptive",
      "optimizer.rho",
    ],
    "metrics": [METRIC, f"max:{METRIC}", "validation_loss"],
  }


def get_study():
  return study(regime.chosen())


def _arm(row: dict) -> str | None:
  if row.get("optimizer.name") == "random_perturbation":
    return "control"
  if row.get("optimizer.name") == "sam" and str(row.get("optimizer.adaptive")).lower() == "true":
    return "asam"
  return None


def tuned(rows: list[dict]) -> dict[str, dict[str, float]]:
  """The rule: ``{arm: {"dense" | "sparse": rho}}``, per arm and sparsity the rho with the best
  final validation accuracy, ties to the smaller. ``rows``: the study's ``runs.csv``; raises
  ``TuningNotFinished`` while a cell is not done (choosing from part of the grid would let the
  order of the runs decide)."""
  unfinished = [r["cell_id"] for r in rows if r.get("status") != "done" or not r.get(METRIC)]
  if unfinished or not rows:
    raise TuningNotFinished(
      f"{len(unfinished)} of {NAME}'s {len(rows)} cells are not finished (first: "
      f"{unfinished[0] if unfinished else 'none ran'}); the radii are chosen once all are"
    )
  scores: dict[str, dict[str, dict[float, float]]] = {}
  for r in rows:
    arm = _arm(r)
    if arm is None:
      continue
    where = "dense" if r["sparse.method"] == "dense" else "sparse"
    scores.setdefault(arm, {}).setdefault(where, {})[float(r["optimizer.rho"])] = float(r[METRIC])
  out = {}
  for arm in ARMS:
    for where in ("dense", "sparse"):
      by_rho = scores.get(arm, {}).get(where)
      if not by_rho:
        raise TuningNotFinished(f"{NAME} has no finished {arm} run in the {where} cell")
      out.setdefault(arm, {})[where] = max(by_rho, key=lambda rho: (by_rho[rho], -rho))  # noqa: B023
  return out


def tuned_values(path: str | None = None) -> dict[str, dict[str, float]]:
  """:func:`tuned` on the study's committed ``runs.csv``."""
  path = path or os.path.join(protocol.RESULTS, NAME, "runs.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} is missing: run `python -m experiments.study experiments/studies/{NAME}.py` "
      "first (ASAM's and the control's radii are tuned there)"
    )
  with open(path) as f:
    return tuned(list(csv.DictReader(f)))
