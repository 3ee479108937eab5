"""Command line: ``python -m experiments.main [--config=FILE] [--config.FIELD=VALUE ...]``.

Flags are absl flags and the config is an ``ml_collections.config_flags`` config file, as in the
Flax examples. ``--help`` (or ``-h``) prints the flags and examples (:data:`EXAMPLES`) and exits
with status 0 before JAX is imported.

Errors in the flags, the config, the workdir or the data print one line (``error: ...``) and exit
with status 2 before anything is compiled or written.

The run holds its workdir's lock (``experiments.workdir_lock``) from before the workdir is
checked until it ends: a second run of the same workdir, or one while ``experiments.analyze``
reads it, exits with status 2 and an ``error:`` line naming the holder (host, pid) before it
reads any data. A checkpoint that cannot be written (or, resuming, no checkpoint that can be
read) ends the run with an ``error:`` line and status 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import ml_collections
from absl import flags
from ml_collections import config_flags

from experiments.cli import UsageError
from experiments.errors import CheckpointError, ConfigError

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "fashion_mnist_default.py")
HELP_FLAGS = ("-h", "--help")
USAGE = (
  "usage: python -m experiments.main [--config=FILE] [--config.FIELD=VALUE ...] [--workdir=DIR]\n"
  "                                  [--resume] [--coordinator_address=HOST:PORT\n"
  "                                  --num_processes=N --process_id=I]"
)
# The placeholder after '=' in --help, per flag (absl flags have none of their own).
_METAVARS = {
  "config": "FILE",
  "workdir": "DIR",
  "coordinator_address": "HOST:PORT",
  "num_processes": "N",
  "process_id": "I",
}
EXAMPLES = """\
  python -m experiments.main                       # the offline default (Fashion-MNIST)
  python -m experiments.main --config=experiments/configs/cifar10_resnet32.py \\
      --config.optimizer.name=sam --workdir=workdirs/c10_sam
  python -m experiments.main --workdir=workdirs/c10_sam --resume   # config from the workdir
  # Two processes (hosts), each on its own devices, one run; the workdir must be shared:
  python -m experiments.main --workdir=W --coordinator_address=HOST0:1234 --num_processes=2 \\
      --process_id=0   # and --process_id=1 on the other host"""


def _config_file(argv: Sequence[str]) -> str | None:
  for item in argv:
    if item.startswith("--config="):
      return item[len("--config=") :]
  return None


def _define_flags(argv: list[str]) -> flags.FlagValues:
  """A fresh set of the command's flags, not parsed yet; the config flag reads its overrides
  from ``argv`` (its first item is the program name)."""
  fv = flags.FlagValues()
  try:
    config_flags.DEFINE_config_file(
      "config",
      DEFAULT_CONFIG,
      "config file: a Python file whose get_config() returns the run's ConfigDict",
      flag_values=fv,
      lock_config=True,
      sys_argv=argv,
    )
  except (KeyError, AttributeError) as e:  # An override names a field the config lacks.
    field = str(e).strip("'\"").split("'")[0]
    raise UsageError(f"unknown config field '{field}' (--config.FIELD=VALUE)") from None
  flags.DEFINE_string(
    "workdir", None, "output folder (default: workdirs/NAME_TIME)", flag_values=fv
  )
  flags.DEFINE_bool("resume", False, "continue the run in --workdir", flag_values=fv)
  # Per process, so flags rather than config fields (config.json is the run's, not a process's).
  flags.DEFINE_string(
    "coordinator_address",
    None,
    "multi-host: HOST:PORT where process 0 runs the coordinator (default: from the cluster "
    "environment or JAX_COORDINATOR_ADDRESS)",
    flag_values=fv,
  )
  flags.DEFINE_integer(
    "num_processes", None, "multi-host: the number of processes (default: detected)", flag_values=fv
  )
  flags.DEFINE_integer(
    "process_id",
    None,
    "multi-host: this process's index, 0 to N-1 (default: detected)",
    flag_values=fv,
  )
  return fv


def _flags(argv: list[str]) -> flags.FlagValues:
  """A fresh set of flags, parsed from ``argv`` (its first item is the program name)."""
  fv = _define_flags(argv)
  try:
    rest = fv(argv)
  except flags.UnrecognizedFlagError as e:
    raise UsageError(f"unrecognised argument --{e.flagname}; see --help") from None
  except flags.Error as e:
    raise UsageError(str(e).splitlines()[0]) from None
  if len(rest) > 1:
    raise UsageError(f"unrecognised argument {rest[1]}; see --help")
  return fv


def wants_help(argv: Sequence[str]) -> bool:
  """Whether ``-h`` or ``--help`` is among the flags (before a ``--``, which ends them)."""
  for item in argv:
    if item == "--":
      return False
    if item in HELP_FLAGS:
      return True
  return False


