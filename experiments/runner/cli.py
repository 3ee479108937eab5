"""The command line of ``python -m experiments.study`` (see ``experiments/study.py``).

Parses the flags, loads and expands the study, then lists the cells (``--dry-run``), or runs
them (with SIGTERM turned into a clean stop; ``--launcher local``: ``pool``, else cluster jobs:
``cluster``) and aggregates, or only aggregates.
"""

from __future__ import annotations

import argparse
import collections
import fnmatch
import importlib.util
import os
import shutil
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from experiments.runner import archive
from experiments.runner.pool import (
  AnalyzeFactory,
  CommandFactory,
  Interrupted,
  RunReport,
  analyze_command,
  in_main_thread,
  main_command,
  print_line,
  run_cells,
)
from experiments.runner.report import aggregate
from experiments.runner.spec import (
  LAUNCHERS,
  SLURM_FLAG_RE,
  SLURM_KEYS,
  STATUSES,
  Cell,
  SlurmResources,
  Study,
  StudyError,
  resolve_config,
  slurm_resources,
)
from experiments.runner.state import (
  analysis_status,
  cell_status,
  checkpoint_problem,
  has_previous_run,
  held_by,
  shared_source,
)
from experiments.runner.validate import load_study


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):
    raise StudyError(message)


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
  parser = _Parser(
    prog="python -m experiments.study",
    description="Run a study (a grid of experiments.main runs) and summarise it.",
    epilog="Extra --config.FIELD=VALUE arguments go to every cell, outside the config hash "
    "(machine-local settings such as dataset.data_dir). See docs/studies.md.",
  )
  parser.add_argument("study", help="study config file (get_study())")
  parser.add_argument("--jobs", type=int, default=1, help="cells run side by side (default 1)")
  parser.add_argument("--workdirs", default="workdirs", help="root of the cells' workdirs")
  parser.add_argument("--results", default=os.path.join("docs", "results"), help="results root")
  parser.add_argument("--only-aggregate", action="store_true", help="aggregate; run nothing")
  parser.add_argument("--dry-run", action="store_true", help="list cells and commands; run nothing")
  parser.add_argument("--cells", default="", help="run only cells whose id matches (globs, a,b)")
  parser.add_argument(
    "--launcher",
    default="local",
    help=f"how cells run: {', '.join(LAUNCHERS)} (default local: subprocesses here; slurm: a "
    "SLURM job per cell through submitit; submitit-local: the same jobs as local processes)",
  )
  parser.add_argument(
    "--detach", action="store_true", help="slurm/submitit-local: submit the jobs and exit"
  )
  metavars = dict(partition="NAME", time_min="MINUTES", gpus_per_job="N", cpus_per_task="N")
  metavars["mem_gb"] = "GB"
  for key, text in SLURM_KEYS.items():
    if key == "extra":
      text = "one more sbatch flag, e.g. account=abc (repeatable; FLAG alone: no value)"
      kwargs = {"action": "append", "default": [], "metavar": "FLAG=VALUE"}
    else:
      kwargs = {"default": None, "metavar": metavars[key]}
    parser.add_argument(_slurm_flag(key), help=f"{text}; overrides the study's 'slurm'", **kwargs)
  args, rest = parser.parse_known_args(argv)
  for item in rest:
    if not item.startswith("--config.") or "=" not in item:
      raise StudyError(f"unrecognised argument {item}; see --help")
  if args.jobs < 1:
    raise StudyError(f"--jobs must be >= 1, got {args.jobs}")
  if args.only_aggregate and args.dry_run:
    raise StudyError("--only-aggregate and --dry-run exclude each other")
  if args.launcher not in LAUNCHERS:
    raise StudyError(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {args.launcher!r}")
  cluster_flags = [
    _slurm_flag(k) for k in SLURM_KEYS if getattr(args, f"slurm_{k}") not in (None, [])
  ] + (["--detach"] if args.detach else [])
  if args.launcher == "local" and cluster_flags:
    raise StudyError(
      f"{cluster_flags[0]} is for --launcher slurm or submitit-local (cluster jobs); the "
      "default --launcher local runs subprocesses here"
    )
  if args.launcher != "local" and args.jobs != 1:
    raise StudyError(f"--jobs is for --launcher local; with {args.launcher} each cell is a job")
  return args, list(rest)


def _slurm_flag(key: str) -> str:
  return "--slurm-" + key.replace("_", "-")


def slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
  """The ``--slurm-*`` values given, as a ``slurm`` dict (``--slurm-extra`` as its ``extra``).

  Raises:
    StudyError: a ``--slurm-extra`` that is not ``FLAG=VALUE`` (or ``FLAG``).
  """
  out: dict[str, Any] = {k: getattr(args, f"slurm_{k}") for k in SLURM_KEYS if k != "extra"}
  out = {k: v for k, v in out.items() if v is not None}
  extra = {}
  for item in args.slurm_extra:
    flag, sep, value = item.partition("=")
    flag = flag.strip().lstrip("-")
    if not SLURM_FLAG_RE.match(flag):
      raise StudyError(
        f"--slurm-extra must be FLAG=VALUE with an sbatch flag name (letters, digits, -_), e.g. "
        f"--slurm-extra account=abc; got {item!r}"
      )
    extra[flag] = value if sep else True
  if extra:
    out["extra"] = extra
  return out


def check_launcher(launcher: str) -> None:
  """Raises StudyError when ``launcher`` cannot submit from here (before anything is claimed)."""
  if importlib.util.find_spec("submitit") is None:
    raise StudyError(f"--launcher {launcher} needs submitit (pip install submitit)")
  missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
  if launcher == "slurm" and missing:
    raise StudyError(
      f"--launcher slurm needs SLURM's {' and '.join(missing)} on PATH (run it on a node that "
      "submits jobs); --launcher submitit-local runs the same jobs on this machine"
    )


def resources_of(study: Study, args: argparse.Namespace) -> SlurmResources:
  """The jobs' resources: the study's ``slurm`` dict, overridden by the ``--slurm-*`` flags."""
  given = slurm_overrides(args)
  slurm_resources(given, _slurm_flag)  # Errors name the flag.
  merged = {**study.slurm, **given}
  merged["extra"] = {**study.slurm.get("extra", {}), **given.get("extra", {})}
  return slurm_resources(merged)


def select_cells(cells: Sequence[Cell], patterns: str) -> list[Cell]:
  if not patterns:
    return list(cells)
  globs = [p.strip() for p in patterns.split(",") if p.strip()]
  chosen = [c for c in cells if any(fnmatch.fnmatchcase(c.cell_id, g) for g in globs)]
  if not chosen:
    raise StudyError(f"--cells {patterns} matches no cell (ids look like {cells[0].cell_id})")
  return chosen


def run(
  argv: Sequence[str] | None = None,
  *,
  command: CommandFactory | None = None,
  analyze: AnalyzeFactory | None = None,
  log: Callable[[str], None] | None = None,
) -> int:
  """Entry point; returns the exit status (0 ok, 1 some cell failed, 2 bad input, 130/143
  interrupted). ``command``/``analyze`` replace the commands run (tests)."""
  argv = sys.argv[1:] if argv is None else list(argv)
  log = log or print_line
  try:
    args, extra = parse_args(argv)
    study = load_study(args.study)
    cells = study.expand(args.workdirs)
    chosen = select_cells(cells, args.cells)
    resources = resources_of(study, args)
    if args.launcher != "local" and not (args.dry_run or args.only_aggregate):
      check_launcher(args.launcher)
  except StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  out_dir = os.path.join(args.results, study.name)

  keeps_archive = not study.workdirs_of
  if args.dry_run:
    base = os.path.abspath(resolve_config(study.base_config) or study.base_config)
    if args.launcher != "local":
      log(f"launcher {args.launcher}: a job per cell ({resources.describe()})")
    for cell in chosen:
      status = cell_status(cell)
      source = shared_source(study, cell) if status == "missing" else None
      log(f"{status:10s} {cell.cell_id}")
      if status == "missing" and keeps_archive and archive.archived(out_dir, cell):
        log(f"           would restore {archive.cell_archive(out_dir, cell)}")
      elif source is not None:
        log(f"           would share {source}")
      elif status in ("running", "queued"):
        log(f"           held by {held_by(cell) or 'another process'}")
      elif status != "done" and study.workdirs_of:
        log(f"           waiting for {study.workdirs_of}")
      elif status != "done":
        resume = os.path.isdir(cell.workdir) and has_previous_run(cell.workdir)
        argv_c = (command or (lambda c, r, e: main_command(c, r, e, base)))(cell, resume, extra)
        log("           " + " ".join(argv_c))
      for job in study.analysis_jobs(cell) if status == "done" else []:
        job_status = analysis_status(job)
        if job_status == "no checkpoint":
          log(f"           analysis {job.label}: {checkpoint_problem(job)}")
        elif job_status != "done":
          log(f"           analyze {job.label}: " + " ".join((analyze or analyze_command)(job)))
    log(f"{len(chosen)} cell(s); results would go to {out_dir}")
    return 0

  # Cells finished on another machine (or before this disk) come back from the results folder.
  restored = archive.restore(out_dir, cells) if keeps_archive else []
  if restored:
    where = os.path.join(out_dir, archive.CELLS_DIR)
    log(f"restored {len(restored)} finished cell(s) from {where}")
  report = RunReport()
  if not args.only_aggregate:
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):
      raise Interrupted(signum)

    main_thread = in_main_thread()
    if main_thread:
      signal.signal(signal.SIGTERM, on_term)
    try:
      where = os.path.join(args.workdirs, study.workdirs_name)
      log(f"study {study.name}: {len(chosen)} cell(s) in {where}")
      if args.launcher == "local":
        report = run_cells(
          study, chosen, jobs=args.jobs, command=command, analyze=analyze, extra=extra, log=log
        )
      else:
        from experiments.runner.cluster import submit_cells

        report = submit_cells(
          study,
          chosen,
          launcher=args.launcher,
          resources=resources,
          command=command,
          analyze=analyze,
          extra=extra,
          log=log,
          detach=args.detach,
        )
    except KeyboardInterrupt as e:
      signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
      log("interrupted: the running cells were stopped; run the same command again to resume")
      return 128 + int(signum)
    finally:
      if main_thread:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)

  result = aggregate(study, cells, out_dir)
  counts = collections.Counter(r["status"] for r in result["rows"])
  log(f"results in {out_dir}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s]))
  if study.analyze is not None and study.analyze.summarized:
    log(
      "analysed: "
      + ", ".join(
        f"{label} {sum(r['_analysis'][label]['status'] == 'done' for r in result['rows'])} "
        f"of {len(result['rows'])}"
        for label in study.analyze.labels
      )
    )
  failed = dict(report.failed)
  if args.only_aggregate and not study.workdirs_of:  # Those are the other study's to report.
    failed = {r["cell_id"]: r["error"] for r in result["rows"] if r["status"] == "failed"}
  for cell_id, error in failed.items():
    log(f"failed: {cell_id}: {error}")
  for name, error in report.analyze_failed.items():
    log(f"analysis failed: {name}: {error}")
  return 1 if failed or report.analyze_failed else 0
