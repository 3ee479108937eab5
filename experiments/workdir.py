"""A run's folder: its config, its metrics and its checkpoints.

Layout: ``config.json`` (the run's config; resuming checks it), ``metrics.jsonl`` (one JSON record
per line: ``kind`` is ``train``, ``eval`` or ``corrupted``), ``checkpoints/`` (orbax: the train
state and the training data's position) and, with ``config.tensorboard``, ``tensorboard/``
(the same numbers as TensorBoard events).
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import ml_collections

from experiments.errors import CheckpointError, ConfigError

TENSORBOARD_DIR = "tensorboard"
# Where a resumed run moves the checkpoints that do not restore (cut short, corrupt) once an older
# one has: out of orbax's folder (which would skip saving their steps again), never deleted.
UNREADABLE_DIR = "checkpoints_unreadable"
# Config fields that may differ between a run and its resumption (they do not change results).
RESUMABLE_CHANGES = frozenset(
  {
    "progress_bar",
    "checkpoint_every_steps",
    "keep_checkpoints",
    "distributed",
    "tensorboard",
    "dataset.data_dir",
    "dataset.source_dir",
    "dataset.workers",  # The same batches with any number (input_pipeline.TrainBatches).
  }
)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config_json(config))


def check_workdir(config: ml_collections.ConfigDict, workdir: str, resume: bool) -> bool:
  """Read-only checks of ``workdir``; returns whether there is a checkpoint to resume from.

  Raises:
    ConfigError: checkpoints exist but ``resume`` is false, or the stored config differs.
  """
  ckpt_dir = os.path.join(workdir, "checkpoints")
  has_ckpt = os.path.isdir(ckpt_dir) and any(name.isdigit() for name in os.listdir(ckpt_dir))
  config_path = os.path.join(workdir, "config.json")
  if (has_ckpt or os.path.exists(config_path)) and not resume:
    raise ConfigError(
      f"workdir {workdir} already holds a run; pass --resume to continue it or choose a new "
      "--workdir"
    )
  if resume and os.path.exists(config_path):
    with open(config_path) as f:
      stored = _flatten(json.load(f))
    current = _flatten(json.loads(config_json(config)))
    # A field added to the trainer after the run started is absent there; at its default it
    # cannot have changed what the run did, so it does not block resuming.
    from experiments.configs import default

    defaults = _flatten(json.loads(config_json(default.get_config())))
    diffs = sorted(
      k
      for k in set(stored) | set(current)
      if k not in RESUMABLE_CHANGES
      and stored.get(k, "<absent>") != current.get(k, "<absent>")
      and not (k not in stored and k in defaults and current.get(k) == defaults[k])
    )
    if diffs:
      shown = "; ".join(
        f"{k}: {stored.get(k, '<absent>')!r} there vs {current.get(k, '<absent>')!r} now"
        for k in diffs[:3]
      )
      raise ConfigError(
        f"workdir {workdir} holds a run with a different config ({shown}); use a new --workdir"
      )
  return has_ckpt


class MetricWriter:
  """Appends JSON records to ``metrics.jsonl`` and, with ``tensorboard``, their numbers to
  TensorBoard event files in ``tensorboard/`` (``experiments.metrics``); process 0 only."""

  def __init__(self, workdir: str, enabled: bool, *, tensorboard: bool = False):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.enabled = enabled
    self._logdir = os.path.join(workdir, TENSORBOARD_DIR) if tensorboard else None
    self._events = None  # experiments.metrics.EventWriter, imported when needed (jax).

  def truncate_after(self, step: int) -> None:
    """Drops records of steps after ``step`` (those a killed run wrote past its checkpoint) and
    starts a new event file that hides their TensorBoard events."""
    if not self.enabled:
      return
    if self._logdir is not None:
      from experiments import metrics

      self.close()
      self._events = metrics.EventWriter(self._logdir, purge_step=step + 1)
    if not os.path.exists(self.path):
      return
    with open(self.path) as f:
      lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    records = _parse_records(lines)  # Without a last line cut short (written past `step`).
    kept = [line for line, r in zip(lines, records, strict=False) if r["step"] <= step]
    with open(self.path, "w") as f:
      f.writelines(kept)

  def write(self, record: dict[str, Any]) -> None:
    if not self.enabled:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._logdir is not None:
      if self._events is None:
        from experiments import metrics

        self._events = metrics.EventWriter(self._logdir)
      self._events.write(record)

  def close(self) -> None:
    """Closes the event file (the JSONL is closed after each record)."""
    if self._events is not None:
      self._events.close()
      self._events = None


def checkpoint_steps(workdir: str) -> list[int]:
  """The steps of ``workdir``'s saved checkpoints, ascending (read from the folder names, so
  nothing is opened or compiled)."""
  ckpt_dir = os.path.join(workdir, "checkpoints")
  if not os.path.isdir(ckpt_dir):
    return []
  return sorted(int(name) for name in os.listdir(ckpt_dir) if name.isdigit())


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """All records of ``workdir/metrics.jsonl``.

  A last line that is not JSON is left out: a run killed while appending a record leaves it cut
  short (the records are appended one line at a time, so only the last can be). Any other line
  that is not JSON raises ``ValueError``.
  """
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return _parse_records([line for line in f if line.strip()])


def _parse_records(lines: list[str]) -> list[dict[str, Any]]:
  """The JSON records of ``lines``, without a last one that is not JSON (see read_metrics)."""
  records = []
  for i, line in enumerate(lines):
    try:
      records.append(json.loads(line))
    except ValueError:
      if i < len(lines) - 1:
        raise
  return records


class Checkpoints:
  """Orbax checkpoints under ``workdir/checkpoints``: per step the whole train state (item
  ``state``) and the training data's position (item ``data``, JSON: a
  ``input_pipeline.TrainIterator.get_state()``).

  The data position is the same on every process (each reads its rows of the same global batch
  with the same number of workers), so orbax's primary process writes it for all. Checkpoints
  written before the position was saved (one unnamed item, the state) are still read: their
  position is their step.
  """

  def __init__(self, workdir: str, config: ml_collections.ConfigDict):
    import orbax.checkpoint as ocp

    self._ocp = ocp
    self.path = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self._options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, create=True, enable_async_checkpointing=False
    )
    self.manager = ocp.CheckpointManager(
      self.path, options=self._options, item_names=("state", "data")
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def _unnamed(self, step: int) -> bool:
    """Whether ``step`` was saved as one unnamed item (the state alone, before the data item)."""
    return os.path.isdir(os.path.join(self.path, str(step), "default"))

  def restore(self, state: Any, step: int | None = None) -> Any:
    """The train state of ``step`` (default: the latest), with ``state``'s structure, shapes and
    shardings."""
    import jax

    abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state
    )
    step = self.manager.latest_step() if step is None else step
    return self._restore_state(step, self._ocp.args.StandardRestore(abstract))

  def _restore_state(self, step: int, args: Any) -> Any:
    """The ``state`` item of ``step`` (or the one unnamed item of the earlier layout)."""
    if self._unnamed(step):
      return self._ocp.CheckpointManager(self.path, options=self._options).restore(step, args=args)
    return self.manager.restore(step, args=self._ocp.args.Composite(state=args))["state"]

  def restore_raw(self, step: int) -> Any:
    """The train state of ``step`` as saved (nested dicts of arrays), whatever today's layout."""
    return self._restore_state(step, self._ocp.args.StandardRestore())

  def restore_weights(self, state: Any, step: int) -> Any:
    """``state`` with the parameters, BatchNorm statistics and sparse ``weight_mask`` of ``step``
    and everything else as given: reads a checkpoint whose optimizer state has another layout
    (an earlier version of a head), for what only needs the weights (``experiments.analyze``)."""
    import jax
    import numpy as np
    import optax

    raw = self.restore_raw(step)

    def put(like: Any, saved: Any) -> Any:
      return jax.tree.map(
        lambda a, x: jax.device_put(np.asarray(x, a.dtype), a.sharding), like, saved
      )

    out = {**state, "params": put(state["params"], raw["params"])}
    out["batch_stats"] = put(state["batch_stats"], raw["batch_stats"])
    mask = optax.tree_utils.tree_get(state["opt_state"], "weight_mask")
    if mask is not None:
      saved = put(mask, optax.tree_utils.tree_get(raw["opt_state"], "weight_mask"))
      out["opt_state"] = optax.tree_utils.tree_set(state["opt_state"], weight_mask=saved)
    return out

  def restore_data(self, step: int) -> dict[str, Any] | None:
    """The data position saved at ``step``; None for a checkpoint without one."""
    if self._unnamed(step):
      return None
    composite = self._ocp.args.Composite(data=self._ocp.args.JsonRestore())
    return self.manager.restore(step, args=composite)["data"]

  def restore_newest(self, state: Any) -> tuple[Any, dict[str, Any] | None, list[str]]:
    """``(state, data position, unreadable)``: the newest checkpoint that restores, and a line
    per newer one that does not (its step and why: a copy cut short, a damaged file).

    Moves nothing: see :meth:`set_aside` for the unreadable ones.

    Raises:
      CheckpointError: none restores (nothing is moved or deleted then).
    """
    unreadable: list[str] = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self.restore(state, step)
        data = self.restore_data(step)
      except Exception as e:  # Orbax and TensorStore raise many types for a damaged checkpoint.
        unreadable.append(f"step {step} ({type(e).__name__}: {_first_line(e)})")
        continue
      return restored, data, unreadable
    raise CheckpointError(
      f"no checkpoint in {self.path} restores: {'; '.join(unreadable)}; nothing was moved or "
      "deleted (a run of other code? then resume with that code)"
    )

  def set_aside(self, steps: list[int]) -> str:
    """Moves the checkpoints of ``steps`` out of orbax's folder into ``UNREADABLE_DIR`` (a
    resumed run saves those steps again; orbax would skip a step it finds); returns where."""
    out = os.path.join(os.path.dirname(self.path), UNREADABLE_DIR)
    os.makedirs(out, exist_ok=True)
    for step in steps:
      target = os.path.join(out, f"{step}_{time.strftime('%Y%m%d-%H%M%S')}")
      os.replace(os.path.join(self.path, str(step)), target)
    return out

  def reload(self) -> None:
    """Reads the folder again (after :meth:`set_aside`, here or on process 0)."""
    self.manager.reload()

  def save(self, step: int, state: Any, data: dict[str, Any]) -> None:
    """Saves the train state and the data position ``data`` (JSON-serialisable) of ``step``.

    Raises:
      CheckpointError: it could not be written (a read-only or full disk); the earlier ones are
        left as they were (orbax writes a new step into a temporary folder, renames it when
        complete, and only then drops the oldest).
    """
    args = self._ocp.args.Composite(
      state=self._ocp.args.StandardSave(state), data=self._ocp.args.JsonSave(data)
    )
    previous = self.manager.latest_step()
    try:
      self.manager.save(step, args=args)
    except Exception as e:  # OSError, or orbax's and TensorStore's wrappers of one.
      intact = (
        f"the checkpoint of step {previous} is intact: fix it and run again with --resume"
        if previous is not None
        else "there is no earlier checkpoint"
      )
      raise CheckpointError(
        f"could not save the checkpoint of step {step} in {self.path} "
        f"({type(e).__name__}: {_first_line(e)}); {intact}"
      ) from e

  def wait(self) -> None:
    self.manager.wait_until_finished()


def _first_line(e: BaseException) -> str:
  return (str(e).splitlines() or [""])[0][:200]


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A saved config with the fields added to ``configs/default.py`` since it was written filled
  in at their defaults (which keep earlier behaviour), so older workdirs stay readable."""
  from experiments.configs import default

  def fill(saved: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict) -> None:
    for key, value in defaults.items():
      if key not in saved:
        saved[key] = copy.deepcopy(value)
      elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        saved[key], ml_collections.ConfigDict
      ):
        fill(saved[key], value)

  config = ml_collections.ConfigDict(config.to_dict())
  fill(config, default.get_config())
  return config
