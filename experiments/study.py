"""Studies: a grid of ``experiments.main`` runs, run resumably and summarised over seeds.

    python -m experiments.study STUDY_CONFIG [--jobs N] [--workdirs ROOT] [--results ROOT]
        [--only-aggregate] [--dry-run] [--cells PATTERN[,PATTERN...]] [--config.FIELD=VALUE ...]
        [--launcher local|slurm|submitit-local] [--detach] [--slurm-partition P]
        [--slurm-time-min M] [--slurm-gpus-per-job G] [--slurm-cpus-per-task C]
        [--slurm-mem-gb GB] [--slurm-extra FLAG=VALUE ...]

A study config is a Python file whose ``get_study()`` returns a dict (see ``STUDY_KEYS`` and
``docs/studies.md``)::

    {"name": "t1", "base_config": "experiments/configs/fashion_mnist_default.py",
     "fixed": {"num_epochs": 10}, "grid": {"optimizer.name": ["sgd", "sam"]}, "seeds": [0, 1]}

The grid (cartesian product) plus the explicit ``cells`` are crossed with ``seeds``. Each cell is
an ordinary workdir of ``experiments.main``, ``WORKDIRS/<name>/<cell id>``, where the cell id is
the cell's values, its seed and a hash of its overrides (``sgd-s0-1a2b3c4d``). The runner knows
no config field: it passes ``--config=<base_config> --config.FIELD=VALUE ...`` and reads
``metrics.jsonl``'s ``eval`` records.

Running: a cell with ``DONE.json`` (written when its process exits 0) is skipped; a cell whose
workdir holds an earlier attempt is continued with ``--resume``; the others start fresh.
``--jobs N`` runs N processes side by side; each one's output goes to ``WORKDIR/log.txt``.
Attempts (wall time, exit status) are recorded in ``WORKDIR/study_cell.json``; the wall time of a
cell is summed over its attempts. A failed cell is reported, the others go on, and the exit
status is 1. Ctrl-C or SIGTERM stops the children (SIGTERM, then SIGKILL) and exits 130/143;
the next invocation resumes them.

Several runners (on one machine, or on machines sharing the workdirs) may run one study at once:
a runner claims a cell by taking its workdir's lock (``experiments.workdir_lock``) and hands that
lock to the ``experiments.main`` it starts, so no cell is trained twice; a cell whose lock is held
is skipped as ``running elsewhere`` (with its holder), and shows as ``running`` in ``--dry-run``
and ``runs.csv`` (``held_by``).

``--launcher slurm`` submits a SLURM job per cell through submitit instead (resources from the
study's ``slurm`` dict or the ``--slurm-*`` flags; preempted or timed-out jobs requeue and resume
from the run's checkpoint; the job ids go to ``study_cell.json``; a cell whose job is still with
SLURM is ``queued`` and not submitted again); the runner waits for the jobs and aggregates, or
with ``--detach`` exits (``--only-aggregate`` later). ``--launcher submitit-local`` runs the same
jobs as local processes (tests, CI). See ``experiments/runner/cluster.py`` and docs/studies.md.

Analysis (``analyze``: True or ``{"args": [...], "steps": [...], "metrics": {...}}``): each
finished cell is analysed once per requested checkpoint step with ``python -m experiments.analyze
WORKDIR [--step N] --out WORKDIR/analysis/<name>/<step_N|final> ARGS``; ``ANALYZED.json`` in
that folder marks it done (with the same ARGS: changed ones run it again). A step without a
checkpoint is skipped with a note. ``workdirs_of: OTHER`` makes the cells those of study OTHER
(same ids and hashes, workdirs ``WORKDIRS/OTHER/<cell id>``): such a study trains nothing, it
only analyses the finished ones.

Shared cells (``shares_cells_with: [OTHER, ...]``): a cell that has no workdir yet and whose
config hash is that of a finished cell in ``WORKDIRS/OTHER/`` becomes a symbolic link to that
workdir instead of training the same run again (``runs.csv``'s ``shared_from``; its wall time is
counted in OTHER's machine time, not here). Both studies must run the same code.

Aggregation (after running, or alone with ``--only-aggregate``) writes ``RESULTS/<name>/``:
``runs.csv``, ``summary.csv``, ``summary.md`` (mean +- sample std over the finished seeds of each
group, ``n=2 of 3`` when some are not finished; with a dict ``analyze``, also the analysis
metrics per step; each arm minus SGD and SAM per seed, ``experiments.stats``), ``paired.csv`` and
``curves_<metric>.png``.

Extra ``--config.FIELD=VALUE`` arguments are passed to every cell but are not part of the cell
id or hash: they are for machine-local settings (``dataset.data_dir``, ``progress_bar``), not
for anything that changes results.

Bad input prints one ``error: ...`` line and exits with status 2 before anything runs.
"""

