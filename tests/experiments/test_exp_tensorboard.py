"""TensorBoard events of the trainer: the same numbers as ``metrics.jsonl``, across a resume;
none with ``tensorboard=False``; the optimizer-state scalars (rho, m, sparsity)."""

from __future__ import annotations

import os
import struct

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import metrics, train, workdir
from experiments.configs import default
from tests.experiments.conftest import tiny_config


def read_events(logdir: str) -> tuple[dict[str, list[tuple[int, float]]], list[list[int]]]:
  """Every scalar of ``logdir`` as ``{tag: [(step, value), ...]}`` as TensorBoard shows it, and
  the steps of each file's scalars (files in name order).

  Reads the TFRecord framing (length, its masked CRC, the Event, its masked CRC; CRCs checked)
  and applies TensorBoard's restart marker: a ``SessionLog.START`` at step ``s`` drops the
  earlier files' points at steps ``>= s``.
  """
  from tensorboardX.proto.event_pb2 import Event, SessionLog
  from tensorboardX.record_writer import masked_crc32c

  series: dict[str, list[tuple[int, float]]] = {}
  file_steps = []
  for name in sorted(os.listdir(logdir)):
    assert "tfevents" in name, name
    with open(os.path.join(logdir, name), "rb") as f:
      data = f.read()
    pos, steps = 0, []
    while pos < len(data):
      header = data[pos : pos + 8]
      (length,) = struct.unpack("<Q", header)
      assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header)
      body = data[pos + 12 : pos + 12 + length]
      assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == (
        masked_crc32c(body)
      )
      pos += 16 + length
      event = Event.FromString(body)
      if event.HasField("session_log") and event.session_log.status == SessionLog.START:
        series = {t: [(s, v) for s, v in points if s < event.step] for t, points in series.items()}
      for value in event.summary.value:
        series.setdefault(value.tag, []).append((event.step, value.simple_value))
        steps.append(event.step)
    assert pos == len(data)  # No torn record.
    file_steps.append(sorted(set(steps)))
  return series, file_steps


def expected_series(records) -> dict[str, list[tuple[int, float]]]:
  """The scalars the JSONL records should give: ``<kind>/<field>`` (``corrupted/<name>/<field>``)
  for every numeric field but the step and epoch, as float32 (TensorBoard's precision); flags
  (``train_epoch_time_partial``) are not scalars."""
  out: dict[str, list[tuple[int, float]]] = {}
  for r in records:
    prefix = r["kind"] + (f"/{r['name']}" if "name" in r else "")
    for key, value in r.items():
      if key not in ("kind", "step", "epoch", "name") and not isinstance(value, bool):
        out.setdefault(f"{prefix}/{key}", []).append((r["step"], float(np.float32(value))))
  return out


def test_events_equal_the_jsonl_across_resumes(tmp_path, data_dir, fmnist_subset_dir):
  # ZO-SAM with RigL (a mask, so a sparsity scalar): test_exp_train's config, whose compiled
  # step the suite's compilation cache then shares.
  overrides = {"optimizer__name": "zo_sam", "sparse__method": "rigl", "sparse__update_every": 2}
  run_dir, logdir = str(tmp_path / "run"), str(tmp_path / "run" / workdir.TENSORBOARD_DIR)

  class Killed(Exception):
    pass

  def kill_at_5(step):
    if step == 5:
      raise Killed  # Past the checkpoint of step 3, after the train record of step 4.

  # Three attempts: without TensorBoard, killed; with it (the default), killed at the same
  # step; resumed to the end. The switch may change on resume.
  for tensorboard, step_hook in ((False, kill_at_5), (True, kill_at_5), (True, None)):
    config = tiny_config(data_dir, fmnist_subset_dir, tensorboard=tensorboard, **overrides)
    if step_hook is None:
      train.train_and_evaluate(config, run_dir, resume=True)
    else:
      with pytest.raises(Killed):
        train.train_and_evaluate(config, run_dir, resume=True, step_hook=step_hook)
    if not tensorboard:
      assert os.path.exists(os.path.join(run_dir, "metrics.jsonl"))
      assert not os.path.exists(logdir)
  assert default.get_config().tensorboard

  records = train.read_metrics(run_dir)
  train_records = [r for r in records if r["kind"] == "train"]
  assert [r["step"] for r in train_records] == [4, 8]
  for r in train_records:
    assert 0.5 < r["sparsity"] < 0.9  # 90% of the kernels; biases and BatchNorm stay active.
    assert "rho" not in r and "num_directions" not in r  # Constant for ZO-SAM (config.json).

  series, file_steps = read_events(logdir)
  # The second attempt's file keeps its step-4 record; the third's restart marker hides it.
  assert file_steps == [[4], [4, 8]]
  assert series == expected_series(records)
  assert {"train/loss", "train/accuracy", "train/learning_rate", "train/images_per_sec"} <= set(
    series
  )
  assert {"train/sparsity", "eval/test_accuracy"} <= set(series)


def test_metric_writer_switches(tmp_path):
  record = {"kind": "train", "step": 1, "epoch": 0.5, "loss": 0.25}
  for enabled, tensorboard in ((True, False), (False, True)):
    folder = tmp_path / f"{enabled}_{tensorboard}"
    folder.mkdir()
    writer = workdir.MetricWriter(str(folder), enabled, tensorboard=tensorboard)
    writer.truncate_after(0)
    writer.write(record)
    writer.close()
    assert sorted(os.listdir(folder)) == (["metrics.jsonl"] if enabled else [])
  # Written without truncate_after first: no restart marker, the same scalars.
  writer = workdir.MetricWriter(str(tmp_path), True, tensorboard=True)
  writer.write(record)
  writer.write({"kind": "corrupted", "step": 2, "name": "fog_1", "test_accuracy": 0.5})
  writer.close()
  series, _ = read_events(str(tmp_path / workdir.TENSORBOARD_DIR))
  assert series == {"train/loss": [(1, 0.25)], "corrupted/fog_1/test_accuracy": [(2, 0.5)]}


def test_optimizer_scalars_from_the_state():
  import zosam_jax as zj

  params = {"w": jnp.ones((3, 4)), "b": jnp.ones(4)}
  mask = {"w": jnp.asarray(np.arange(12).reshape(3, 4) % 3 == 0), "b": jnp.ones(4, bool)}
  gsam = zj.gsam(0.05, 0.01, learning_rate=optax.constant_schedule(0.1), has_aux=False)
  state = {"head": gsam.init(params), "sparse": {"weight_mask": mask}}
  state["head"] = state["head"]._replace(rho=jnp.asarray(0.03, jnp.float32))
  out = metrics.optimizer_scalars(state)
  # 4 of the 12 kernel weights and the 4 biases active: 8 of 16.
  assert out == {"rho": float(np.float32(0.03)), "sparsity": 0.5}

  adaptive = zj.adaptive_zo_sam(0.05, 6, num_directions=2).init(params)
  assert metrics.optimizer_scalars(adaptive) == {"num_directions": 2}
  assert metrics.optimizer_scalars(zj.sam(0.05).init(params)) == {}


def test_missing_tensorboardx_is_a_config_error(monkeypatch):
  import importlib.util

  from experiments import checks

  config = default.get_config()
  checks.validate_config(config, device_count=1)
  real = importlib.util.find_spec
  monkeypatch.setattr(
    importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a)
  )
  with pytest.raises(workdir.ConfigError, match="tensorboard=True needs tensorboardX"):
    checks.validate_config(config, device_count=1)
  config.tensorboard = False
  checks.validate_config(config, device_count=1)
