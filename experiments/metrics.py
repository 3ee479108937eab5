"""What a run logs: its ``train`` records, and the TensorBoard copy of every record.

``metrics.jsonl`` (``workdir.MetricWriter``) is the source of truth; with ``config.tensorboard``
the same numbers also go to TensorBoard event files in ``WORKDIR/tensorboard/`` (written with
``tensorboardX``, which needs no TensorFlow), for ``tensorboard --logdir WORKDIR``. Each numeric
field of a record becomes the scalar ``<kind>/<field>`` at the record's ``step`` (``corrupted``
records: ``corrupted/<name>/<field>``); ``step`` and ``epoch`` are the axes, not scalars.
TensorBoard stores scalars as float32.

Resuming: the JSONL drops the records a killed run wrote after its checkpoint; the resumed run
opens a new event file whose first event is TensorBoard's restart marker (a ``SessionLog.START``
at step ``checkpoint + 1``), which hides every earlier event of a later step, so both sinks show
the same history. Events are written synchronously and flushed with each record, like the JSONL
lines, so a killed run loses none written before its checkpoint.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Fields of a record that are not scalars of their own.
AXES = frozenset({"kind", "step", "epoch", "name"})


@jax.jit
def _state_scalars(opt_state: Any) -> dict[str, Any]:
  out = {}
  # GSAM's radius of the last step (its schedule), adaptive ZO-SAM's m for the next step.
  for field in ("rho", "num_directions"):
    value = optax.tree_utils.tree_get(opt_state, field)
    if value is not None:
      out[field] = value
  mask = optax.tree_utils.tree_get(opt_state, "weight_mask")
  if mask is not None:  # Counted per leaf in int32, summed exactly on the host.
    out["active"] = [jnp.count_nonzero(m).astype(jnp.int32) for m in jax.tree.leaves(mask)]
  return out


def optimizer_scalars(opt_state: Any) -> dict[str, float | int]:
  """What the optimizer state says about the run, for the fields it has.

  ``rho``: the radius of the last step, when the head's state carries it (GSAM, whose radius
  follows the learning rate; the other heads' radius is ``optimizer.rho``, in ``config.json``).
  ``num_directions``: the ``m`` adaptive ZO-SAM will use at the next step. ``sparsity``: with a
  sparse method, the fraction of ALL parameters its ``weight_mask`` holds at zero (biases,
  BatchNorm and ``sparse.dense_layers`` count as active, so it is below ``sparse.sparsity``).

  Every process must call it (it runs a jitted computation over the replicated state).
  """
  values = jax.device_get(_state_scalars(opt_state))
  out: dict[str, float | int] = {}
  if "rho" in values:
    out["rho"] = float(values["rho"])
  if "num_directions" in values:
    out["num_directions"] = int(values["num_directions"])
  if "active" in values:
    mask = optax.tree_utils.tree_get(opt_state, "weight_mask")
    total = sum(m.size for m in jax.tree.leaves(mask))
    out["sparsity"] = 1.0 - sum(int(a) for a in values["active"]) / total
  return out


def train_record(
  state: dict[str, Any],
  step: int,
  steps_per_epoch: int,
  learning_rate: float,
  images_per_sec: float,
) -> dict[str, Any]:
  """The ``train`` record of the log window ending at ``step``: mean loss and accuracy of its
  steps (``state["acc"]``), the learning rate of the last step, throughput, and
  :func:`optimizer_scalars`.

  With label noise also ``accuracy_clean`` (examples whose label was not flipped),
  ``accuracy_flipped`` (flipped examples predicted as their given, wrong label: memorisation) and
  ``accuracy_flipped_true`` (flipped examples predicted as their true label).
  """
  acc = jax.device_get(state["acc"])
  record = {
    "kind": "train",
    "step": step,
    "epoch": step / steps_per_epoch,
    "loss": float(acc["loss_sum"]) / int(acc["steps"]),
    "accuracy": float(acc["correct"]) / max(int(acc["count"]), 1),
  }
  if "count_flipped" in acc:
    flipped = int(acc["count_flipped"])
    clean = int(acc["count"]) - flipped
    record["accuracy_clean"] = (int(acc["correct"]) - int(acc["correct_flipped"])) / max(clean, 1)
    record["accuracy_flipped"] = int(acc["correct_flipped"]) / max(flipped, 1)
    record["accuracy_flipped_true"] = int(acc["true_flipped"]) / max(flipped, 1)
  return {
    **record,
    "learning_rate": learning_rate,
    "images_per_sec": images_per_sec,
    **optimizer_scalars(state["opt_state"]),
  }


def start_line(
  config: Any,
  n_params: int,
  sizes: tuple[int, int],
  split_name: str,
  steps_per_epoch: int,
  compile_s: float,
) -> str:
  """The console line a run prints once compiled: what trains on what (``sizes``: training and
  evaluation examples), and the compile time."""
  held_out = " held-out" if split_name == "validation" else ""
  return (
    f"{config.model.name} ({n_params:,} params) on {config.dataset.name} ({sizes[0]} train / "
    f"{sizes[1]}{held_out} {split_name}), optimizer {config.optimizer.name}, sparse "
    f"{config.sparse.method}, {jax.device_count()} device(s), {steps_per_epoch} steps/epoch; "
    f"compiled in {compile_s:.1f}s"
  )


def epoch_line(
  config: Any,
  train: dict[str, Any],
  evaluated: dict[str, Any],
  split_name: str,
  steps_per_epoch: int,
  seconds: float,
) -> str:
  """The console line of an epoch's end: its last train loss, the evaluation, the train speed."""
  return (
    f"epoch {evaluated['epoch']}/{config.num_epochs}: train loss {train['loss']:.4f} | "
    f"{split_name} loss {evaluated[split_name + '_loss']:.4f}, {split_name} accuracy "
    f"{evaluated[split_name + '_accuracy']:.4f} | {seconds:.1f}s train "
    f"({steps_per_epoch * config.batch_size / max(seconds, 1e-9):.0f} img/s)"
  )


def scalars(record: dict[str, Any]) -> dict[str, float]:
  """``{tag: value}``: the TensorBoard scalars of one metrics record."""
  prefix = record["kind"] + (f"/{record['name']}" if "name" in record else "")
  return {
    f"{prefix}/{key}": float(value)
    for key, value in record.items()
    if key not in AXES
    and isinstance(value, int | float | np.number)
    and not isinstance(value, bool)
  }


class EventWriter:
  """Writes metrics records as TensorBoard scalars into a new event file in ``logdir``.

  ``purge_step``: TensorBoard hides the events of steps ``>= purge_step`` from earlier files
  (those a killed run wrote past its checkpoint).
  """

  def __init__(self, logdir: str, *, purge_step: int | None = None):
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar

    self._event, self._scalar = Event, scalar
    os.makedirs(logdir, exist_ok=True)
    # tensorboardX names files by the second and opens them with "wb": a nanosecond suffix keeps
    # a run resumed within the same second from overwriting the file before it, and sorts after.
    self._file = EventsWriter(os.path.join(logdir, "events"), filename_suffix=f".{time.time_ns()}")
    if purge_step is not None:
      start = SessionLog(status=SessionLog.START)
      self._file.write_event(Event(wall_time=time.time(), step=purge_step, session_log=start))
      self._file.flush()

  def write(self, record: dict[str, Any]) -> None:
    now = time.time()
    for tag, value in scalars(record).items():
      event = self._event(wall_time=now, step=int(record["step"]), summary=self._scalar(tag, value))
      self._file.write_event(event)
    self._file.flush()

  def close(self) -> None:
    self._file.close()
