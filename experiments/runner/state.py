"""What a cell's workdir says about it: status, attempts, shared cells, analysis markers.

Every file the runner writes into a workdir is here: ``study_cell.json`` (the attempts, with their
wall time and exit status, and for a cluster job its launcher and job id), ``DONE.json`` (the
cell finished), ``log.txt``, and per analysed checkpoint ``study_analysis.json``,
``analyze_log.txt`` and ``ANALYZED.json``. JSON files are written whole (a temporary file, then a
rename), so a killed runner never leaves half of one. They are written only by the holder of the
workdir's lock (``experiments.workdir_lock``; the analysis files, of the analysis folder's), so
two runners never interleave their updates.

A cell is ``running`` while its workdir is locked (by a run, or a runner or job deciding about
it: here or on another machine) and ``queued`` while a cluster job submitted for it has not
started and its scheduler still has it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from typing import Any

from experiments import workdir as workdir_lib
from experiments import workdir_lock
from experiments.runner.spec import FINAL, REPO, AnalysisJob, Cell, Study, format_value

STATE_FILE = "study_cell.json"
DONE_FILE = "DONE.json"
ANALYZED_FILE = "ANALYZED.json"
LOG_FILE = "log.txt"
ANALYZE_LOG_FILE = "analyze_log.txt"
ANALYZE_STATE_FILE = "study_analysis.json"


def read_json(path: str) -> dict[str, Any] | None:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def write_json(path: str, data: dict[str, Any]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


# The states of a SLURM job (submitit's, from sacct) in which it may still start or run.
LIVE_JOB_STATES = frozenset(
  {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_FED",
    "REQUEUE_HOLD",
    "CONFIGURING",
    "COMPLETING",
    "RESIZING",
    "SIGNALING",
    "STAGE_OUT",
    "SUSPENDED",
  }
)


def read_attempts(workdir: str) -> list[dict[str, Any]]:
  """The recorded attempts; one left open by a killed runner gets its wall time estimated from
  the last write to ``log.txt``; a cluster job that has not started (``started`` None) counts 0
  seconds."""
  state = read_json(os.path.join(workdir, STATE_FILE)) or {}
  attempts = state.get("attempts", [])
  for a in attempts:
    if a.get("wall_s") is None and a.get("started") is None:
      a["wall_s"] = 0.0
      a.setdefault("status", "queued")
    elif a.get("wall_s") is None:
      log = os.path.join(workdir, LOG_FILE)
      end = os.path.getmtime(log) if os.path.exists(log) else a["started"]
      a["wall_s"] = max(0.0, end - a["started"])
      a["status"] = "lost"
  return attempts


def started_attempts(workdir: str) -> list[dict[str, Any]]:
  """The training attempts that ran (not cluster jobs that never started)."""
  return [
    a
    for a in read_attempts(workdir)
    if a.get("kind", "train") == "train" and a.get("started") is not None
  ]


def job_state(attempt: dict[str, Any]) -> str:
  """The scheduler's state of the cluster job of ``attempt`` (``RUNNING``, ``PENDING``, ...;
  ``FINISHED`` or ``UNKNOWN`` when it cannot tell): through submitit for SLURM (sacct), from the
  process for ``submitit-local`` (on its own machine)."""
  job_id = attempt.get("job_id")
  if attempt.get("launcher") == "submitit-local" and job_id:
    if attempt.get("host") != socket.gethostname():
      return "UNKNOWN"
    try:
      os.kill(int(job_id), 0)
    except ProcessLookupError:
      return "FINISHED"
    except (OSError, ValueError):
      return "UNKNOWN"
    return "RUNNING"
  if attempt.get("launcher") == "slurm" and job_id:
    try:
      import submitit

      job = submitit.SlurmJob(folder=attempt["folder"], job_id=str(job_id))
      return str(job.get_info(mode="force").get("State") or "UNKNOWN")  # Not a cached state.
    except Exception:  # No sacct here, or no such job: the scheduler cannot tell.
      return "UNKNOWN"
  return "UNKNOWN"


def queued_job(workdir: str) -> dict[str, Any] | None:
  """The last attempt when it is a cluster job that has not started and whose scheduler still
  has it (an unknown state counts as gone: submitting again is safe, see ``cluster``)."""
  attempts = read_attempts(workdir)
  if not attempts or attempts[-1].get("status") != "queued":
    return None
  state = job_state(attempts[-1]).split()[0]  # "CANCELLED by 0" -> CANCELLED
  return {**attempts[-1], "state": state} if state in LIVE_JOB_STATES else None


def describe_job(attempt: dict[str, Any]) -> str:
  return f"{attempt.get('launcher')} job {attempt.get('job_id')} ({attempt.get('state', '?')})"


def cell_status(cell: Cell, *, lock_held: bool = False) -> str:
  """``done`` | ``running`` (its workdir is locked) | ``queued`` (a cluster job for it waits) |
  ``failed`` (the last attempt exited non-zero) | ``incomplete`` | ``missing``.

  ``lock_held``: the caller holds the workdir's lock (so it is not ``running`` for it)."""
  if os.path.exists(os.path.join(cell.workdir, DONE_FILE)):
    return "done"
  if not os.path.isdir(cell.workdir):
    return "missing"
  if not lock_held and workdir_lock.holder(cell.workdir) is not None:
    return "running"
  if queued_job(cell.workdir) is not None:
    return "queued"
  attempts = [a for a in read_attempts(cell.workdir) if a.get("status") != "queued"]
  if attempts and attempts[-1].get("status") == "failed":
    return "failed"
  return "incomplete"