from __future__ import annotations

# The runner is the package experiments.runner, one job per module; these are its public names,
# for `from experiments import study` (tests, experiments.stats' users) and this command line.
from experiments.runner.cli import parse_args, run, select_cells
from experiments.runner.collect import (
  collect_runs,
  lookup,
  metric_value,
  read_evals,
  time_to_target,
)
from experiments.runner.markdown import render_summary
from experiments.runner.plots import plot_curves
from experiments.runner.pool import (
  AnalyzeFactory,
  CommandFactory,
  Interrupted,
  RunReport,
  analyze_command,
  main_command,
  run_cells,
)
from experiments.runner.report import aggregate
from experiments.runner.spec import (
  ANALYSIS_DIR,
  ANALYZE_KEYS,
  ANALYZE_MODULE,
  FIELD_RE,
  FINAL,
  IDENT_RE,
  NAME_RE,
  PAPER_KEYS,
  REPO,
  STUDY_KEYS,
  AnalysisJob,
  AnalysisSpec,
  Cell,
  Study,
  StudyError,
  analyze_available,
  config_hash,
  format_value,
  step_label,
)
from experiments.runner.state import (
  ANALYZE_LOG_FILE,
  ANALYZE_STATE_FILE,
  ANALYZED_FILE,
  DONE_FILE,
  LOG_FILE,
  STATE_FILE,
  analysis_status,
  cell_status,
  checkpoint_problem,
  finished_by_hash,
  link_shared_cell,
  shared_from,
  shared_source,
)
from experiments.runner.summary import mean_std, summarize
from experiments.runner.validate import load_study, parse_study

__all__ = [
  "ANALYSIS_DIR",
  "ANALYZED_FILE",
  "ANALYZE_KEYS",
  "ANALYZE_LOG_FILE",
  "ANALYZE_MODULE",
  "ANALYZE_STATE_FILE",
  "DONE_FILE",
  "FIELD_RE",
  "FINAL",
  "IDENT_RE",
  "LOG_FILE",
  "NAME_RE",
  "PAPER_KEYS",
  "REPO",
  "STATE_FILE",
  "STUDY_KEYS",
  "AnalysisJob",
  "AnalysisSpec",
  "AnalyzeFactory",
  "Cell",
  "CommandFactory",
  "Interrupted",
  "RunReport",
  "Study",
  "StudyError",
  "aggregate",
  "analysis_status",
  "analyze_available",
  "analyze_command",
  "cell_status",
  "checkpoint_problem",
  "collect_runs",
  "config_hash",
  "finished_by_hash",
  "format_value",
  "link_shared_cell",
  "load_study",
  "lookup",
  "main_command",
  "mean_std",
  "metric_value",
  "parse_args",
  "parse_study",
  "plot_curves",
  "read_evals",
  "render_summary",
  "run",
  "run_cells",
  "select_cells",
  "shared_from",
  "shared_source",
  "step_label",
  "summarize",
  "time_to_target",
]

if __name__ == "__main__":
  raise SystemExit(run())
