"""One training run: ``train_run(config, workdir)`` and the model and optimizer it ``build``s.

One jit-compiled step per batch (``steps.py``); the run's folder is ``workdir.py``'s. Every
random choice derives from ``(config.seed, step)``: the data order and augmentation (see
``input_pipeline``; the data iterator's position is checkpointed with the state), the optimizer's
PRNG key (in its state, checkpointed), and dropout. So a resumed run reproduces an uninterrupted
one bit for bit on CPU, and the same seed gives the same metrics. Library values (radii,
directions, sparsities, ...) are checked by the library when the optimizer is built, before
anything is compiled or written. LTH's rounds (``lottery.py``) are runs of this one;
``train.train_and_evaluate`` picks between the two.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import input_pipeline, label_noise, metrics, models, multihost, optimizers, steps
from experiments.checks import configure, validate_config
from experiments.evaluation import evaluate, evaluate_corrupted, to_global
from experiments.workdir import (
  Checkpoints,
  MetricWriter,
  check_workdir,
  write_config,
)

__all__ = ["TIMING_KEYS", "build", "build_abstract", "train_run", "train_step_fn"]

# Measured, not computed: they differ between a run and its resumption, or between two machines.
TIMING_KEYS = frozenset(
  {
    "images_per_sec",
    "train_epoch_time_s",
    "train_epoch_time_partial",
    "eval_time_s",
    "compile_time_s",
  }
)


def _init_fn(model, spec) -> Callable[[jax.Array], dict[str, Any]]:
  """``key -> variables``: the model's initialisation on a one-image dummy batch."""
  dummy = jnp.zeros((1, *spec.image_shape), jnp.float32)
  return lambda key: model.init(key, dummy, train=False)


def build(
  config: ml_collections.ConfigDict,
  spec,
  train_split,
  steps_per_epoch: int,
  sharding,
  weight_mask: Any = None,
  initial: dict[str, Any] | None = None,
):
  """``(model, tx, state)``: the model initialised from ``config.seed`` (or to ``initial``, its
  variables ``{"params", "batch_stats"}``) and its optimizer.

  Raises ``ConfigError`` for a value the library refuses (see ``checks.configure``).
  """
  model, chain, method = configure(config, spec, steps_per_epoch)
  variables = jax.jit(_init_fn(model, spec), out_shardings=sharding)(jax.random.key(config.seed))
  if initial is not None:  # An LTH round's rewound weights (tree.map checks the structure).
    variables = jax.tree.map(lambda a, b: jnp.asarray(b, a.dtype), variables, initial)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  scoring = {}
  if config.sparse.method in optimizers.STATIC_SPARSE:
    # SNIP/GraSP score the initial weights on training data (BN in batch-statistics mode).
    def apply_fn(p, x):
      return model.apply(
        {"params": p, "batch_stats": batch_stats}, x, train=True, mutable=["batch_stats"]
      )[0]

    n = min(train_split.size, max(config.batch_size, 20 * spec.num_classes))
    images, labels = train_split.get(np.arange(n))
    scoring = {
      "apply_fn": apply_fn,
      "scoring_data": (input_pipeline.normalize_eval(images, spec), labels),
    }
  tx = optimizers.sparse_chain(chain, method, params, weight_mask=weight_mask, **scoring)
  opt_state = tx.init(params)

  noisy = bool(config.dataset.label_noise)
  state = jax.jit(
    lambda p, o, b: steps.initial_state(p, o, b, label_noise=noisy), out_shardings=sharding
  )(params, opt_state, batch_stats)
  return model, tx, state


def build_abstract(
  config: ml_collections.ConfigDict, spec: input_pipeline.DatasetSpec, steps_per_epoch: int = 1
) -> tuple[Any, optax.GradientTransformationExtraArgs, dict[str, Any]]:
  """``(model, tx, state)`` as :func:`build` makes them, with the state as shapes and dtypes
  (``jax.ShapeDtypeStruct``) only: nothing is initialised or compiled. For lowering, exporting
  or costing the step (:func:`train_step_fn`) without the data.

  Raises ``ConfigError`` as :func:`build`, and ``ValueError`` for the sparse methods whose mask
  is computed from the initial weights (SNIP, GraSP, LTH's rounds), which need :func:`build`.
  """
  method_name = config.sparse.method
  if method_name in optimizers.STATIC_SPARSE or method_name in optimizers.ROUND_BASED_SPARSE:
    raise ValueError(f"sparse.method={method_name} computes its mask from the weights: use build")
  model, chain, method = configure(config, spec, steps_per_epoch)
  variables = jax.eval_shape(_init_fn(model, spec), jax.random.key(config.seed))
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optimizers.sparse_chain(chain, method, params)
  noisy = bool(config.dataset.label_noise)
  state = jax.eval_shape(
    lambda p, b: steps.initial_state(p, tx.init(p), b, label_noise=noisy), params, batch_stats
  )
  return model, tx, state