def usage() -> str:
  """What ``--help`` prints. The flags' lines come from their definitions, so they stay in step
  with what :func:`parse_args` accepts."""
  fv = _define_flags(["experiments.main"])
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  configs_dir = os.path.dirname(DEFAULT_CONFIG)
  configs = sorted(
    name for name in os.listdir(configs_dir) if name.endswith(".py") and name != "__init__.py"
  )
  entries = []
  for name in fv:
    flag = fv[name]
    if flag.boolean:
      entries.append((f"--[no]{name}", f"{flag.help} (default: {str(flag.default).lower()})"))
      continue
    text = flag.help
    if name == "config":  # Its default is an absolute path: shown as users would pass it.
      text += (
        f" (default: {os.path.relpath(DEFAULT_CONFIG, repo)}; in "
        f"{os.path.relpath(configs_dir, repo)}/: {', '.join(configs)})"
      )
    elif flag.default is not None:
      text += f" (default: {flag.default})"
    entries.append((f"--{name}={_METAVARS.get(name, name.upper())}", text))
    if name == "config":
      entries.append(
        (
          "--config.FIELD=VALUE",
          "set one field of the config, e.g. --config.optimizer.name=sam or "
          "--config.optimizer.zeroth_order.num_directions=4 (repeatable; with --resume and no "
          "--config, applied to the config stored in the workdir)",
        )
      )
  entries.append(("-h, --help", "print this message and exit"))
  lines = [USAGE, "", "Trains and evaluates one run and writes it to --workdir.", "", "flags:"]
  for head, text in entries:
    lines.append(f"  {head}")
    lines.extend(textwrap.wrap(text, width=98, initial_indent="      ", subsequent_indent="      "))
  lines += [
    "",
    "Config fields: every field a run reads, with its default and what it does, is in",
    "experiments/configs/default.py (the other configs start from it); docs/pipeline.md describes",
    "the groups (optimizer.*, sparse.*, dataset.*, ...) and what a run writes.",
    "",
    "Multi-host: any of --coordinator_address, --num_processes, --process_id, or",
    "--config.distributed=true (under Slurm, Open MPI or Cloud TPU, where JAX detects the three),",
    "makes this process one of a multi-process run; every process needs the same --workdir.",
    "",
    "examples:",
    EXAMPLES,
    "",
    "Bad flags, config, workdir or data: one line 'error: ...' on stderr and exit status 2,",
    "before anything is compiled or written. A workdir in use by another run (or being",
    "analysed) is refused the same way; the error names the holder (host, pid).",
  ]
  return "\n".join(lines)


class Args(NamedTuple):
  """The parsed command line."""

  config: ml_collections.ConfigDict
  workdir: str
  resume: bool
  # jax.distributed.initialize's arguments (None: detected), or None for a single process.
  distributed: tuple[str | None, int | None, int | None] | None


def parse_args(argv: Sequence[str]) -> Args:
  """The command line (without the program name) as :class:`Args`.

  Multi-host starts when ``--config.distributed=true`` or any of ``--coordinator_address``,
  ``--num_processes``, ``--process_id`` is given.
  """
  path = _config_file(argv)
  if path is not None and not os.path.isfile(path):
    raise UsageError(f"config file {path} does not exist")
  fv = _flags(["experiments.main", *argv])
  workdir, config = fv.workdir, fv.config
  stored = os.path.join(workdir, "config.json") if workdir else None
  if fv.resume and path is None and stored and os.path.exists(stored):
    with open(stored) as f:
      config = ml_collections.ConfigDict(json.load(f))
    config.update_from_flattened_dict(config_flags.get_override_values(fv["config"]))
  distributed = (fv.coordinator_address, fv.num_processes, fv.process_id)
  if config.get("distributed", False) or any(v is not None for v in distributed):
    from experiments import multihost

    try:
      multihost.check_distributed_args(*distributed)
    except ValueError as e:
      raise UsageError(str(e)) from None
    if workdir is None:  # Each process would pick its own timestamp.
      raise UsageError("multi-host runs need --workdir (one folder shared by every process)")
  else:
    distributed = None
  if workdir is None:
    name = os.path.splitext(os.path.basename(path or DEFAULT_CONFIG))[0]
    workdir = os.path.join("workdirs", f"{name}_{time.strftime('%Y%m%d-%H%M%S')}")
  return Args(config, workdir, fv.resume, distributed)


def run(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the exit status."""
  argv = sys.argv[1:] if argv is None else list(argv)
  if wants_help(argv):  # Before the imports below: they start JAX (seconds) for nothing here.
    print(usage())
    return 0
  from experiments import input_pipeline, train

  try:
    args = parse_args(argv)
    if args.distributed is not None:
      from experiments import multihost

      try:
        multihost.initialize(*args.distributed)
      except ValueError as e:  # A value missing that the cluster environment does not give.
        raise UsageError(
          f"multi-host start-up: {str(e).rstrip('.')} (pass --coordinator_address=HOST:PORT "
          "--num_processes=N --process_id=I, or start under a cluster manager JAX detects: "
          "Slurm, Open MPI, Cloud TPU)"
        ) from None
    with _holding_workdir(args):
      train.train_and_evaluate(args.config, args.workdir, resume=args.resume)
  except (UsageError, train.ConfigError, input_pipeline.DataMissingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except CheckpointError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


@contextlib.contextmanager
def _holding_workdir(args: Args) -> Iterator[None]:
  """The workdir's exclusive lock for the run (or the one a study runner handed down). In a
  multi-host run process 0 holds it for all, and every process stops when it cannot."""
  from experiments import workdir_lock

  if args.distributed is None:
    with workdir_lock.exclusive(args.workdir, what="experiments.main"):
      yield
    return
  import jax

  from experiments import multihost

  lock, busy = None, None
  if jax.process_index() == 0:
    try:
      lock = workdir_lock.acquire(args.workdir, what="experiments.main (process 0)")
    except workdir_lock.WorkdirBusy as e:
      busy = e
  if not multihost.process_0_says(busy is None):
    raise busy or ConfigError(f"process 0 could not lock workdir {args.workdir} (see its error)")
  try:
    yield
  finally:
    if lock is not None:
      lock.release()


if __name__ == "__main__":
  raise SystemExit(run())
