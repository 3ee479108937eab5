"""Runs the cells and their analyses as subprocesses, ``jobs`` at a time, and stops them cleanly.

Each child gets its own session (Ctrl-C reaches only the runner, which stops the children
itself), dies with the runner (Linux ``PR_SET_PDEATHSIG``), and writes to its ``log.txt``. On
Ctrl-C, SIGTERM or an error the children get SIGTERM, then SIGKILL after a grace period, and
their attempts are recorded as interrupted: the next invocation resumes them.

Several runners on one study (on one machine, or on machines sharing the workdirs) split its
cells, none trained twice. Before starting a cell the runner takes the workdir's lock
(``experiments.workdir_lock``), without waiting: a cell whose lock is held is ``running
elsewhere`` and skipped (with its holder). Holding the lock, it looks again (another runner may
have finished the cell since this one listed the cells, or a cluster job may be queued for it),
records the attempt and starts ``experiments.main`` with the lock handed down: the child holds
the very same lock, so between the decision and the child's end there is no moment when another
runner, a hand-started run or an analysis could take it. The runner keeps its hold until it has
recorded the outcome (``DONE.json``), so the next runner sees either a held lock or a finished
cell. An analysis is claimed the same way through its output folder's lock (the analysis itself
holds the cell's workdir shared). A killed runner's locks go with it; its children die with it.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from experiments import workdir_lock
from experiments.runner import spec
from experiments.runner.spec import ANALYZE_MODULE, REPO, AnalysisJob, Cell, Study, resolve_config
from experiments.runner.state import (
  ANALYZE_LOG_FILE,
  LOG_FILE,
  analysis_status,
  begin_analysis,
  begin_attempt,
  cell_status,
  checkpoint_problem,
  describe_job,
  end_analysis,
  end_attempt,
  has_previous_run,
  held_by,
  last_error,
  link_shared_cell,
  queued_job,
  shared_from,
)

CommandFactory = Callable[[Cell, bool, Sequence[str]], list[str]]


def main_command(
  cell: Cell, resume: bool, extra: Sequence[str], base_config: str, module: str = "experiments.main"
) -> list[str]:
  """``python -m experiments.main --config=... --workdir=... [--resume] --config.K=V ...``."""
  workdir = os.path.abspath(cell.workdir)
  cmd = [sys.executable, "-m", module, f"--config={base_config}", f"--workdir={workdir}"]
  return cmd + (["--resume"] if resume else []) + cell.override_args() + list(extra)


def analyze_command(job: AnalysisJob, module: str = ANALYZE_MODULE) -> list[str]:
  """``python -m experiments.analyze WORKDIR [--step N] --out OUT ARGS``."""
  cmd = [sys.executable, "-m", module, os.path.abspath(job.cell.workdir)]
  cmd += [] if job.step is None else [f"--step={job.step}"]
  return cmd + [f"--out={os.path.abspath(job.out_dir)}", *job.args]


AnalyzeFactory = Callable[[AnalysisJob], list[str]]


class Interrupted(KeyboardInterrupt):
  """SIGTERM while cells were running (Ctrl-C raises a plain KeyboardInterrupt)."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = signum


@dataclasses.dataclass
class RunReport:
  launched: list[str] = dataclasses.field(default_factory=list)  # "cell_id" or "cell_id (resume)"
  skipped: list[str] = dataclasses.field(default_factory=list)
  failed: dict[str, str] = dataclasses.field(default_factory=dict)  # cell_id -> last error
  waiting: list[str] = dataclasses.field(default_factory=list)  # workdirs_of: not finished there
  analyzed: list[str] = dataclasses.field(default_factory=list)  # "cell_id@label"
  analyze_failed: dict[str, str] = dataclasses.field(default_factory=dict)  # "cell_id@label" ->
  no_checkpoint: dict[str, str] = dataclasses.field(default_factory=dict)  # "cell_id@label" ->
  notes: list[str] = dataclasses.field(default_factory=list)
  # cell_id (or "cell_id@label") -> who has it: another runner, a run, a queued cluster job.
  elsewhere: dict[str, str] = dataclasses.field(default_factory=dict)
  submitted: dict[str, str] = dataclasses.field(default_factory=dict)  # cell_id -> job id


def claim_cell(cell: Cell, what: str) -> tuple[workdir_lock.WorkdirLock | None, str]:
  """``(lock, '')`` when ``cell`` is to be trained now by the caller, who then holds its
  workdir's lock; else ``(None, why)``: ``running elsewhere: HOLDER``, ``queued: JOB`` or
  ``done elsewhere`` (finished since the caller looked)."""
  lock = workdir_lock.try_acquire(cell.workdir, what=what)
  if lock is None:
    return None, f"running elsewhere: {held_by(cell) or 'another process'}"
  status = cell_status(cell, lock_held=True)
  job = queued_job(cell.workdir) if status == "queued" else None
  if status == "done" or job is not None:
    lock.release()
    return None, "done elsewhere" if status == "done" else f"queued: {describe_job(job)}"
  return lock, ""