def train_step_fn(
  config: ml_collections.ConfigDict, model, tx: optax.GradientTransformationExtraArgs
) -> Callable[[dict, dict], dict]:
  """The run's training step ``(state, batch) -> state``, not jitted (``train_run`` compiles
  it with its shardings): the head's per-example inputs, accumulation and probe fraction from
  ``config``."""
  batch_losses = optimizers.HEADS[config.optimizer.name].batch_losses(config.optimizer)
  return steps.make_train_step(
    model,
    tx,
    config.seed,
    batch_losses,
    config.accumulation_steps,
    probe_fraction=config.optimizer.probe_fraction,
  )


def train_run(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  resume: bool = False,
  step_hook: Callable[[int], None] | None = None,
  initial: dict[str, Any] | None = None,
  weight_mask: Any = None,
  state_hook: Callable[[int, dict], None] | None = None,
) -> dict[str, Any]:
  """One training run, evaluating every epoch; returns the final metrics.

  Args:
    config: see ``experiments/configs/default.py`` for every field.
    workdir: where ``config.json``, ``metrics.jsonl``, ``checkpoints/`` and ``tensorboard/`` go.
    resume: continue from the latest checkpoint in ``workdir`` (its config must match).
    step_hook: called with the global step after each step (tests use it to interrupt a run).
    initial, weight_mask: an LTH round's start (the model's variables) and its fixed mask.
    state_hook: called with ``(step, state)`` at the start and after each step (LTH keeps the
      weights of its rewind step).

  Returns:
    The last eval record (``test_accuracy``, ``test_loss``, ...), its ``params``, and
    ``corrupted`` results when ``config.dataset.eval_corrupted``.

  Raises:
    ConfigError: bad names/ranges, or an unusable workdir (before anything is compiled/written).
    input_pipeline.DataMissingError: the data is missing and cannot be fetched offline.
  """
  config = ml_collections.ConfigDict(config.to_dict())  # A private copy.
  validate_config(config)
  # The library's checks before any data is read (ImageNet's loader takes minutes). The
  # schedule's length changes none of them, so one step per epoch stands in for the real count.
  configure(config, input_pipeline.SPECS[config.dataset.name], steps_per_epoch=1)
  has_ckpt = check_workdir(config, workdir, resume)
  # Every process has read the workdir before process 0 writes to it.
  multihost.barrier("check_workdir")
  data_dir = config.dataset.data_dir or input_pipeline.default_data_dir()
  spec, train_split, test_split, batches = multihost.main_first(
    "load_run_data",
    lambda: input_pipeline.load_run_data(
      config, data_dir, jax.process_index(), jax.process_count()
    ),
  )
  steps_per_epoch = batches.steps_per_epoch
  total_steps = config.num_epochs * steps_per_epoch
  mesh = multihost.data_mesh()
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
  model, tx, state = build(
    config, spec, train_split, steps_per_epoch, replicated, weight_mask, initial
  )

  # Steps and state.
  is_main = multihost.is_main()
  os.makedirs(workdir, exist_ok=True)
  writer = MetricWriter(workdir, enabled=is_main, tensorboard=config.tensorboard)
  ckpt, start_step, data_state = Checkpoints(workdir, config), 0, None
  if has_ckpt and ckpt.latest_step() is not None:
    # The newest checkpoint that restores; newer damaged ones are set aside (never deleted).
    state, data_state, unreadable = ckpt.restore_newest(state)
    start_step = int(jax.device_get(state["step"]))
    if unreadable:
      if is_main:
        newer = [s for s in ckpt.manager.all_steps() if s > start_step]
        where = ckpt.set_aside(newer)
        for line in unreadable:
          print(f"warning: checkpoint {line} does not restore; moved to {where}", flush=True)
      multihost.barrier("set_aside")
      ckpt.reload()
    if is_main:
      print(f"Resumed from step {start_step} of {total_steps} in {workdir}", flush=True)
  elif is_main:  # A new run, or a resumed one killed before its first checkpoint: start over.
    write_config(config, workdir)
  if is_main and train_split.clean_labels is not None:  # Which examples the run's noise flipped.
    noisy = label_noise.NoisyLabels(
      train_split.labels, np.flatnonzero(train_split.labels != train_split.clean_labels)
    )
    label_noise.write_record(workdir, config, train_split.clean_labels, noisy)
  writer.truncate_after(start_step)
  t0 = time.perf_counter()  # Compile ahead of time so timings exclude compilation.
  example = to_global(batches.batch(start_step % max(total_steps, 1)), batch_sharding)
  train_step = (
    jax.jit(
      train_step_fn(config, model, tx),
      in_shardings=(replicated, batch_sharding),
      out_shardings=replicated,
      donate_argnums=0,
    )
    .lower(state, example)
    .compile()
  )
  eval_step = jax.jit(steps.make_eval_step(model), out_shardings=replicated)
  # The evaluation split: the test set, or the last dataset.validation_size training examples.
  split_name = "validation" if config.dataset.validation_size else "test"
  if is_main:
    n_params, sizes = models.count_params(state["params"]), (train_split.size, test_split.size)
    compile_s = time.perf_counter() - t0
    print(
      metrics.start_line(config, n_params, sizes, split_name, steps_per_epoch, compile_s),
      flush=True,
    )

  def evaluate_at(step: int, epoch: float) -> dict[str, Any]:
    return {
      "kind": "eval",
      "step": step,
      "epoch": epoch,
      **evaluate(eval_step, state, test_split, spec, config, batch_sharding, split_name),
    }

  # The loop.
  if state_hook is not None:
    state_hook(start_step, state)
  schedule = optimizers.learning_rate_schedule(config, steps_per_epoch)
  last_eval: dict[str, Any] = {}
  step = start_step
  data = batches.iterator(start_step, total_steps, state=data_state)
  while step < total_steps:
    epoch = step // steps_per_epoch
    epoch_end = (epoch + 1) * steps_per_epoch
    bar = None
    if config.progress_bar and is_main:
      from tqdm.auto import tqdm

      bar = tqdm(
        total=steps_per_epoch,
        initial=step - epoch * steps_per_epoch,
        leave=False,
        desc=f"epoch {epoch + 1}/{config.num_epochs}",
      )
    # Training time is wall time from the epoch's start to its last step's completion, less
    # evaluations and checkpoints: windows are contiguous (a log's host work counts in the next
    # one) and every clock read at a boundary first waits for the steps dispatched so far, so
    # the figure does not depend on log_every_steps (JAX dispatches asynchronously).
    epoch_time, window_start, window_steps = 0.0, time.perf_counter(), 0
    # A run resumed mid-epoch times only the steps after its checkpoint: say so in the records.
    timing = {"train_epoch_time_partial": step != epoch * steps_per_epoch}
    while step < epoch_end:
      state = train_step(state, to_global(next(data), batch_sharding))
      step, window_steps = step + 1, window_steps + 1
      if bar is not None:
        bar.update(1)
      if state_hook is not None:
        state_hook(step, state)
      if step_hook is not None:
        step_hook(step)
      if (step - epoch * steps_per_epoch) % config.log_every_steps == 0 or step == epoch_end:
        jax.block_until_ready(state)
        now = time.perf_counter()
        elapsed = now - window_start
        epoch_time += elapsed
        lr, images_per_sec = float(schedule(step - 1)), window_steps * config.batch_size / elapsed
        record = metrics.train_record(state, step, steps_per_epoch, lr, images_per_sec)
        writer.write(record)
        if bar is not None:
          bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}")
        zeros = steps.zero_accumulators(label_noise=bool(config.dataset.label_noise))
        state = {**state, "acc": jax.device_put(zeros, replicated)}
        window_start, window_steps = now, 0
      if config.eval_every_steps and step % config.eval_every_steps == 0 and step != epoch_end:
        jax.block_until_ready(state)  # The steps dispatched so far count as training time.
        t_eval = time.perf_counter()
        interim = evaluate_at(step, round(step / steps_per_epoch, 6))
        interim["train_epoch_time_s"] = epoch_time + t_eval - window_start  # The epoch so far.
        interim.update(timing)
        interim["eval_time_s"] = time.perf_counter() - t_eval
        window_start += interim["eval_time_s"]  # Evaluation is not training time.
        writer.write(interim)
      if step == epoch_end:
        t_eval = time.perf_counter()
        last_eval = {**evaluate_at(step, epoch + 1), "train_epoch_time_s": epoch_time, **timing}
        last_eval["eval_time_s"] = time.perf_counter() - t_eval
        writer.write(last_eval)
        if bar is not None:
          bar.close()
        if is_main:
          line = metrics.epoch_line(
            config, record, last_eval, split_name, steps_per_epoch, epoch_time
          )
          print(line, flush=True)
      if step % config.checkpoint_every_steps == 0 or step == total_steps:
        jax.block_until_ready(state)  # The steps so far are training time, the save is not.
        t_save = time.perf_counter()
        ckpt.save(step, state, data.get_state())
        window_start += time.perf_counter() - t_save
  data.close()  # Stops its worker processes (after an exception, grain's finaliser does).
  ckpt.wait()

  if not last_eval:  # Resumed a finished run: evaluate its final state.
    last_eval = evaluate_at(step, config.num_epochs)
  if config.dataset.eval_corrupted:
    last_eval["corrupted"] = evaluate_corrupted(
      eval_step, state, config, data_dir, batch_sharding, writer, step
    )
  writer.close()
  if is_main:
    print(f"final {split_name} accuracy: {last_eval[split_name + '_accuracy']:.4f}", flush=True)
  last_eval["params"] = state["params"]
  return last_eval
