"""experiments.workdir_lock: one exclusive holder (or many readers) per workdir, named when
refused, taken over when dead, handed down to a child. No JAX: each test takes well under a
second (the subprocess ones about one)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from experiments import workdir_lock
from tests.experiments.conftest import REPO


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
  workdir = str(tmp_path / "w")
  with workdir_lock.exclusive(workdir, what="experiments.main"):
    # Another open of the file conflicts like another process would (the lock is the file's).
    with pytest.raises(workdir_lock.WorkdirBusy) as e:
      workdir_lock.acquire(workdir, what="experiments.main")
    holder = workdir_lock.holder(workdir)
    assert holder.pid == os.getpid() and holder.host == socket.gethostname()
    assert f"host {socket.gethostname()}, pid {os.getpid()}" in str(e.value)
    assert str(e.value).startswith(f"workdir {workdir} is in use by experiments.main (host ")
    assert workdir_lock.try_acquire(workdir, what="x") is None
    # Readers are refused too: a run is writing.
    with pytest.raises(workdir_lock.WorkdirBusy):
      workdir_lock.acquire(workdir, what="experiments.analyze", shared=True)
  assert workdir_lock.holder(workdir) is None
  with workdir_lock.exclusive(workdir, what="again"):
    assert workdir_lock.holder(workdir).what == "again"


def test_readers_share_and_exclude_a_writer(tmp_path):
  workdir = str(tmp_path / "w")
  os.makedirs(workdir)
  with workdir_lock.shared([workdir], what="a"), workdir_lock.shared([workdir], what="b"):
    assert workdir_lock.holder(workdir) is None  # Readers do not make a cell "running".
    with pytest.raises(workdir_lock.WorkdirBusy, match="being read by experiments.analyze"):
      workdir_lock.acquire(workdir, what="experiments.main")
  workdir_lock.acquire(workdir, what="experiments.main").release()
  # A reader of a folder that does not exist locks nothing (the command then says it is missing).
  with workdir_lock.shared([str(tmp_path / "none")], what="a"):
    assert not (tmp_path / "none").exists()


def test_a_refused_run_leaves_no_folder_and_a_clean_release_an_empty_file(tmp_path):
  workdir = tmp_path / "new"
  with workdir_lock.exclusive(str(workdir), what="experiments.main"):
    assert workdir.is_dir()
  assert not workdir.exists()  # It made the folder and wrote nothing else: removed again.
  with workdir_lock.exclusive(str(workdir), what="experiments.main"):
    (workdir / "config.json").write_text("{}")
  assert sorted(os.listdir(workdir)) == [".lock", "config.json"]
  assert (workdir / ".lock").read_text() == ""  # No stale holder record.


HOLD = textwrap.dedent(
  """
  import sys, time
  from experiments import workdir_lock
  lock = workdir_lock.acquire(sys.argv[1], what=sys.argv[2])
  print("held", flush=True)
  time.sleep(float(sys.argv[3]))
  """
)


def _holder_process(workdir, what="holder", seconds=60.0, env=None, pass_fds=()):
  proc = subprocess.Popen(
    [sys.executable, "-c", HOLD, workdir, what, str(seconds)],
    cwd=REPO,
    stdout=subprocess.PIPE,
    text=True,
    env={**(env or os.environ), "PYTHONPATH": REPO},
    pass_fds=pass_fds,
  )
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_the_lock_of_a_killed_holder_is_taken_over(tmp_path):
  workdir = str(tmp_path / "w")
  proc = _holder_process(workdir)
  holder = workdir_lock.holder(workdir)
  assert holder.pid == proc.pid and holder.what == "holder"
  assert workdir_lock.try_acquire(workdir, what="me") is None
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  # The OS released it; the dead holder's record is still in the file but means nothing now.
  assert workdir_lock.holder(workdir) is None
  with workdir_lock.exclusive(workdir, what="me"):
    assert workdir_lock.holder(workdir).what == "me"


def test_a_lock_handed_down_is_held_while_parent_or_child_lives(tmp_path):
  workdir = str(tmp_path / "w")
  # The child ends first (a run finishing): the parent (the runner) still holds the lock.
  lock = workdir_lock.acquire(workdir, what="runner")
  handed, fds = lock.child()
  child = _holder_process(workdir, "experiments.main", 60.0, {**os.environ, **handed}, fds)
  holder = workdir_lock.holder(workdir)
  assert holder.pid == child.pid and holder.what == "experiments.main, started by runner"
  assert workdir_lock.try_acquire(workdir, what="other") is None
  child.kill()
  child.wait()
  assert workdir_lock.try_acquire(workdir, what="other") is None
  lock.release()
  assert workdir_lock.holder(workdir) is None
  # The parent dies first (a SIGKILLed runner: its descriptor closed, nothing unlocked): the
  # child still holds it, until it ends too.
  lock = workdir_lock.acquire(workdir, what="runner")
  handed, fds = lock.child()
  child = _holder_process(workdir, "experiments.main", 60.0, {**os.environ, **handed}, fds)
  fd, lock.fd = lock.fd, None
  os.close(fd)
  assert workdir_lock.try_acquire(workdir, what="other") is None
  child.kill()
  child.wait()
  assert workdir_lock.holder(workdir) is None


def test_a_handed_fd_for_another_workdir_is_ignored(tmp_path, monkeypatch):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  lock = workdir_lock.acquire(a, what="runner")
  monkeypatch.setenv(workdir_lock.FD_ENV, str(lock.fd))
  with workdir_lock.exclusive(b, what="experiments.main") as other:
    assert not other.adopted
  assert os.environ[workdir_lock.FD_ENV] == str(lock.fd)  # Left for a's process.
  lock.release()
