"""What an analysis measures and how much (``Settings``, the flags), and the workdir it reads
(``Run``)."""

from __future__ import annotations

import dataclasses
from typing import Any

PARTS = ("hessian", "spectrum", "landscape", "variance", "ascent", "corrupted")
ASCENT_DIRECTIONS = (1, 4, 16)
NUM_EIGENVALUES = 5
# Which BatchNorm mode each part uses (also written to analysis.json).
BATCH_NORM = {
  "hessian": "inference (the run's running statistics)",
  "spectrum": "inference (the run's running statistics)",
  "landscape": "inference (the run's running statistics)",
  "variance": "training (statistics of each batch, as the trainer's loss; running statistics "
  "not updated)",
  "ascent": "training (statistics of the batch, as the trainer's loss; running statistics not "
  "updated)",
  "corrupted": "inference (the run's running statistics)",
}


# Parts whose compiled loops differentiate the model: on CPU they run convolutions as patches
# times a matrix (see convolution.py); the forward-only parts keep XLA's convolution.
DIFFERENTIATED_PARTS = ("hessian", "spectrum", "variance")
CONV_MODES = ("auto", "lax", "im2col")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to measure and how much (the command-line flags)."""

  step: int | None = None
  examples: int = 4096
  landscape_examples: int = 1024
  landscape_points: int = 21
  landscape_points_2d: int = 11
  span: float = 1.0
  batches: int = 10
  iterations: int = 30
  trace_samples: int = 30
  spectrum_vectors: int = 1
  ascent_samples: int = 8
  ascent_directions: tuple[int, ...] = ASCENT_DIRECTIONS
  chunk_size: int = 1024
  conv: str = "auto"  # auto (im2col in the CPU lowering) | lax | im2col; see convolution.py.
  seed: int = 0
  skip: frozenset[str] = frozenset()
  corruptions: str = ""  # "" = the run's config.dataset.corruptions.
  severities: str = ""  # "" = the run's config.dataset.severities.
  progress_bar: bool = True

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["skip"] = sorted(self.skip)
    out["ascent_directions"] = list(self.ascent_directions)
    return out


@dataclasses.dataclass
class Run:
  """A checked workdir: its config, the checkpoint step to analyse and its data."""

  workdir: str
  config: Any
  step: int
  data_dir: str = ""
  spec: Any = None
  train_split: Any = None
  eval_split: Any = None
  batches: Any = None

  @property
  def label(self) -> str:
    opt, sp = self.config.optimizer, self.config.sparse
    if sp.method == "dense":
      return f"{opt.name} / dense"
    return f"{opt.name} / {sp.method} {sp.sparsity:.0%}"