def held_by(cell: Cell) -> str:
  """Who has a ``running`` or ``queued`` cell (``''`` for the others), for reports."""
  holder = workdir_lock.holder(cell.workdir) if os.path.isdir(cell.workdir) else None
  if holder is not None:
    return holder.describe()
  job = queued_job(cell.workdir) if os.path.isdir(cell.workdir) else None
  return describe_job(job) if job is not None else ""


def finished_by_hash(folder: str) -> dict[str, str]:
  """``{config hash: workdir}`` of the finished cells under a study's workdirs folder."""
  found: dict[str, str] = {}
  for entry in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
    done = read_json(os.path.join(folder, entry, DONE_FILE))
    if done and isinstance(done.get("config_hash"), str):
      found.setdefault(done["config_hash"], os.path.join(folder, entry))
  return found


def shared_source(study: Study, cell: Cell) -> str | None:
  """The finished workdir of a ``shares_cells_with`` study with ``cell``'s config hash, if any."""
  root = os.path.dirname(os.path.dirname(cell.workdir))
  for other in study.shares_cells_with:
    source = finished_by_hash(os.path.join(root, other)).get(cell.config_hash)
    if source is not None:
      return source
  return None


def link_shared_cell(study: Study, cell: Cell) -> str | None:
  """Makes a missing ``cell`` a relative symbolic link to its shared source; returns the source."""
  if os.path.lexists(cell.workdir):
    return None
  source = shared_source(study, cell)
  if source is not None:
    os.makedirs(os.path.dirname(cell.workdir), exist_ok=True)
    os.symlink(os.path.relpath(source, os.path.dirname(cell.workdir)), cell.workdir)
  return source


def shared_from(cell: Cell) -> str:
  """The study a linked cell's run belongs to (``''`` for a cell trained here)."""
  if not os.path.islink(cell.workdir):
    return ""
  return os.path.basename(os.path.dirname(os.path.realpath(cell.workdir)))


def has_previous_run(workdir: str) -> bool:
  return bool(started_attempts(workdir)) or any(
    os.path.exists(os.path.join(workdir, name)) for name in ("config.json", "checkpoints")
  )


def code_version() -> dict[str, Any]:
  """The code the cells run (the runner's checkout; see ``pool.main_command``): the package
  version, the git commit and whether tracked files differ from it (``git`` None outside a
  repository). Read at every attempt, not once: a cell starts a new process, which runs the
  checkout as it is then."""
  import zosam_jax  # Here, not at the top: the runner's --help and --dry-run load no JAX.

  def git(*args: str) -> str | None:
    try:
      out = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
      return None
    return out.stdout.strip() if out.returncode == 0 else None

  commit = git("rev-parse", "HEAD")
  dirty = git("status", "--porcelain", "--untracked-files=no")
  return {
    "zosam_jax": zosam_jax.__version__,
    "git": commit,
    "modified": None if commit is None or dirty is None else bool(dirty),
  }


def _cell_state(cell: Cell) -> dict[str, Any]:
  """``study_cell.json``'s content, open attempts estimated (``read_attempts``)."""
  state = read_json(os.path.join(cell.workdir, STATE_FILE)) or {
    "cell_id": cell.cell_id,
    "config_hash": cell.config_hash,
    "overrides": [f"{k}={format_value(v)}" for k, v in cell.overrides],
  }
  state["attempts"] = read_attempts(cell.workdir)
  return state


def record_submission(cell: Cell, launcher: str, job_id: str, folder: str) -> dict[str, Any]:
  """Records a cluster job submitted for ``cell`` (an attempt that has not started)."""
  attempt = {
    "kind": "train",
    "launcher": launcher,
    "job_id": job_id,
    "folder": os.path.abspath(folder),
    "host": socket.gethostname(),
    "submitted": time.time(),
    "started": None,
    "status": "queued",
    "wall_s": None,
  }
  state = _cell_state(cell)
  state["attempts"].append(attempt)
  state["jobs"] = list(dict.fromkeys([*state.get("jobs", []), job_id]))
  write_json(os.path.join(cell.workdir, STATE_FILE), state)
  return attempt


