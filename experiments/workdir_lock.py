"""One process at a time in a workdir: an OS file lock on ``WORKDIR/.lock``.

``experiments.main`` holds the lock exclusively for its whole run; ``experiments.analyze`` holds
it shared (analyses of one workdir may run together, never beside its training); the study
runner takes it exclusively before it decides to train a cell and hands it down to the
``experiments.main`` it starts (:meth:`WorkdirLock.child`), so that nothing can slip in between
the decision and the start. A second holder is refused with :class:`WorkdirBusy`, whose message
names the first (the host, pid and command it wrote into the lock file), and the commands turn
it into one ``error:`` line and exit status 2.

The lock is ``fcntl.flock`` on the file ``.lock``:

* The OS releases it when its holder dies, even by SIGKILL, so a dead holder's lock is simply
  taken over; the file's text (the holder's record) is only read while the lock is held, so a
  stale record misleads no one. A clean release empties the file.
* It belongs to the open file, not to the process: a second open in the same process conflicts
  like another process would (tests rely on it), and a child that inherits the descriptor holds
  the same lock. Handing it down is exactly that: the child finds the descriptor's number in
  ``EXPERIMENTS_WORKDIR_LOCK_FD``, checks that it is this workdir's lock file and takes it over
  (:func:`acquire`); the lock is then held while either of the two lives. The child never
  unlocks it (that would release the parent's hold too): it only closes its descriptor.
* Across machines it needs a filesystem whose ``flock`` reaches the server: NFSv4, Lustre
  mounted with ``-o flock``, GPFS, BeeGFS. On one that keeps locks per machine (Lustre's
  ``localflock``, NFS with ``local_lock=flock``) two machines do not see each other's locks.

A workdir the lock had to create (the lock comes before the config is checked) is removed again
on release when nothing but the lock file was written into it, so a refused run leaves no
folder behind; an acquirer that opened the file before it was removed notices (the path no
longer names its file) and opens it again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator

from experiments.errors import ConfigError

LOCK_FILE = ".lock"
FD_ENV = "EXPERIMENTS_WORKDIR_LOCK_FD"
# A refused try is repeated this many times, this far apart, before giving up: another process
# may be testing the lock (holder()) at that very moment, which would otherwise look like a hold.
_RETRIES, _RETRY_S = 3, 0.02


@dataclasses.dataclass(frozen=True)
class Holder:
  """Who holds a workdir's lock, as its record says (``pid`` None: it wrote none)."""

  what: str
  host: str = "?"
  pid: int | None = None
  since: str = "?"

  def describe(self) -> str:
    if self.pid is None:
      return self.what
    return f"{self.what} (host {self.host}, pid {self.pid}, since {self.since})"


class WorkdirBusy(ConfigError):
  """The workdir's lock is held by another process (``holder``; None: by readers)."""

  def __init__(self, workdir: str, holder: Holder | None):
    self.workdir, self.holder = workdir, holder
    if holder is None:
      text = "being read by experiments.analyze (a shared lock)"
    else:
      text = f"in use by {holder.describe()}"
    super().__init__(f"workdir {workdir} is {text}; run again when that has ended (or stop it)")


def lock_path(workdir: str) -> str:
  return os.path.join(workdir, LOCK_FILE)


