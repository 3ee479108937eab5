"""Cells as cluster jobs through submitit: ``--launcher slurm`` (``sbatch``) and ``--launcher
submitit-local`` (submitit's ``LocalExecutor``: the same jobs as local processes; tests and CI).

One job per cell, one per analysis. For each cell to train, the runner claims it as ``pool``
does (the workdir's lock, then a second look: done, or a job already queued for it?), submits a
:class:`CellJob`, records the job in ``study_cell.json`` (an attempt not started yet: launcher,
job id, submitit folder ``WORKDIR/submitit``), and lets the lock go. While the scheduler has the
job, every runner (here or on another machine) sees the cell ``queued`` and leaves it; once it
runs, the job holds the lock and the cell is ``running``.

The job, on its node: takes the workdir's lock, waiting up to ``LOCK_WAIT_S`` (its submitter may
still hold it: ``submitit-local`` starts a job at once), looks again (done: nothing to do), runs
``experiments.main`` with the lock handed down, ``--resume`` when the workdir holds an earlier
attempt, and records the attempt, its exit status and ``DONE.json`` as the local runner does.
A job submitted twice (a runner that could not ask the scheduler treats an unknown state as gone)
is therefore harmless: the second waits for the lock and finds the cell finished, or continues it.

Preemption and time limits: SLURM signals the job ``signal_delay_s`` before the end (submitit
asks for ``USR2``) and submitit calls :meth:`CellJob.checkpoint`, which stops the run, records the
attempt as interrupted and the job as queued again, and hands submitit a fresh job to requeue
(``submitit.helpers.DelayedSubmission``); the requeued job resumes from the run's last checkpoint
(``--resume``). A cell longer than the time limit thus runs as a chain of jobs, up to
``MAX_TIMEOUTS`` time-outs.

Unless ``--detach``, the runner then waits for its jobs (polling submitit), submits the analyses
of the cells that finished, and aggregates as usual; ``--only-aggregate`` does it later. On
Ctrl-C or SIGTERM it stops waiting: SLURM jobs go on (``scancel`` them if need be),
``submitit-local`` ones (its own processes) are cancelled.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from experiments import workdir_lock
from experiments.runner.pool import (
  AnalyzeFactory,
  CommandFactory,
  RunReport,
  analyze_command,
  child_env,
  claim_analysis,
  claim_cell,
  die_with_parent,
  main_command,
  note_elsewhere,
  print_line,
)
from experiments.runner.spec import (
  REPO,
  AnalysisJob,
  Cell,
  SlurmResources,
  Study,
  analyze_available,
  resolve_config,
)
from experiments.runner.state import (
  ANALYZE_LOG_FILE,
  LOG_FILE,
  analysis_status,
  begin_analysis,
  begin_attempt,
  cell_status,
  checkpoint_problem,
  end_analysis,
  end_attempt,
  has_previous_run,
  held_by,
  last_error,
  link_shared_cell,
  record_submission,
  shared_from,
)

SUBMITIT_DIR = "submitit"
LOCK_WAIT_S = 120.0  # How long a starting job waits for its submitter to let go of the lock.
MAX_TIMEOUTS = 20  # Time-outs after which a job is not requeued (submitit's max_num_timeout).
STOP_GRACE_S = 30.0  # SIGTERM to the run, then SIGKILL after this (SLURM's warning is 120 s).
SIGNAL_DELAY_S = 120


def executor(launcher: str, folder: str, resources: SlurmResources, name: str) -> Any:
  """A submitit executor for ``launcher`` (``slurm`` or ``submitit-local``) with
  ``resources``, writing its files (the pickled job, the job's own log) to ``folder``."""
  import submitit

  cluster = "slurm" if launcher == "slurm" else "local"
  ex = submitit.AutoExecutor(
    folder=folder,
    cluster=cluster,
    slurm_max_num_timeout=MAX_TIMEOUTS,
    local_max_num_timeout=MAX_TIMEOUTS,
  )
  ex.update_parameters(**executor_parameters(resources, name))
  return ex


def executor_parameters(resources: SlurmResources, name: str) -> dict[str, Any]:
  """``AutoExecutor.update_parameters``' arguments for ``resources`` (``submitit-local`` uses the
  time limit and the GPUs; SLURM all of them)."""
  params: dict[str, Any] = {
    "name": name[:128],
    "timeout_min": resources.time_min,
    "nodes": 1,
    "tasks_per_node": 1,
    "slurm_signal_delay_s": SIGNAL_DELAY_S,
    # The job's Python imports this package: from this checkout, wherever sbatch starts it.
    "slurm_setup": [f"export PYTHONPATH={REPO}${{PYTHONPATH:+:$PYTHONPATH}}"],
  }
  if resources.gpus_per_job is not None:
    params["gpus_per_node"] = resources.gpus_per_job
  if resources.cpus_per_task is not None:
    params["cpus_per_task"] = resources.cpus_per_task
  if resources.mem_gb is not None:
    params["mem_gb"] = resources.mem_gb
  if resources.partition is not None:
    params["slurm_partition"] = resources.partition
  if resources.extra:
    params["slurm_additional_parameters"] = dict(resources.extra)
  return params


@contextlib.contextmanager
def _repo_on_path() -> Iterator[None]:
  """The repository on PYTHONPATH while submitting: jobs inherit the environment (a local job's
  process, sbatch's default ``--export=ALL``) and must import this package to unpickle."""
  old = os.environ.get("PYTHONPATH")
  os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, old) if p)
  try:
    yield
  finally:
    if old is None:
      os.environ.pop("PYTHONPATH", None)
    else:
      os.environ["PYTHONPATH"] = old


