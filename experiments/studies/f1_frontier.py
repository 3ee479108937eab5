"""F1, the frontier: how much of SAM's gain each cheaper ascent keeps, and for what step cost.

In the label-noise regime P0's rule chose (``regime.py``; confirmed with 3 seeds by
``p0_confirm``): its noise level, the dense CNN and its sparse cell (RigL 90% unless the rule fell
back), seeds 0-2, on the TEST set (P0 and the tuning read only held-out validation data). The
training data are P0's: the first 10,000 Fashion-MNIST training examples with the same flipped
labels (drawn from the seed alone), 40 epochs, batch 128, the shared protocol otherwise.

The arms (``ARMS``; each named by the trainer's free field ``label``, which the frontier and the
paired differences read), all at SAM's radius for the cell (P0's best on validation, dense and
sparse) except where a radius of their own is tuned:

* ``sgd``, ``sam``; ``asam`` (ASAM at its own radius, ``f1_tuning``);
* ZO-SAM: ``zo_sam_m1``, ``zo_sam_m16`` (16 random directions), ``zo_sam_guided`` (m = 1, probed
  along the previous step's gradient), ``zo_sam_quarter`` (m = 1, probes on a quarter of the
  batch);
* the random-perturbation control at SAM's radius (``control``) and at its own tuned magnitude
  (``control_tuned``, ``f1_tuning``);
* SAM with its exact ascent on a quarter and an eighth of the batch (``sam_sub4``,
  ``sam_sub8``: about 1.25x and 1.13x SGD's step), and the same with LookSAM's reuse (k = 5;
  ``looksam_sub4_a0.7`` ... ``looksam_sub8_a0.1``: LookSAM whose refresh ascends on the sub-batch,
  at both reuse weights, since alpha decides LookSAM's result at this scale, T3);
* ``ssam_f``, ``ssam_d`` (Sparse SAM, 50% of the perturbation, Fisher and dynamic masks, refreshed
  every 100 steps), ``esam`` (beta 0.6, gamma 0.5), ``gsam`` (alpha 0.1, constant radius);
* LookSAM and ZO-LookSAM (m = 1), k = 5, at alpha 0.7 (the paper's) and 0.1: ``looksam_a0.7``,
  ``looksam_a0.1``, ``zo_looksam_a0.7``, ``zo_looksam_a0.1``.

Tuning budgets (fixed before the runs): SAM's rho is P0's (3 trials on validation per sparsity);
ASAM and the control get 3 trials each per sparsity on validation (``f1_tuning``); no other arm is
tuned, and every SAM-family arm takes SAM's rho. For each arm the summary gives the final test
accuracy (the primary figure) and its peak over epochs (optimistic: the epoch is picked on the
test set); the paired differences its gain over SGD and over SAM with 95% t-intervals and the
verdict rule; the frontier (``frontier.png``, ``## Frontier``) that gain against the step cost
relative to SGD from ``COST`` (written by ``python -m benchmarks.step_cost --study
experiments/studies/f1_frontier.py --where sparse.method=dense --json COST`` on a quiet machine)
and the fraction of SAM's gain it keeps. The study cannot be expanded before P0 and
``f1_tuning`` are finished: ``get_study()`` raises until then; ``study(regime, tuned)`` builds it
from given values.
"""

from __future__ import annotations

from experiments.studies import f1_tuning, p0_label_noise, protocol, regime

NAME = "f1_frontier"
COST = f"docs/results/{NAME}/cost.json"
SEEDS = [0, 1, 2]
LOOKSAM_K = 5
LOOKSAM_ALPHAS = (0.7, 0.1)
SUB_BATCH = {"sub4": 0.25, "sub8": 0.125}

FIXED = {
  **{k: v for k, v in p0_label_noise.FIXED.items() if k != "dataset.validation_size"},
  "dataset.train_subset": 10000,  # P0's training examples, without its validation split.
}


