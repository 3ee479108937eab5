"""Training/test curves of one or several workdirs, as a PNG.

    python -m experiments.plot WORKDIR [WORKDIR ...] [--out curves.png] [--labels a,b]

Panels: training loss against epoch (every logged window), test loss and test accuracy
against epoch (one point per epoch). Each workdir is one line, labelled by its folder name
(or ``--labels``).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from experiments import cli
from experiments.workdir import read_metrics


def plot_workdirs(workdirs: Sequence[str], out: str, labels: Sequence[str] | None = None) -> str:
  """Writes the curves of ``workdirs`` to ``out`` (PNG); returns ``out``."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  labels = list(labels) if labels else [os.path.basename(os.path.normpath(w)) for w in workdirs]
  if len(labels) != len(workdirs):
    raise ValueError(f"{len(labels)} labels for {len(workdirs)} workdirs")
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for workdir, label in zip(workdirs, labels, strict=True):
    records = read_metrics(workdir)
    tr = [r for r in records if r["kind"] == "train"]
    ev = [r for r in records if r["kind"] == "eval"]
    axes[0].plot([r["epoch"] for r in tr], [r["loss"] for r in tr], label=label)
    axes[1].plot([r["epoch"] for r in ev], [r["test_loss"] for r in ev], "o-", label=label)
    axes[2].plot([r["epoch"] for r in ev], [r["test_accuracy"] for r in ev], "o-", label=label)
  for ax, title in zip(axes, ("training loss", "test loss", "test accuracy"), strict=True):
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    ax.legend()
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  fig.savefig(out, dpi=120)
  plt.close(fig)
  return out


def run(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  parser = argparse.ArgumentParser(prog="python -m experiments.plot", description=__doc__)
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--out", default="curves.png")
  parser.add_argument("--labels", default="", help="comma-separated, one per workdir")
  args = parser.parse_args(argv)

  def main():
    for w in args.workdirs:
      if not os.path.exists(os.path.join(w, "metrics.jsonl")):
        raise cli.UsageError(f"{w} has no metrics.jsonl")
    labels = args.labels.split(",") if args.labels else None
    print(plot_workdirs(args.workdirs, args.out, labels))

  return cli.exit_status(main, ValueError)


if __name__ == "__main__":
  raise SystemExit(run())