class _Task:
  """What a job runs: one command under a lock, its attempt recorded; requeued on preemption."""

  def _job_id(self) -> str:
    import submitit

    try:
      return str(submitit.JobEnvironment().job_id)
    except RuntimeError:  # Called outside a job (tests): no id.
      return f"pid {os.getpid()}"

  def _run(self, argv: Sequence[str], log_path: str, header: str, lock: Any = None) -> int:
    """Runs ``argv`` to its end, its output appended to ``log_path``; ``lock``: an exclusive
    workdir lock to hand down to it."""
    env = child_env(1)
    fds: tuple[int, ...] = ()
    if lock is not None:
      handed, fds = lock.child()
      env.update(handed)
    with open(log_path, "a") as logf:
      logf.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {header}: {' '.join(argv)}\n")
      logf.flush()
      self._proc = subprocess.Popen(
        list(argv),
        stdout=logf,
        stderr=subprocess.STDOUT,
        env=env,
        pass_fds=fds,
        start_new_session=True,  # The scheduler's signals are for the job; it stops the run.
        preexec_fn=die_with_parent,
      )
      # Polled, not Popen.wait(): that holds a lock that checkpoint(), run by a signal handler
      # in this same thread, would wait for forever.
      while (code := self._proc.poll()) is None:
        time.sleep(0.2)
      return code

  def _stop(self) -> None:
    """SIGTERM to the run, SIGKILL after ``STOP_GRACE_S``; returns once it has ended. Safe in a
    signal handler (it reaps the process itself, see ``_run``)."""
    proc = getattr(self, "_proc", None)
    if proc is None or proc.returncode is not None:
      return
    sig, deadline = signal.SIGTERM, time.monotonic() + STOP_GRACE_S
    with contextlib.suppress(ProcessLookupError, PermissionError):
      os.killpg(proc.pid, sig)
    while True:
      try:
        if os.waitpid(proc.pid, os.WNOHANG)[0]:
          return
      except ChildProcessError:  # Reaped already.
        return
      if sig == signal.SIGTERM and time.monotonic() > deadline:
        sig = signal.SIGKILL
        with contextlib.suppress(ProcessLookupError, PermissionError):
          os.killpg(proc.pid, sig)
      time.sleep(0.1)

  def __getstate__(self) -> dict[str, Any]:  # The running process is this process's own.
    return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


