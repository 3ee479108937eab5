"""``python -m experiments.analyze``: curvature, landscapes, gradient noise, ascent quality and
robustness of trained runs (the command is documented in ``cli.py``).

One module per job: ``settings`` (the flags), ``workdirs`` (checks before anything compiles),
``restored`` (a run's model and checkpoint), ``losses``, ``convolution`` (im2col where XLA:CPU's
convolution is slow), one module per measured part (``hessian``, ``spectrum``, ``landscape``,
``variance``, ``ascent``, ``corrupted``), ``figures``, ``driver`` (one run's ``analysis.json``)
and ``cli``. The names other code uses are re-exported here.
"""

from experiments.analyze.cli import main, parse_args, run
from experiments.analyze.convolution import (
  conv_cls,
  convolution_note,
  im2col_conv,
  im2col_conv_cls,
  im2col_on_cpu_conv,
)
from experiments.analyze.driver import analyze_run
from experiments.analyze.figures import write_comparison, write_run_figures
from experiments.analyze.losses import batch_loss, chunked_subset, subset_loss
from experiments.analyze.restored import Restored
from experiments.analyze.settings import (
  ASCENT_DIRECTIONS,
  BATCH_NORM,
  CONV_MODES,
  DIFFERENTIATED_PARTS,
  NUM_EIGENVALUES,
  PARTS,
  Run,
  Settings,
)
from experiments.analyze.workdirs import check_workdir, load_data
from experiments.cli import UsageError

__all__ = [
  "ASCENT_DIRECTIONS",
  "BATCH_NORM",
  "CONV_MODES",
  "DIFFERENTIATED_PARTS",
  "NUM_EIGENVALUES",
  "PARTS",
  "Restored",
  "Run",
  "Settings",
  "UsageError",
  "analyze_run",
  "batch_loss",
  "check_workdir",
  "chunked_subset",
  "im2col_conv",
  "im2col_conv_cls",
  "load_data",
  "main",
  "parse_args",
  "conv_cls",
  "convolution_note",
  "im2col_on_cpu_conv",
  "run",
  "subset_loss",
  "write_comparison",
  "write_run_figures",
]
