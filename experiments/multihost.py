"""Several processes (hosts) training one model: start-up, the device mesh, and who writes.

Every process runs the same program on its own devices; ``jax.distributed.initialize`` connects
them (process 0 runs the coordinator at ``coordinator_address``), after which ``jax.devices()``
lists every process's devices and a jitted step is one SPMD program over all of them, its
collectives crossing processes (on CPU through gloo, JAX's default CPU collectives). The run's
folder must be one shared folder: process 0 writes ``config.json`` and ``metrics.jsonl``, every
process takes part in the orbax checkpoints (orbax coordinates them). Data preparation that writes
to ``data_dir`` (the one-off tfds build) runs on process 0 first, so two processes never build
the same dataset at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh

T = TypeVar("T")

_ADDRESS = re.compile(r"^\S+:\d{1,5}$")


def check_distributed_args(
  coordinator_address: str | None, num_processes: int | None, process_id: int | None
) -> None:
  """Refuses values ``jax.distributed.initialize`` would refuse later (or hang on).

  ``None`` means "detect from the cluster environment" (Slurm, Open MPI, Cloud TPU, Kubernetes;
  ``JAX_COORDINATOR_ADDRESS`` for the address).

  Raises:
    ValueError: naming the flag and the allowed values.
  """
  if coordinator_address is not None and not _ADDRESS.match(coordinator_address):
    raise ValueError(
      f"--coordinator_address must be HOST:PORT (process 0's address), got {coordinator_address!r}"
    )
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"--num_processes must be >= 1, got {num_processes}")
  if process_id is not None:
    if process_id < 0:
      raise ValueError(f"--process_id must be >= 0, got {process_id}")
    if num_processes is not None and process_id >= num_processes:
      raise ValueError(
        f"--process_id must be in [0, {num_processes - 1}] for --num_processes={num_processes}, "
        f"got {process_id}"
      )


def initialize(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
) -> None:
  """``jax.distributed.initialize`` with these values (``None``: detected from the cluster).

  Must run before anything touches a JAX backend.

  Raises:
    ValueError: a bad value, or one that is missing and cannot be detected.
  """
  check_distributed_args(coordinator_address, num_processes, process_id)
  jax.distributed.initialize(
    coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id
  )


def is_main() -> bool:
  """Whether this process writes the run's files and prints its log (process 0)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches ``barrier(name)`` (nothing with one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def process_0_says(flag: bool) -> bool:
  """Process 0's ``flag`` on every process (each passes its own; the others' are ignored)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils

  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag, np.int32)))


def main_first(name: str, fn: Callable[[], T]) -> T:
  """``fn()`` on every process, process 0's call finishing before the others start.

  For work that may write shared files once (building a dataset into ``data_dir``): the others
  then find them written. Every process must call it, in the same order.
  """
  if not is_main():
    barrier(name)
  out = fn()
  if is_main():
    barrier(name)
  return out


def data_mesh() -> Mesh:
  """A 1-D mesh (axis ``"batch"``) over every process's devices, each process's devices
  contiguous and processes in order.

  The input pipeline gives process ``p`` rows ``[p * B / P, (p + 1) * B / P)`` of a global batch
  of ``B`` (``input_pipeline.TrainBatches``); ``jax.make_array_from_process_local_data`` places a
  process's rows where its devices sit in the mesh, so this order makes the global batch the same
  rows in the same order as on one process (and the step the same computation).
  """
  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), ("batch",))