def claim_analysis(job: AnalysisJob, what: str) -> workdir_lock.WorkdirLock | None:
  """The lock of ``job``'s output folder when its analysis is still to run, else None."""
  lock = workdir_lock.try_acquire(job.out_dir, what=what)
  if lock is not None and analysis_status(job) == "done":
    lock.release()
    return None
  return lock


def run_cells(
  study: Study,
  cells: Sequence[Cell],
  *,
  jobs: int = 1,
  command: CommandFactory | None = None,
  analyze: AnalyzeFactory | None = None,
  extra: Sequence[str] = (),
  cwd: str | None = None,
  log: Callable[[str], None] | None = None,
  poll_s: float = 0.05,
  kill_grace_s: float = 10.0,
) -> RunReport:
  """Runs the cells that are not done, then their analyses, ``jobs`` processes at a time.

  A study with ``workdirs_of`` trains nothing: its unfinished cells are reported as waiting.

  Args:
    command: ``(cell, resume, extra) -> argv`` (default: ``python -m experiments.main ...``).
    analyze: ``AnalysisJob -> argv``, run for each requested step of a finished cell when the
      study has ``analyze`` (default: :func:`analyze_command`; skipped with a note when
      ``experiments.analyze`` is absent).
    extra: ``--config.FIELD=VALUE`` arguments appended to every cell's command.

  Raises:
    Interrupted: on SIGTERM/Ctrl-C, after the children have been stopped.
  """
  if command is None:
    base = resolve_config(study.base_config) or study.base_config
    base = os.path.abspath(base)

    def command(cell, resume, extra):
      return main_command(cell, resume, extra, base)

  log = log or print_line
  report = RunReport()
  do_analyze = study.analyze is not None
  if do_analyze and analyze is None:
    if spec.analyze_available():
      analyze = analyze_command
    else:
      do_analyze = False
      report.notes.append(f"analyze: {ANALYZE_MODULE} not found; analysis skipped")
      log(f"note: {report.notes[-1]}")

  def analyses_to_run(cell: Cell) -> list[AnalysisJob]:
    """The finished cell's analyses not done yet; notes the steps without a checkpoint."""
    todo = []
    for job in study.analysis_jobs(cell) if do_analyze else []:
      status = analysis_status(job)
      if status == "done":
        continue
      problem = checkpoint_problem(job)
      if problem:
        report.no_checkpoint[job.name] = problem
        log(f"note: {cell.cell_id}: {problem}; analysis {job.label} not run")
        continue
      if status == "stale":
        log(f"note: {job.name} was analysed with other args; analysing it again")
      todo.append(job)
    return todo

  pending: collections.deque[tuple[str, Cell, AnalysisJob | None]] = collections.deque()
  for cell in cells:
    status = cell_status(cell)
    if status == "missing" and link_shared_cell(study, cell):  # Never with workdirs_of.
      status = cell_status(cell)
      log(f"shared {cell.cell_id}: the finished run of {shared_from(cell)}")
    if status == "done":
      report.skipped.append(cell.cell_id)
      pending.extend(("analyze", cell, job) for job in analyses_to_run(cell))
    elif study.workdirs_of:
      report.waiting.append(cell.cell_id)
      log(f"waiting for {study.workdirs_of}: {cell.cell_id} ({status})")
    elif status in ("running", "queued"):
      where = "running elsewhere" if status == "running" else "queued"
      note_elsewhere(report, cell.cell_id, f"{where}: {held_by(cell) or 'unknown'}", log)
    else:
      pending.append(("train", cell, None))
  total = sum(kind == "train" for kind, _, _ in pending)
  if study.workdirs_of:
    log(
      f"{len(report.skipped)} cell(s) of {study.workdirs_of} done, {len(report.waiting)} waiting "
      f"for {study.workdirs_of}, {len(pending)} analysis(es) to run"
    )
  elif report.skipped:
    log(f"{len(report.skipped)} cell(s) already done, {total} to run")

  running: dict[subprocess.Popen, tuple[str, Cell, AnalysisJob | None, dict[str, Any], Any, Any]]
  running = {}
  started = 0
  owner = f"experiments.study runner of {study.name}"
  try:
    while pending or running:
      while pending and len(running) < max(1, jobs):
        kind, cell, job = pending.popleft()
        env = child_env(jobs)
        if kind == "train":
          lock, why = claim_cell(cell, owner)
          if lock is None:
            note_elsewhere(report, cell.cell_id, why, log)
            continue
          resume = has_previous_run(cell.workdir)
          argv = command(cell, resume, extra)
          log_path = os.path.join(cell.workdir, LOG_FILE)
          started += 1
          what = f"[{started}/{total}] {cell.cell_id}" + (" (resume)" if resume else "")
          report.launched.append(cell.cell_id + (" (resume)" if resume else ""))
          attempt = begin_attempt(cell, resume)
          handed, fds = lock.child()  # experiments.main takes this very lock over.
          env.update(handed)
        else:
          lock, resume, fds = claim_analysis(job, owner), False, ()
          if lock is None:
            note_elsewhere(report, job.name, "analysed elsewhere", log)
            continue
          argv = analyze(job)
          attempt = begin_analysis(job)
          log_path = os.path.join(job.out_dir, ANALYZE_LOG_FILE)
          what = f"analyze {job.name}"
        try:
          logf = open(log_path, "a")  # noqa: SIM115 - closed when the process ends.
          logf.write(
            f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {kind}"
            f"{' (resume)' if resume else ''}: {' '.join(argv)}\n"
          )
          logf.flush()
          proc = subprocess.Popen(
            argv,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            pass_fds=fds,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children ourselves.
            preexec_fn=die_with_parent,
          )
        except BaseException:
          lock.release()
          raise
        running[proc] = (kind, cell, job, attempt, logf, lock)
        log(f"start {what}")
      time.sleep(poll_s)
      for proc in [p for p in running if p.poll() is not None]:
        kind, cell, job, attempt, logf, lock = running.pop(proc)
        logf.close()
        try:
          if kind == "train":
            end_attempt(cell, attempt, proc.returncode)
          else:
            end_analysis(job, attempt, proc.returncode)
        finally:
          lock.release()  # Only now: the next runner sees the outcome, not a free unfinished cell.
        if kind == "train" and proc.returncode == 0:
          log(f"done  {cell.cell_id} in {attempt['wall_s']:.1f}s")
          pending.extendleft(("analyze", cell, j) for j in reversed(analyses_to_run(cell)))
        elif kind == "train":
          error = last_error(os.path.join(cell.workdir, LOG_FILE))
          report.failed[cell.cell_id] = f"exit {proc.returncode}: {error}"
          log(f"FAILED {cell.cell_id} (exit {proc.returncode}): {error}")
        elif proc.returncode == 0:
          report.analyzed.append(job.name)
          log(f"analysed {job.name} in {attempt['wall_s']:.1f}s")
        else:
          error = last_error(os.path.join(job.out_dir, ANALYZE_LOG_FILE))
          report.analyze_failed[job.name] = f"exit {proc.returncode}: {error}"
          log(f"ANALYZE FAILED {job.name} (exit {proc.returncode}): {error}")
  except BaseException:  # Ctrl-C, SIGTERM, or a bug here: leave no child behind.
    _stop(running, kill_grace_s, log)
    raise
  return report


