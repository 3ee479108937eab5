"""P0's decision rule as code: the label-noise regime the frontier study runs in.

Reads ``docs/results/p0_label_noise/runs.csv`` (finished runs only) and applies the rule of
``p0_label_noise.py``'s docstring, written before its runs: per noise level and sparsity, SAM's
gain is its best rho's final validation accuracy minus SGD's; the chosen noise level is one at
which both the dense and the RigL 90% gains are at least ``MIN_GAIN`` (the one whose smaller gain
is larger; 0.4 on a tie). If none qualifies, the dense regime goes forward with the sparsity whose
gain is largest (``Regime.fallback`` says so). Both SAM radii (dense, sparse) are those best rhos.
"""

from __future__ import annotations

import csv
import dataclasses
import os

from experiments.studies import protocol

MIN_GAIN = 0.02  # 2 points of validation accuracy.
METRIC = "validation_accuracy"


@dataclasses.dataclass(frozen=True)
class Regime:
  """The chosen noise level, the sparse cell that goes with dense, SAM's radius in each, and the
  gains (SAM's best rho minus SGD) it was chosen on: ``{(noise, method, sparsity): gain}``."""

  label_noise: float
  sparse_method: str
  sparsity: float
  rho: dict[str, float]  # "dense" / "sparse" -> SAM's best rho there
  gains: dict[tuple, float]
  fallback: bool


def _key(row: dict) -> tuple:
  sparsity = row.get("sparse.sparsity") or ""
  return (float(row["dataset.label_noise"]), row["sparse.method"], sparsity and float(sparsity))


class P0NotFinished(RuntimeError):
  """P0 has cells that are not done: the rule is applied once, to all of them."""


def read_runs(path: str | None = None) -> list[dict]:
  """P0's finished runs; raises ``P0NotFinished`` while any of its cells is not done (choosing
  from part of the grid would let the order of the runs pick the regime)."""
  path = path or os.path.join(protocol.RESULTS, "p0_label_noise", "runs.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"{path} is missing: run `python -m experiments.study experiments/studies/"
      "p0_label_noise.py` first (the regime is chosen from its results)"
    )
  with open(path) as f:
    rows = list(csv.DictReader(f))
  unfinished = [r["cell_id"] for r in rows if r.get("status") != "done" or not r.get(METRIC)]
  if unfinished:
    raise P0NotFinished(
      f"{len(unfinished)} of P0's {len(rows)} cells are not finished in {path} "
      f"(first: {unfinished[0]}); the regime is chosen once all are"
    )
  return rows


def gains(rows: list[dict]) -> tuple[dict[tuple, float], dict[tuple, float]]:
  """``(gain, best rho)`` per (noise, method, sparsity) with an SGD run and a SAM run."""
  sgd, sam = {}, {}
  for r in rows:
    value = float(r[METRIC])
    if r["optimizer.name"] == "sgd":
      sgd[_key(r)] = value
    elif r["optimizer.name"] == "sam":
      sam.setdefault(_key(r), {})[float(r["optimizer.rho"])] = value
  out, best = {}, {}
  for key, by_rho in sam.items():
    if key in sgd:
      best[key] = max(by_rho, key=lambda rho: (by_rho[rho], -rho))  # Ties: the smaller rho.
      out[key] = by_rho[best[key]] - sgd[key]
  return out, best


def choose(rows: list[dict]) -> Regime:
  """The regime by the rule (see the module docstring)."""
  gain, best = gains(rows)
  noises = sorted({k[0] for k in gain}, reverse=True)  # 0.4 first: wins ties.
  qualified = []
  for noise in noises:
    dense, sparse = gain.get((noise, "dense", "")), gain.get((noise, "rigl", 0.9))
    if dense is not None and sparse is not None and min(dense, sparse) >= MIN_GAIN:
      qualified.append((min(dense, sparse), noise))
  if qualified:
    noise = max(qualified, key=lambda q: q[0])[1]  # max keeps the first (0.4) on a tie
    sparse_key = (noise, "rigl", 0.9)
    fallback = False
  else:
    sparse_keys = [k for k in gain if k[1] != "dense"]
    if not sparse_keys:
      raise ValueError("P0 has no finished sparse cell with both SGD and SAM")
    sparse_key = max(sparse_keys, key=lambda k: gain[k])
    noise, fallback = sparse_key[0], True
  dense_key = (noise, "dense", "")
  if dense_key not in gain:
    raise ValueError(f"P0 has no finished dense cell with both SGD and SAM at noise {noise}")
  return Regime(
    label_noise=noise,
    sparse_method=sparse_key[1],
    sparsity=sparse_key[2],
    rho={"dense": best[dense_key], "sparse": best[sparse_key]},
    gains=gain,
    fallback=fallback,
  )


def chosen(path: str | None = None) -> Regime:
  """:func:`choose` on P0's committed results."""
  return choose(read_runs(path))