@dataclasses.dataclass
class CellJob(_Task):
  """A cluster job training ``cell``: ``fresh`` or, when the workdir holds an earlier attempt,
  ``resumed`` (the two commands, computed when submitted)."""

  cell: Cell
  fresh: list[str]
  resumed: list[str]
  launcher: str

  def __call__(self) -> dict[str, Any]:
    job_id = self._job_id()
    try:
      lock = workdir_lock.acquire(
        self.cell.workdir,
        what=f"experiments.study {self.launcher} job {job_id}",
        wait_s=LOCK_WAIT_S,
      )
    except workdir_lock.WorkdirBusy as e:
      return {"status": "skipped", "why": str(e)}
    with lock:
      if cell_status(self.cell, lock_held=True) == "done":
        return {"status": "done already"}
      resume = has_previous_run(self.cell.workdir)
      self._attempt = begin_attempt(self.cell, resume, launcher=self.launcher, job_id=job_id)
      self._lock, self._ended = lock, False
      header = f"train{' (resume)' if resume else ''} [{self.launcher} job {job_id}]"
      argv = self.resumed if resume else self.fresh
      try:
        code = self._run(argv, os.path.join(self.cell.workdir, LOG_FILE), header, lock)
      except BaseException:  # Cancelled (SIGINT from submitit-local) or requeued (SystemExit).
        self._stop()
        self._end(None)
        raise
      # Killed by a signal the scheduler sent the whole job (preemption, scancel): not a failure.
      self._end(None if code < 0 else code)
    return {"status": "ok" if code == 0 else "failed", "returncode": code}

  def _end(self, code: int | None) -> None:
    if not self._ended:
      self._ended = True
      end_attempt(self.cell, self._attempt, code)

  def checkpoint(self) -> Any:
    """Preempted or timed out (submitit calls this from its signal handler): stops the run,
    records the attempt as interrupted and the job as queued again, and returns the job to
    requeue; it resumes the run from its last checkpoint."""
    import submitit

    self._stop()
    if getattr(self, "_attempt", None) is not None:
      self._end(None)
      folder = self._attempt.get("folder") or os.path.join(self.cell.workdir, SUBMITIT_DIR)
      record_submission(self.cell, self.launcher, str(self._attempt["job_id"]), folder)
    fresh = CellJob(self.cell, self.fresh, self.resumed, self.launcher)
    return submitit.helpers.DelayedSubmission(fresh)


@dataclasses.dataclass
class AnalysisTask(_Task):
  """A cluster job running ``argv`` (``experiments.analyze``) for ``job``; run again from the
  start when preempted."""

  job: AnalysisJob
  argv: list[str]
  launcher: str

  def __call__(self) -> dict[str, Any]:
    job_id = self._job_id()
    try:
      lock = workdir_lock.acquire(
        self.job.out_dir, what=f"experiments.study {self.launcher} job {job_id}", wait_s=LOCK_WAIT_S
      )
    except workdir_lock.WorkdirBusy as e:
      return {"status": "skipped", "why": str(e)}
    with lock:
      if analysis_status(self.job) == "done":
        return {"status": "done already"}
      attempt = begin_analysis(self.job)
      header = f"analyze [{self.launcher} job {job_id}]"
      try:
        # The analysis holds the cell's workdir shared itself; this job's lock is its folder's.
        code = self._run(self.argv, os.path.join(self.job.out_dir, ANALYZE_LOG_FILE), header)
      except BaseException:
        self._stop()
        end_analysis(self.job, attempt, None)
        raise
      end_analysis(self.job, attempt, None if code < 0 else code)
    return {"status": "ok" if code == 0 else "failed", "returncode": code}

  def checkpoint(self) -> Any:
    import submitit

    self._stop()
    return submitit.helpers.DelayedSubmission(AnalysisTask(self.job, self.argv, self.launcher))