def arms(rho: float, asam_rho: float, control_rho: float) -> dict[str, dict]:
  """``{label: overrides}`` of every arm in a cell whose SAM radius is ``rho`` (ASAM's and the
  control's own radii: ``asam_rho``, ``control_rho``). Every method parameter is set, not left
  to the trainer's defaults."""
  sam = {"optimizer.rho": rho}
  zo = {"optimizer.name": "zo_sam", **sam}

  def looksam(name: str, alpha: float, **more) -> dict:
    return {
      "optimizer.name": name,
      **sam,
      "optimizer.looksam.update_every": LOOKSAM_K,
      "optimizer.looksam.alpha": alpha,
      **more,
    }

  def ssam(mask_method: str) -> dict:
    return {
      "optimizer.name": "sparse_sam",
      **sam,
      "optimizer.sparse_sam.mask_method": mask_method,
      "optimizer.sparse_sam.sparsity": 0.5,
      "optimizer.sparse_sam.update_every": 100,
    }

  out = {
    "sgd": {"optimizer.name": "sgd"},
    "sam": {"optimizer.name": "sam", **sam},
    "asam": {"optimizer.name": "sam", "optimizer.adaptive": True, "optimizer.rho": asam_rho},
    "zo_sam_m1": {**zo, "optimizer.zeroth_order.num_directions": 1},
    "zo_sam_m16": {**zo, "optimizer.zeroth_order.num_directions": 16},
    "zo_sam_guided": {
      **zo,
      "optimizer.zeroth_order.num_directions": 1,
      "optimizer.guidance": "previous_gradient",
    },
    "zo_sam_quarter": {
      **zo,
      "optimizer.zeroth_order.num_directions": 1,
      "optimizer.probe_fraction": 0.25,
    },
    "control": {"optimizer.name": "random_perturbation", **sam},
    "control_tuned": {"optimizer.name": "random_perturbation", "optimizer.rho": control_rho},
  }
  for name, fraction in SUB_BATCH.items():
    out[f"sam_{name}"] = {"optimizer.name": "sam", **sam, "optimizer.probe_fraction": fraction}
  for name, fraction in SUB_BATCH.items():
    for alpha in LOOKSAM_ALPHAS:
      out[f"looksam_{name}_a{alpha}"] = looksam(
        "looksam", alpha, **{"optimizer.probe_fraction": fraction}
      )
  out |= {
    "ssam_f": ssam("fisher"),
    "ssam_d": ssam("dynamic"),
    "esam": {
      "optimizer.name": "esam",
      **sam,
      "optimizer.esam.beta": 0.6,
      "optimizer.esam.gamma": 0.5,
    },
    "gsam": {"optimizer.name": "gsam", **sam, "optimizer.gsam.alpha": 0.1},
  }
  for alpha in LOOKSAM_ALPHAS:
    out[f"looksam_a{alpha}"] = looksam("looksam", alpha)
  for alpha in LOOKSAM_ALPHAS:
    out[f"zo_looksam_a{alpha}"] = looksam(
      "zo_looksam", alpha, **{"optimizer.zeroth_order.num_directions": 1}
    )
  return out


def cells(chosen: regime.Regime, tuned: dict[str, dict[str, float]]) -> list[dict]:
  """Every arm in the dense cell, then in the sparse one (``f1_tuning.sparsity_cells``), with
  that cell's radii: SAM's from P0, ASAM's and the control's from ``tuned``
  (``f1_tuning.tuned``: ``{arm: {"dense" | "sparse": rho}}``)."""
  out = []
  for where, overrides in f1_tuning.sparsity_cells(chosen).items():
    by_label = arms(chosen.rho[where], tuned["asam"][where], tuned["control"][where])
    out += [{**overrides, "label": label, **arm} for label, arm in by_label.items()]
  return out


def study(chosen: regime.Regime, tuned: dict[str, dict[str, float]]) -> dict:
  radii = ", ".join(
    f"{where} SAM {chosen.rho[where]}, ASAM {tuned['asam'][where]}, control "
    f"{tuned['control'][where]}"
    for where in ("dense", "sparse")
  )
  return {
    "name": NAME,
    "description": (
      f"F1, the frontier: {len(arms(0.0, 0.0, 0.0))} arms in P0's regime (label noise "
      f"{chosen.label_noise}, dense and {chosen.sparse_method} {chosen.sparsity}"
      + (", the rule's fallback" if chosen.fallback else "")
      + f"), small CNN, {p0_label_noise.NUM_EPOCHS} epochs on 10k noisy Fashion-MNIST training "
      f"examples, seeds {', '.join(map(str, SEEDS))}, TEST set. Radii: {radii}. Each arm's "
      "gain over SGD and the fraction of SAM's gain it keeps, against its step cost relative to "
      "SGD (## Frontier). Arms and their overrides: experiments/studies/f1_frontier.py."
    ),
    "base_config": protocol.BASE_CONFIG,
    "fixed": {**FIXED, "dataset.label_noise": chosen.label_noise},
    "cells": cells(chosen, tuned),
    "seeds": SEEDS,
    "group_by": ["sparse.method", "sparse.sparsity", "label"],
    # The final epoch's accuracy is the figure; the peak over epochs is shown, labelled optimistic.
    "metrics": ["test_accuracy", "max:test_accuracy", "test_loss"],
    "frontier": {"arm_field": "label", "cost": COST},
  }


def get_study():
  return study(regime.chosen(), f1_tuning.tuned_values())