def note_elsewhere(report: RunReport, name: str, why: str, log: Callable[[str], None]) -> None:
  """Reports a cell (or analysis) this runner leaves: ``why`` from :func:`claim_cell`, or
  ``analysed elsewhere``."""
  if why == "done elsewhere":
    report.skipped.append(name)
    log(f"{why}: {name}")
  elif why == "analysed elsewhere":
    report.elsewhere[name] = why
    log(f"{why}: {name}")
  else:
    report.elsewhere[name] = why.split(": ", 1)[-1]
    log(f"{why.split(': ', 1)[0]}: {name} ({report.elsewhere[name]})")


def child_env(jobs: int) -> dict[str, str]:
  """The environment, with the repository on PYTHONPATH (so ``-m experiments.main`` works from
  any directory) and, with several jobs, JAX's GPU memory preallocation off unless set (else the
  first process takes 75% of an accelerator's memory)."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
  if jobs > 1:
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


def die_with_parent() -> None:
  """In the child, before exec: SIGTERM it when the runner dies, even by SIGKILL (Linux)."""
  if sys.platform.startswith("linux"):
    try:
      ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass


def _stop(running: dict, grace_s: float, log: Callable[[str], None]) -> None:
  """SIGTERM to every child's process group, SIGKILL after ``grace_s``; records the attempts."""
  if in_main_thread():
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # A second Ctrl-C must not cut this short.
  for proc in running:
    _signal_group(proc, signal.SIGTERM)
  deadline = time.time() + grace_s
  for proc in running:
    try:
      proc.wait(timeout=max(0.0, deadline - time.time()))
    except subprocess.TimeoutExpired:
      _signal_group(proc, signal.SIGKILL)
      proc.wait()
  for kind, cell, job, attempt, logf, lock in running.values():
    logf.write("=== interrupted: stopped by the study runner\n")
    logf.close()
    try:
      if kind == "train":
        end_attempt(cell, attempt, None)
        log(f"stopped {cell.cell_id} (resumes next time)")
      else:
        end_analysis(job, attempt, None)
        log(f"stopped analysis {job.name} (runs again next time)")
    finally:
      lock.release()
  running.clear()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
  try:
    os.killpg(proc.pid, sig)
  except (ProcessLookupError, PermissionError):
    pass


def print_line(text: str) -> None:
  """The default ``log``: a line on stdout, flushed (the runner's output is often a log file)."""
  print(text, flush=True)


def in_main_thread() -> bool:
  """Whether signal handlers may be set here (only the main thread can)."""
  return threading.current_thread() is threading.main_thread()