def submit_cells(
  study: Study,
  cells: Sequence[Cell],
  *,
  launcher: str,
  resources: SlurmResources,
  command: CommandFactory | None = None,
  analyze: AnalyzeFactory | None = None,
  extra: Sequence[str] = (),
  log: Callable[[str], None] | None = None,
  detach: bool = False,
  poll_s: float = 1.0,
) -> RunReport:
  """Submits a job per cell to train and per analysis to run (see the module docstring), then,
  unless ``detach``, waits for them, submitting the analyses of the cells that finish.

  Raises:
    Interrupted: on SIGTERM/Ctrl-C while waiting (``submitit-local`` jobs are cancelled first).
  """
  if command is None:
    base = os.path.abspath(resolve_config(study.base_config) or study.base_config)

    def command(cell, resume, extra):
      return main_command(cell, resume, extra, base)

  log = log or print_line
  report = RunReport()
  do_analyze = study.analyze is not None
  if do_analyze and analyze is None:
    if analyze_available():
      analyze = analyze_command
    else:
      do_analyze = False
      report.notes.append("analyze: experiments.analyze not found; analysis skipped")
      log(f"note: {report.notes[-1]}")
  owner = f"experiments.study runner of {study.name} (submitting)"
  jobs: dict[Any, tuple[str, Cell, AnalysisJob | None]] = {}

  def submit(task: _Task, folder: str, name: str) -> Any:
    ex = executor(launcher, folder, resources, name)
    with _repo_on_path():
      return ex.submit(task)

  def submit_analyses(cell: Cell) -> None:
    for job in study.analysis_jobs(cell) if do_analyze else []:
      if analysis_status(job) == "done":
        continue
      problem = checkpoint_problem(job)
      if problem:
        report.no_checkpoint[job.name] = problem
        log(f"note: {cell.cell_id}: {problem}; analysis {job.label} not run")
        continue
      lock = claim_analysis(job, owner)
      if lock is None:
        note_elsewhere(report, job.name, "analysed elsewhere", log)
        continue
      with lock:
        folder = os.path.join(job.out_dir, SUBMITIT_DIR)
        handle = submit(AnalysisTask(job, analyze(job), launcher), folder, job.name)
      jobs[handle] = ("analyze", cell, job)
      log(f"submitted analysis {job.name}: {launcher} job {handle.job_id}")

  for cell in cells:
    status = cell_status(cell)
    if status == "missing" and link_shared_cell(study, cell):
      status = cell_status(cell)
      log(f"shared {cell.cell_id}: the finished run of {shared_from(cell)}")
    if status == "done":
      report.skipped.append(cell.cell_id)
      submit_analyses(cell)
      continue
    if study.workdirs_of:
      report.waiting.append(cell.cell_id)
      log(f"waiting for {study.workdirs_of}: {cell.cell_id} ({status})")
      continue
    lock, why = claim_cell(cell, owner)
    if lock is None:
      note_elsewhere(report, cell.cell_id, why, log)
      continue
    with lock:
      task = CellJob(cell, command(cell, False, extra), command(cell, True, extra), launcher)
      folder = os.path.join(cell.workdir, SUBMITIT_DIR)
      handle = submit(task, folder, f"{study.name}:{cell.cell_id}")
      record_submission(cell, launcher, str(handle.job_id), folder)
    jobs[handle] = ("train", cell, None)
    report.submitted[cell.cell_id] = str(handle.job_id)
    report.launched.append(cell.cell_id)
    log(f"submitted {cell.cell_id}: {launcher} job {handle.job_id}")

  if not study.workdirs_of:
    done = sum(c.cell_id in report.skipped for c in cells)
    log(f"{done} cell(s) already done, {len(report.submitted)} submitted")
  if detach or not jobs:
    if jobs:
      log(
        f"{len(jobs)} job(s) submitted; aggregate with --only-aggregate when they have ended "
        "(--dry-run shows which are queued or running)"
      )
    return report
  try:
    while jobs:
      time.sleep(poll_s)
      for handle in [h for h in jobs if h.done()]:
        kind, cell, job = jobs.pop(handle)
        outcome = _outcome(handle)
        if kind == "train":
          status = cell_status(cell)
          if status == "done":
            log(f"done  {cell.cell_id} ({launcher} job {handle.job_id})")
            submit_analyses(cell)
          elif status == "failed":
            error = last_error(os.path.join(cell.workdir, LOG_FILE))
            report.failed[cell.cell_id] = f"{outcome}: {error}"
            log(f"FAILED {cell.cell_id} ({launcher} job {handle.job_id}, {outcome}): {error}")
          elif status in ("running", "queued"):
            report.elsewhere[cell.cell_id] = held_by(cell)
            log(f"{status}: {cell.cell_id} ({held_by(cell)}; job {handle.job_id}: {outcome})")
          else:
            log(f"incomplete {cell.cell_id} ({launcher} job {handle.job_id}: {outcome})")
        elif analysis_status(job) == "done":
          report.analyzed.append(job.name)
          log(f"analysed {job.name} ({launcher} job {handle.job_id})")
        else:
          error = last_error(os.path.join(job.out_dir, ANALYZE_LOG_FILE))
          report.analyze_failed[job.name] = f"{outcome}: {error}"
          log(f"ANALYZE FAILED {job.name} ({launcher} job {handle.job_id}, {outcome}): {error}")
  except BaseException:  # Ctrl-C, SIGTERM: stop waiting.
    ids = " ".join(str(h.job_id) for h in jobs)
    if launcher == "submitit-local":
      for handle in jobs:
        handle.cancel(check=False)
      log(f"cancelled the local job(s) {ids}; run the same command again to resume")
    else:
      log(f"the SLURM job(s) {ids} go on (scancel {ids} to stop them); --only-aggregate later")
    raise
  return report


def _outcome(handle: Any) -> str:
  """How a finished job ended, in words (its result, or submitit's error)."""
  try:
    result = handle.result()
  except Exception as e:  # submitit's FailedJobError / UncompletedJobError, or the job's own.
    lines = [line for line in str(e).splitlines() if line.strip()]
    return f"job error: {lines[-1] if lines else type(e).__name__}"[:300]
  if not isinstance(result, dict):
    return str(result)
  if "returncode" in result:
    return f"exit {result['returncode']}"
  return result.get("why") or result.get("status", "?")