def begin_attempt(
  cell: Cell, resume: bool, *, launcher: str = "local", job_id: str | None = None
) -> dict[str, Any]:
  """Records an attempt starting now (for a cluster job, the one its submission recorded)."""
  attempt = {
    "kind": "train",
    "started": time.time(),
    "resume": resume,
    "wall_s": None,
    "code": code_version(),
  }
  if launcher != "local":
    attempt.update(launcher=launcher, job_id=job_id, host=socket.gethostname(), pid=os.getpid())
  state = _cell_state(cell)
  attempts = state["attempts"]
  queued = [i for i, a in enumerate(attempts) if a.get("status") == "queued"]
  mine = [i for i in queued if job_id is not None and attempts[i].get("job_id") == job_id]
  for i in queued:  # Jobs that never started (cancelled, lost): not running any more.
    attempts[i]["status"] = "not started"
  if mine:
    submitted = attempts.pop(mine[-1])
    submitted.pop("status")
    attempt = {**submitted, **attempt}
  state["attempts"] = attempts + [attempt]
  write_json(os.path.join(cell.workdir, STATE_FILE), state)
  return attempt


def finish_attempt(path: str, attempt: dict[str, Any], returncode: int | None) -> None:
  """Records how ``attempt`` (the last one of the state file ``path``) ended: its wall time, its
  return code and ``ok`` / ``interrupted`` (no return code) / ``failed``."""
  attempt["wall_s"] = time.time() - attempt["started"]
  attempt["returncode"] = returncode
  attempt["status"] = "ok" if returncode == 0 else "interrupted" if returncode is None else "failed"
  state = read_json(path) or {"attempts": [attempt]}
  state["attempts"] = state.get("attempts", [])[:-1] + [attempt]
  write_json(path, state)


def end_attempt(cell: Cell, attempt: dict[str, Any], returncode: int | None) -> None:
  finish_attempt(os.path.join(cell.workdir, STATE_FILE), attempt, returncode)
  if returncode == 0:
    attempts = started_attempts(cell.workdir)
    write_json(
      os.path.join(cell.workdir, DONE_FILE),
      {
        "cell_id": cell.cell_id,
        "config_hash": cell.config_hash,
        "wall_time_s": sum(a["wall_s"] for a in attempts),
        "attempts": len(attempts),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
      },
    )


def checkpoint_problem(job: AnalysisJob) -> str | None:
  """Why ``job``'s checkpoint cannot be analysed (``no checkpoint at step N``), else None."""
  saved = workdir_lib.checkpoint_steps(job.cell.workdir)
  if job.step is None:
    return None if saved else "no checkpoint"
  if job.step in saved:
    return None
  return f"no checkpoint at step {job.step}"


def analysis_status(job: AnalysisJob) -> str:
  """``done`` | ``stale`` (done with other ``args``; run again) | ``waiting`` (the cell is not
  finished) | ``no checkpoint`` | ``failed`` | ``incomplete`` (interrupted) | ``pending``."""
  marker = read_json(os.path.join(job.out_dir, ANALYZED_FILE))
  if marker is not None:
    return "done" if marker.get("args", []) == list(job.args) else "stale"
  if cell_status(job.cell) != "done":
    return "waiting"
  if checkpoint_problem(job):
    return "no checkpoint"
  state = read_json(os.path.join(job.out_dir, ANALYZE_STATE_FILE)) or {}
  attempts = state.get("attempts", [])
  if not attempts:
    return "pending"
  return "failed" if attempts[-1].get("status") == "failed" else "incomplete"


def begin_analysis(job: AnalysisJob) -> dict[str, Any]:
  os.makedirs(job.out_dir, exist_ok=True)
  attempt = {"kind": "analyze", "started": time.time(), "wall_s": None}
  path = os.path.join(job.out_dir, ANALYZE_STATE_FILE)
  state = read_json(path) or {"attempts": []}
  state["attempts"] = [a for a in state["attempts"] if a.get("wall_s") is not None] + [attempt]
  write_json(path, state)
  return attempt


def end_analysis(job: AnalysisJob, attempt: dict[str, Any], returncode: int | None) -> None:
  """Records the attempt; exit 0 writes ``ANALYZED.json`` (the marker that it is done)."""
  finish_attempt(os.path.join(job.out_dir, ANALYZE_STATE_FILE), attempt, returncode)
  if returncode == 0:
    write_json(
      os.path.join(job.out_dir, ANALYZED_FILE),
      {
        "cell_id": job.cell.cell_id,
        "step": FINAL if job.step is None else job.step,
        "args": list(job.args),
        "wall_s": attempt["wall_s"],
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
      },
    )


def last_error(path: str) -> str:
  """The last ``error:`` line (else the last non-empty line) of a log."""
  try:
    with open(path, errors="replace") as f:
      lines = [line.strip() for line in f if line.strip()]
  except OSError:
    return ""
  errors = [line for line in lines if line.startswith("error:")]
  return (errors or lines or [""])[-1][:300]
