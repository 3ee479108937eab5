"""Training-input throughput: the grain pipeline against the one it replaced, in ONE process.

1. **ImageNet-shaped path** (``imagenet2012`` spec: random-resized-crop to 224, flip, then
   normalisation) on ``tfds.testing.mock_data``. The mock source holds ``--pool`` distinct
   JPEG-encoded images of random sizes in ``--image-sizes`` (ImageNet's are mostly 300-500
   pixels a side) and decodes one per read, as tfds' image feature does, so decoding is in the
   cost. Rows: images/s of the pre-grain batches (``benchmarks/_pre_grain_batches.py``: one
   background thread, 2 batches ahead) and of ``input_pipeline.TrainBatches`` with each
   ``--workers`` count (0: threads of this process). Per pipeline, one iterator: after
   ``--warmup-batches`` untimed batches (worker start-up, full buffers), the median of
   ``--rounds`` consecutive windows of ``--batches`` batches of ``--batch-size``; nothing else
   runs meanwhile, so no window starts from a buffer filled while another pipeline was timed.
2. **CNN epoch on Fashion-MNIST** (the trainer's default: ``cnn``, SGD, batch 128, real data
   from the Debian package, built into the tfds data_dir on first use as the trainer does):
   seconds of ``--cnn-steps`` training steps (0: one full epoch, 468 steps) fed by each
   pipeline's fresh iterator, the compiled step shared; median of ``--cnn-rounds`` after
   ``--cnn-warmup`` untimed rounds, the two pipelines alternating round by round so that a
   drifting machine load hits both alike.

Each table gives the ratio to the pre-grain pipeline. The output starts with the device line
and this host's CPU count (the input pipeline runs on the CPU).

Usage (a quiet machine; 4 workers want 4 free cores besides the training process):
  python -m benchmarks.input_throughput
  python -m benchmarks.input_throughput --workers 0 4 8 --rounds 7 --json throughput.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from collections.abc import Callable, Iterator

import numpy as np

from benchmarks._pre_grain_batches import PreGrainBatches
from experiments import input_pipeline as ip


class MockJpegSource:
  """A random-access source of ``{"image", "label"}`` records decoding JPEG bytes on each read."""

  def __init__(self, size: int, pool: int, sizes: tuple[int, int], seed: int = 0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    self._size, self._jpegs = size, []
    for _ in range(pool):
      h, w = rng.integers(sizes[0], sizes[1] + 1, size=2)
      coarse = rng.integers(0, 256, (h // 16 + 1, w // 16 + 1, 3), np.uint8)  # Smooth content,
      image = Image.fromarray(coarse).resize((int(w), int(h)), Image.BILINEAR)  # as photos.
      buffer = io.BytesIO()
      image.save(buffer, format="JPEG", quality=90)
      self._jpegs.append(buffer.getvalue())

  def __len__(self) -> int:
    return self._size

  def __getitem__(self, index: int) -> dict:
    from PIL import Image

    jpeg = self._jpegs[index % len(self._jpegs)]
    image = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    return {"image": image, "label": index % 1000}

  def __getitems__(self, indices: list[int]) -> list[dict]:
    return [self[i] for i in indices]


def imagenet_split(examples: int, pool: int, sizes: tuple[int, int]) -> ip.Split:
  """The ``imagenet2012`` train split as the trainer opens it, under ``tfds.testing.mock_data``."""
  import tensorflow_datasets as tfds

  source = MockJpegSource(examples, pool, sizes)
  with tfds.testing.mock_data(
    num_examples=examples,
    policy=tfds.testing.MockPolicy.USE_CODE,
    as_data_source_fn=lambda *args, **kwargs: source,
  ):
    return ip.load_split("imagenet2012", "train", "/nonexistent")


def _iterate(pipeline: PreGrainBatches | ip.TrainBatches, end: int):
  """The batches of steps ``[0, end)`` (a generator or a ``TrainIterator``; both close)."""
  if isinstance(pipeline, PreGrainBatches):
    return pipeline.iterate(0, end)
  return pipeline.iterator(0, end)


def _window(iterator: Iterator, batches: int) -> float:
  t0 = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return time.perf_counter() - t0


def _interleaved(
  windows: dict[str, Callable[[], float]], warmup: int, rounds: int
) -> dict[str, float]:
  """Median seconds of each window function, alternating them round by round."""
  times: dict[str, list[float]] = {name: [] for name in windows}
  for r in range(warmup + rounds):
    for name, window in windows.items():
      elapsed = window()
      if r >= warmup:
        times[name].append(elapsed)
  return {name: statistics.median(t) for name, t in times.items()}


def _steady_windows(iterator: Iterator, warmup: int, batches: int, rounds: int) -> list[float]:
  """Seconds of ``rounds`` consecutive windows of ``batches`` after ``warmup`` untimed batches.

  Consecutive, so every window waits on the pipeline: none starts from a buffer that filled
  while something else ran.
  """
  for _ in range(warmup):  # Starts the thread or worker processes and fills their buffers.
    next(iterator)
  return [_window(iterator, batches) for _ in range(rounds)]


def imagenet_throughput(args: argparse.Namespace) -> list[dict]:
  """Images/s of each pipeline on the ImageNet-shaped path."""
  spec, aug = ip.SPECS["imagenet2012"], ip.Augment(flip=True)
  end = args.warmup_batches + args.batches * args.rounds
  split = imagenet_split(end * args.batch_size, args.pool, tuple(args.image_sizes))
  pipelines = {"pre-grain": PreGrainBatches(split, spec, args.batch_size, 0, aug)}
  for w in args.workers:
    pipelines[f"grain, {w} workers"] = ip.TrainBatches(
      split, spec, args.batch_size, 0, aug, workers=w
    )
  med = {}
  for name, pipeline in pipelines.items():
    with contextlib.closing(_iterate(pipeline, end)) as it:
      med[name] = statistics.median(
        _steady_windows(it, args.warmup_batches, args.batches, args.rounds)
      )
  base = med["pre-grain"]
  return [
    {"pipeline": k, "images_per_s": args.batches * args.batch_size / t, "x_pre_grain": base / t}
    for k, t in med.items()
  ]


def _cnn_setup(steps: int):
  """``(train_step, state, batch_sharding, pipelines)``: the trainer's default CNN and SGD on
  Fashion-MNIST, compiled once, and the two pipelines over its training split."""
  import jax
  from jax.sharding import Mesh, NamedSharding
  from jax.sharding import PartitionSpec as P

  from experiments import optimizers, train
  from experiments import steps as steps_lib
  from experiments.configs import default
  from experiments.evaluation import to_global

  config = default.get_config()
  config.batch_size = 128
  data_dir = config.dataset.data_dir or ip.default_data_dir()
  spec, train_split, _, batches = ip.load_run_data(config, data_dir)
  mesh = Mesh(np.asarray(jax.devices()), ("batch",))
  replicated, batch_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P("batch"))
  model, tx, state = train.build(config, spec, train_split, batches.steps_per_epoch, replicated)
  losses = optimizers.HEADS[config.optimizer.name].batch_losses(config.optimizer)
  step_fn = steps_lib.make_train_step(model, tx, config.seed, losses)
  example = to_global(batches.batch(0), batch_sharding)
  train_step = (
    jax.jit(
      step_fn,
      in_shardings=(replicated, batch_sharding),
      out_shardings=replicated,
      donate_argnums=0,
    )
    .lower(state, example)
    .compile()
  )
  old = PreGrainBatches(train_split, spec, config.batch_size, config.seed, ip.Augment())
  steps = steps or batches.steps_per_epoch
  return train_step, state, batch_sharding, {"pre-grain": old, "grain, 0 workers": batches}, steps


def cnn_epoch(args: argparse.Namespace) -> list[dict]:
  """Seconds of ``--cnn-steps`` CNN training steps fed by each pipeline."""
  import jax

  from experiments.evaluation import to_global

  train_step, state, sharding, pipelines, steps = _cnn_setup(args.cnn_steps)
  holder = {"state": state}

  def window(pipeline) -> float:
    it = _iterate(pipeline, steps)
    s = holder["state"]
    t0 = time.perf_counter()
    for batch in it:
      s = train_step(s, to_global(batch, sharding))
    jax.block_until_ready(s)
    elapsed = time.perf_counter() - t0
    holder["state"] = s
    it.close()
    return elapsed

  windows = {k: (lambda p=p: window(p)) for k, p in pipelines.items()}
  med = _interleaved(windows, args.cnn_warmup, args.cnn_rounds)
  base = med["pre-grain"]
  return [
    {"pipeline": k, "steps": steps, "seconds": t, "x_pre_grain": t / base} for k, t in med.items()
  ]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--parts", nargs="+", choices=["imagenet", "cnn"], default=["imagenet", "cnn"]
  )
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 4])
  parser.add_argument("--batch-size", type=int, default=64, help="ImageNet-shaped path")
  parser.add_argument("--batches", type=int, default=10, help="batches per timed window")
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument(
    "--warmup-batches",
    type=int,
    default=20,
    help="untimed batches before the windows (more than the workers' buffers hold)",
  )
  parser.add_argument("--pool", type=int, default=64, help="distinct mock JPEG images")
  parser.add_argument(
    "--image-sizes", type=int, nargs=2, default=[300, 500], metavar=("MIN", "MAX")
  )
  parser.add_argument("--cnn-steps", type=int, default=0, help="steps per CNN window (0: an epoch)")
  parser.add_argument("--cnn-rounds", type=int, default=3)
  parser.add_argument("--cnn-warmup", type=int, default=1)
  parser.add_argument("--json", help="also write the rows to this JSON file")
  args = parser.parse_args()
  if min(args.workers) < 0 or min(args.batch_size, args.batches, args.rounds, args.pool) < 1:
    parser.error("--workers must be >= 0; --batch-size, --batches, --rounds, --pool >= 1")
  from benchmarks.timing import device_line

  device = f"{device_line()} | {os.cpu_count()} CPU cores"
  print(device, flush=True)
  out: dict = {"device": device, "args": vars(args)}
  if "imagenet" in args.parts:
    out["imagenet"] = imagenet_throughput(args)
    print(f"\nImageNet-shaped path, batch {args.batch_size}, images {args.image_sizes} px (JPEG):")
    print("| pipeline | images/s | x pre-grain |\n|---|---|---|")
    for r in out["imagenet"]:
      print(f"| {r['pipeline']} | {r['images_per_s']:.0f} | {r['x_pre_grain']:.2f} |")
  if "cnn" in args.parts:
    out["cnn"] = cnn_epoch(args)
    steps = out["cnn"][0]["steps"]
    print(f"\nCNN on Fashion-MNIST, SGD, batch 128, {steps} steps (time; lower is better):")
    print("| pipeline | seconds | x pre-grain |\n|---|---|---|")
    for r in out["cnn"]:
      print(f"| {r['pipeline']} | {r['seconds']:.2f} | {r['x_pre_grain']:.2f} |")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=1)


if __name__ == "__main__":
  main()
