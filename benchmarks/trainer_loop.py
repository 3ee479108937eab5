"""The trainer's loop against its own step: what the input pipeline, logging and host work add.

For each head (RigL 90%, the small CNN on Fashion-MNIST, batch 128), in one process:

* ``step``: the trainer's compiled training step (``steps.make_train_step`` as ``train_run``
  builds it) run alone on one device-resident batch, blocks of ``--block`` consecutive steps fed
  their own output (so RigL's mask update every 100 steps is in the block, as in an epoch),
  median over ``--rounds`` blocks after a warm-up block, per step;
* for every ``--log-every`` interval, one epoch of ``train.train_run``: ``reported`` is its
  ``train_epoch_time_s``; ``wall`` is the clock from the loop's start to the last step's
  completion (read in ``state_hook``, after ``jax.block_until_ready``; the epoch's evaluation
  and its one checkpoint come after that point).

Printed: ``wall / (steps x step)``, the loop's overhead over its steps, and
``reported / wall``. Run it with nothing else on the machine.

    python -m benchmarks.trainer_loop [--heads sgd zo_sam] [--log-every 10 50 468]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax
import ml_collections
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from benchmarks import timing
from experiments import input_pipeline, multihost, train
from experiments.configs import fashion_mnist_default
from experiments.evaluation import to_global


def config_for(head: str, log_every: int) -> ml_collections.ConfigDict:
  config = fashion_mnist_default.get_config()
  config.optimizer.name = head
  config.sparse.method, config.sparse.sparsity = "rigl", 0.9
  config.num_epochs = 1
  config.log_every_steps = log_every
  config.checkpoint_every_steps = 10**9  # One checkpoint, after the last step.
  config.progress_bar = False
  return config


def trainer_step(config: ml_collections.ConfigDict):
  """``(step, state, batch)``: the trainer's compiled training step of ``config`` as
  ``train_run`` builds it (not yet compiled), its initial state and the run's first batch, on the
  device."""
  data_dir = config.dataset.data_dir or input_pipeline.default_data_dir()
  spec, train_split, _, batches = input_pipeline.load_run_data(config, data_dir)
  mesh = multihost.data_mesh()
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
  model, tx, state = train.build(config, spec, train_split, batches.steps_per_epoch, replicated)
  batch = to_global(batches.batch(0), batch_sharding)
  step = jax.jit(train.train_step_fn(config, model, tx), out_shardings=replicated, donate_argnums=0)
  return step, state, batch


def step_time(config: ml_collections.ConfigDict, block: int, rounds: int) -> float:
  """Seconds per step of the trainer's compiled step alone (see the module docstring)."""
  step, state, batch = trainer_step(config)
  times = []
  for r in range(rounds + 1):  # The first block compiles and warms up.
    t0 = time.perf_counter()
    for _ in range(block):
      state = step(state, batch)
    jax.block_until_ready(state)
    if r:
      times.append((time.perf_counter() - t0) / block)
  return statistics.median(times)


def epoch_times(config: ml_collections.ConfigDict) -> tuple[float, float, int]:
  """``(reported, wall, steps)`` of one epoch of the trainer."""
  marks: dict[str, float] = {}
  total = {}

  def state_hook(step: int, state: dict) -> None:
    if "start" not in marks:
      marks["start"] = time.perf_counter()
    total["steps"] = step
    if step == total.get("end"):
      jax.block_until_ready(state)
      marks["end"] = time.perf_counter()

  data_dir = config.dataset.data_dir or input_pipeline.default_data_dir()
  total["end"] = input_pipeline.load_run_data(config, data_dir)[3].steps_per_epoch
  with tempfile.TemporaryDirectory() as workdir:
    train.train_run(config, workdir, state_hook=state_hook)
    (evaluated,) = [r for r in train.read_metrics(workdir) if r["kind"] == "eval"]
  return evaluated["train_epoch_time_s"], marks["end"] - marks["start"], total["end"]


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--heads", nargs="+", default=["sgd", "zo_sam"])
  parser.add_argument("--log-every", nargs="+", type=int, default=[10, 50, 468])
  parser.add_argument("--block", type=int, default=100, help="steps per timed block")
  timing.timing_flags(parser, rounds=3)
  args = parser.parse_args(argv)
  print(timing.device_line())
  print(
    "| head | log every | steps | step ms (alone) | steps x step s | wall s | reported s "
    "| wall / steps x step | reported / wall |"
  )
  print("|---|---|---|---|---|---|---|---|---|")
  for head in args.heads:
    per_step = step_time(config_for(head, 50), args.block, args.rounds)
    for log_every in args.log_every:
      reported, wall, n = epoch_times(config_for(head, log_every))
      print(
        f"| {head} | {log_every} | {n} | {1e3 * per_step:.1f} | {n * per_step:.1f} | {wall:.1f} "
        f"| {reported:.1f} | {wall / (n * per_step):.3f} | {reported / wall:.3f} |",
        flush=True,
      )


if __name__ == "__main__":
  main()