def _record(what: str) -> str:
  return json.dumps(
    {
      "what": what,
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
  )


def _read_holder(fd: int) -> Holder:
  try:
    data = json.loads(os.pread(fd, 4096, 0).decode(errors="replace") or "null")
    return Holder(str(data["what"]), str(data["host"]), int(data["pid"]), str(data["since"]))
  except (OSError, ValueError, TypeError, KeyError):
    return Holder("another process (it left no record in the lock file)")


def _write(fd: int, text: str) -> None:
  os.ftruncate(fd, 0)
  os.pwrite(fd, text.encode(), 0)


def _same_file(fd: int, path: str) -> bool:
  try:
    a, b = os.fstat(fd), os.stat(path)
  except OSError:
    return False
  return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


class WorkdirLock:
  """A held lock (:func:`acquire`); a context manager that releases it."""

  def __init__(
    self, workdir: str, fd: int | None, *, shared: bool, adopted: bool = False, created: bool
  ):
    self.workdir, self.fd, self.shared = workdir, fd, shared
    self.adopted, self._created = adopted, created

  def child(self) -> tuple[dict[str, str], tuple[int, ...]]:
    """``(environment entries, pass_fds)`` for ``subprocess.Popen``: the child takes the lock
    over (:func:`acquire` in it). Keep this lock until the child has ended and its outcome is
    recorded: the workdir stays locked the whole time."""
    if self.fd is None or self.shared:
      raise ValueError("only a held exclusive lock can be handed to a child")
    return {FD_ENV: str(self.fd)}, (self.fd,)

  def release(self) -> None:
    if self.fd is None:
      return
    fd, self.fd = self.fd, None
    try:
      if self.adopted:  # The parent's hold too: it releases.
        return
      path = lock_path(self.workdir)
      if self._created and os.listdir(self.workdir) == [LOCK_FILE] and _same_file(fd, path):
        os.unlink(path)  # Still holding it: later acquirers see the path change and retry.
        with contextlib.suppress(OSError):
          os.rmdir(self.workdir)
      elif not self.shared:
        with contextlib.suppress(OSError):
          os.ftruncate(fd, 0)
      fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
      os.close(fd)

  def __enter__(self) -> WorkdirLock:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _adopt(workdir: str, what: str) -> WorkdirLock | None:
  """The lock a parent handed down for ``workdir`` (see the module docstring), else None."""
  text = os.environ.get(FD_ENV)
  if not text:
    return None
  try:
    fd = int(text)
  except ValueError:
    return None
  if not _same_file(fd, lock_path(workdir)):
    return None  # Not this workdir's: leave it for the process it was meant for.
  os.environ.pop(FD_ENV)  # Not for this process's own children.
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # Held by this open file already: a no-op.
  except OSError:
    return None
  os.set_inheritable(fd, False)
  _write(fd, _record(f"{what}, started by {_read_holder(fd).what}"))
  return WorkdirLock(workdir, fd, shared=False, adopted=True, created=False)


def _open(path: str, shared: bool) -> int | None:
  """The lock file, created if missing; None when a reader cannot create it (a read-only
  folder: no writer can be in it either)."""
  try:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  except OSError as e:
    if e.errno not in (errno.EACCES, errno.EROFS, errno.EPERM):
      raise
    if os.path.exists(path):
      return os.open(path, os.O_RDONLY)  # flock needs no write access.
    if shared:
      return None
    raise


def acquire(workdir: str, *, what: str, shared: bool = False, wait_s: float = 0.0) -> WorkdirLock:
  """Takes ``workdir``'s lock (exclusive, or ``shared`` for readers), creating the folder when
  missing, or takes over the one a parent handed down (exclusive only).

  Args:
    what: the holder's command, written into the lock file (``experiments.main``).
    wait_s: keep trying this long while it is held (default: refuse at once).

  Raises:
    WorkdirBusy: held by another process (or open file) after ``wait_s``.
  """
  if not shared:
    adopted = _adopt(workdir, what)
    if adopted is not None:
      return adopted
  created = False
  if not os.path.isdir(workdir):
    os.makedirs(os.path.dirname(os.path.abspath(workdir)), exist_ok=True)
    with contextlib.suppress(FileExistsError):
      os.mkdir(workdir)
      created = True
  path = lock_path(workdir)
  deadline = time.monotonic() + wait_s
  tries = 0
  while True:
    if not os.path.isdir(workdir):  # Removed by a releasing creator: make it again.
      with contextlib.suppress(FileExistsError):
        os.mkdir(workdir)
        created = True
    try:
      fd = _open(path, shared)
    except FileNotFoundError:
      continue
    if fd is None:
      return WorkdirLock(workdir, None, shared=True, created=False)
    try:
      fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
      holder_ = None if _readers_only(fd) else _read_holder(fd)
      os.close(fd)
      tries += 1
      if tries >= _RETRIES and time.monotonic() >= deadline:
        raise WorkdirBusy(workdir, holder_) from None
      time.sleep(_RETRY_S if tries < _RETRIES else min(0.2, max(wait_s / 20, _RETRY_S)))
      continue
    if not _same_file(fd, path):  # Removed (and maybe made again) since we opened it.
      os.close(fd)
      continue
    if not shared:
      _write(fd, _record(what))
    return WorkdirLock(workdir, fd, shared=shared, created=created)


def try_acquire(workdir: str, *, what: str) -> WorkdirLock | None:
  """The exclusive lock of ``workdir``, or None when another process holds it."""
  try:
    return acquire(workdir, what=what)
  except WorkdirBusy:
    return None


@contextlib.contextmanager
def exclusive(workdir: str, *, what: str) -> Iterator[WorkdirLock]:
  """``with exclusive(workdir, what=...)``: :func:`acquire` for the block."""
  with acquire(workdir, what=what) as lock:
    yield lock


@contextlib.contextmanager
def shared(workdirs: list[str] | tuple[str, ...], *, what: str) -> Iterator[None]:
  """Shared locks on each existing folder of ``workdirs`` for the block (readers)."""
  with contextlib.ExitStack() as stack:
    for workdir in workdirs:
      if os.path.isdir(workdir):
        stack.enter_context(acquire(workdir, what=what, shared=True))
    yield


def _readers_only(fd: int) -> bool:
  """Whether the lock ``fd`` could not take is held shared (readers), not exclusively."""
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return False
  fcntl.flock(fd, fcntl.LOCK_UN)
  return True


def holder(workdir: str) -> Holder | None:
  """Who holds ``workdir``'s lock exclusively (a run, a runner), or None; readers do not count.
  Reads only: for reports (``--dry-run``, the summary), not to decide whether to start."""
  try:
    fd = os.open(lock_path(workdir), os.O_RDONLY)
  except OSError:
    return None
  try:
    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
  except BlockingIOError:
    return _read_holder(fd)
  finally:
    os.close(fd)  # Closing drops the test lock if it was taken.
  return None
