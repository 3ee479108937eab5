"""Curvature, loss landscapes, gradient noise, ascent quality and robustness of trained runs.

    python -m experiments.analyze WORKDIR [WORKDIR ...] [--step N] [--out DIR] [--examples 4096]
        [--batches 10] [--skip hessian,spectrum,landscape,variance,ascent,corrupted]
        [--iterations 30] [--trace-samples 30] [--seed 0]

For each workdir: rebuild the run's model and state from its ``config.json`` (``train.build``),
restore its final checkpoint (or ``--step``) and measure, at those parameters and on real data
(``zosam_jax.diagnostics``; on the active weights only when the run is sparse, with the mask
from the optimizer state):

* ``hessian``: the top-5 Hessian eigenvalues (Lanczos), lambda_1/lambda_5 and Hutchinson's trace
  with its standard error, of the mean training loss over a fixed subset (the first
  ``--examples`` training examples, evaluation preprocessing, BatchNorm in inference mode);
* ``spectrum``: the eigenvalue density by stochastic Lanczos quadrature (PNG, log density);
* ``landscape``: 1-D and 2-D filter-normalised loss landscapes (line and contour PNGs);
* ``variance``: the variance across ``--batches`` training batches of the update direction of
  the SGD (exact gradient), SAM and ZO-SAM (m=1) heads (BatchNorm in training mode);
* ``ascent``: cosine to the gradient and loss increase of ZO-SAM's ascent direction for
  m = 1, 4, 16 (SAM's exact gradient as the reference), on one training batch;
* ``corrupted``: Fashion-MNIST-C accuracy per corruption x severity and their mean.

Writes ``WORKDIR/analysis/analysis.json`` and PNGs (``--out DIR`` instead, for one workdir).
With several workdirs, comparison figures (and ``comparison.json``) go to ``--out`` (default
``analysis_comparison/``). A bad workdir (missing, no ``config.json``, no checkpoint, no
checkpoint of ``--step``) or bad flag prints one ``error: ...`` line and exits with status 2
before anything is compiled; so does a workdir being trained (``experiments.main`` holds its lock;
for an LTH round folder, its run's), naming the holder. The analysis holds shared locks on its
workdirs until it ends: analyses of one workdir may run side by side, and a training run of it is
refused while one reads it. See ``docs/diagnostics.md`` ("The analysis command").
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

from experiments import cli, workdir_lock
from experiments.analyze.driver import analyze_run
from experiments.analyze.figures import write_comparison
from experiments.analyze.settings import CONV_MODES, NUM_EIGENVALUES, PARTS, Settings
from experiments.analyze.workdirs import (
  check_corruption_flags,
  check_workdir,
  load_data,
  lock_folders,
)
from experiments.cli import UsageError


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # One line, raised to run() (argparse would print usage too).
    raise UsageError(message)


def _positive(name: str, minimum: int = 1):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value

  parse.__name__ = name
  return parse


def parse_args(argv: Sequence[str]) -> tuple[list[str], Settings, str | None]:
  """``(workdirs, settings, out)``."""
  d = Settings()
  p = _Parser(
    prog="python -m experiments.analyze",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("workdirs", nargs="+", metavar="WORKDIR")
  p.add_argument("--step", type=_positive("step", 0), default=None, help="default: the latest")
  p.add_argument("--out", default=None, help="output folder (see above)")
  p.add_argument("--examples", type=_positive("examples"), default=d.examples)
  p.add_argument("--landscape-examples", type=_positive("landscape-examples"),
                 default=d.landscape_examples)  # fmt: skip
  p.add_argument("--landscape-points", type=_positive("landscape-points", 2),
                 default=d.landscape_points, help="1-D grid points")  # fmt: skip
  p.add_argument("--landscape-points-2d", type=_positive("landscape-points-2d", 2),
                 default=d.landscape_points_2d, help="2-D grid points per axis")  # fmt: skip
  p.add_argument("--span", type=float, default=d.span, help="landscape grid: [-span, span]")
  p.add_argument("--batches", type=_positive("batches", 2), default=d.batches)
  p.add_argument("--iterations", type=_positive("iterations", NUM_EIGENVALUES),
                 default=d.iterations, help="Lanczos steps (eigenvalues, SLQ)")  # fmt: skip
  p.add_argument("--trace-samples", type=_positive("trace-samples", 2), default=d.trace_samples)
  p.add_argument("--spectrum-vectors", type=_positive("spectrum-vectors"),
                 default=d.spectrum_vectors, help="SLQ start vectors")  # fmt: skip
  p.add_argument("--ascent-samples", type=_positive("ascent-samples"), default=d.ascent_samples)
  p.add_argument("--ascent-directions", default=",".join(map(str, d.ascent_directions)),
                 help="ZO-SAM direction counts m, comma-separated")  # fmt: skip
  p.add_argument("--chunk-size", type=_positive("chunk-size"), default=d.chunk_size,
                 help="examples per chunk of the subset loss")  # fmt: skip
  p.add_argument("--conv", choices=CONV_MODES, default=d.conv,
                 help="convolutions of the differentiated parts: auto = im2col on CPU")  # fmt: skip
  p.add_argument("--seed", type=_positive("seed", 0), default=d.seed)
  p.add_argument("--skip", default="", help=f"comma-separated parts of: {', '.join(PARTS)}")
  p.add_argument("--corruptions", default="", help="default: the run's config.dataset.corruptions")
  p.add_argument("--severities", default="", help="default: the run's config.dataset.severities")
  p.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True)
  args = p.parse_args(argv)
  skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
  unknown = sorted(skip - set(PARTS))
  if unknown:
    raise UsageError(f"unknown part(s) in --skip: {', '.join(unknown)}; valid: {', '.join(PARTS)}")
  try:
    ascent_directions = tuple(int(m) for m in args.ascent_directions.split(","))
  except ValueError:
    ascent_directions = ()
  if not ascent_directions or min(ascent_directions) < 1:
    raise UsageError(
      f"--ascent-directions must be positive integers, comma-separated; got "
      f"{args.ascent_directions!r}"
    )
  if not (math.isfinite(args.span) and args.span > 0):
    raise UsageError(f"--span must be a finite number > 0, got {args.span}")
  # Every field of Settings is a flag of the same name; two are parsed above.
  flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
  settings = Settings(**{**flags, "ascent_directions": ascent_directions, "skip": skip})
  return list(args.workdirs), settings, args.out


def main(argv: Sequence[str]) -> list[dict[str, Any]]:
  """Checks every workdir and its data first, then analyses each; returns the results."""
  workdirs, settings, out = parse_args(argv)
  # Shared locks for the whole analysis: a workdir being trained is refused (its checkpoints are
  # still being written and the oldest deleted), and no training starts in one being read.
  with workdir_lock.shared(lock_folders(workdirs), what="experiments.analyze"):
    runs = [check_workdir(w, settings.step) for w in workdirs]
    check_corruption_flags(runs, settings)
    for run in runs:
      load_data(run)
    results = []
    for run in runs:
      out_dir = out if (out and len(runs) == 1) else os.path.join(run.workdir, "analysis")
      result = analyze_run(run, settings, out_dir)
      print(f"{run.label}: {os.path.join(out_dir, 'analysis.json')}", flush=True)
      results.append(result)
    if len(runs) > 1:
      comparison_dir = out or "analysis_comparison"
      write_comparison(results, comparison_dir)
      print(f"comparison: {comparison_dir}", flush=True)
  return results


def run(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  # From errors, not input_pipeline: that imports JAX, seconds that --help does not need.
  from experiments.errors import ConfigError, DataMissingError

  argv = sys.argv[1:] if argv is None else list(argv)
  return cli.exit_status(lambda: main(argv), ConfigError, DataMissingError)


if __name__ == "__main__":
  raise SystemExit(run())
