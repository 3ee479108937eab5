"""Label noise on the training split: the regime where SAM's gain is large at small scale.

``dataset.label_noise = f`` flips exactly ``round(f * N)`` of the ``N`` training labels (after
``dataset.validation_size`` is held out: the evaluation split, test or validation, stays clean):

* ``symmetric``: each flipped label becomes one of the other ``K - 1`` classes, uniformly (Foret
  et al. 2021, Table 4, use this kind; "symmetric" there means the same for every class);
* ``pairs``: each flipped label becomes its class's partner in a fixed pairing of visually
  confusable classes (``PAIRS``; Fashion-MNIST only): T-shirt/top and Shirt, Pullover and Coat,
  Sneaker and Ankle boot, Trouser and Dress, Sandal and Bag.

A flipped label never equals the true one. The examples and the new labels are drawn from a
generator seeded with ``(seed, 3)`` alone, so every arm of a seed (SGD, SAM, ...) sees the same
flipped examples and differences between arms are paired. The run writes them to
``WORKDIR/label_noise.json`` (``write_record``).

References:
  Foret et al., 2021, "Sharpness-Aware Minimization for Efficiently Improving Generalization",
  ICLR (Table 4: label noise).
  Han et al., 2018, "Co-teaching: Robust Training of Deep Neural Networks with Extremely Noisy
  Labels", NeurIPS (pair flipping).
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import numpy as np

KINDS = ("symmetric", "pairs")
RECORD_FILE = "label_noise.json"

# Class -> its confusable partner (an involution), per dataset.
PAIRS: dict[str, tuple[int, ...]] = {
  # 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag,
  # 9 Ankle boot.
  "fashion_mnist": (6, 3, 4, 1, 2, 8, 0, 9, 5, 7),
}


class NoisyLabels(NamedTuple):
  """The training labels after flipping, and which examples were flipped (sorted indices)."""

  labels: np.ndarray
  flipped: np.ndarray


def check(fraction: Any, kind: Any, dataset: str) -> str | None:
  """The problem with ``dataset.label_noise``/``label_noise_kind`` values, or ``None``."""
  number = isinstance(fraction, int | float) and not isinstance(fraction, bool)
  if not (number and 0 <= fraction < 1):
    return f"dataset.label_noise must be a fraction in [0, 1) (0: off), got {fraction!r}"
  if kind not in KINDS:
    return f"unknown dataset.label_noise_kind {kind!r}; valid: {', '.join(KINDS)}"
  if kind == "pairs" and dataset not in PAIRS:
    return (
      f"dataset.label_noise_kind='pairs' has class pairs for {', '.join(PAIRS)} only, not "
      f"{dataset!r}; use 'symmetric'"
    )
  return None


def flip_labels(
  labels: np.ndarray, fraction: float, kind: str, num_classes: int, seed: int, dataset: str
) -> NoisyLabels:
  """Flips exactly ``round(fraction * len(labels))`` labels, chosen uniformly (see the module
  docstring); a pure function of its arguments."""
  problem = check(fraction, kind, dataset)
  if problem:
    raise ValueError(problem)
  labels = np.asarray(labels, np.int32)
  rng = np.random.default_rng([seed, 3])
  n = len(labels)
  flipped = np.sort(rng.permutation(n)[: int(round(fraction * n))])
  noisy = labels.copy()
  true = labels[flipped]
  if kind == "symmetric":
    noisy[flipped] = (true + rng.integers(1, num_classes, size=len(flipped))) % num_classes
  else:
    noisy[flipped] = np.asarray(PAIRS[dataset], np.int32)[true]
  return NoisyLabels(noisy, flipped)


def write_record(workdir: str, config: Any, clean: np.ndarray, noisy: NoisyLabels) -> None:
  """``WORKDIR/label_noise.json``: the flipped training examples (indices into the training split
  the run trains on), their true and their given labels."""
  record = {
    "label_noise": config.dataset.label_noise,
    "label_noise_kind": config.dataset.label_noise_kind,
    "seed": config.seed,
    "train_examples": int(len(clean)),
    "flipped": noisy.flipped.tolist(),
    "true_labels": np.asarray(clean)[noisy.flipped].tolist(),
    "given_labels": noisy.labels[noisy.flipped].tolist(),
  }
  tmp = os.path.join(workdir, RECORD_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump(record, f)
  os.replace(tmp, os.path.join(workdir, RECORD_FILE))


def read_record(workdir: str) -> dict[str, Any]:
  """The record :func:`write_record` wrote."""
  with open(os.path.join(workdir, RECORD_FILE)) as f:
    return json.load(f)
