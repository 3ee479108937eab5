"""A Flax linen classifier trained with a zosam_jax head through ``TrainState``.

The usual linen script: a CNN (with BatchNorm), a ``flax.training.train_state.TrainState``, one
jitted training step, an epoch over shuffled batches, an evaluation. Only the optimizer is
different: a head (``--head``, e.g. ``zo_sam``) first in the optax chain, and the step calls
``zosam_jax.flax_utils.apply_loss(state, loss_fn)`` where plain SGD calls
``state.apply_gradients(grads=...)``. By default it trains one epoch on the first 10,000
Fashion-MNIST training images and prints the test loss before and after.

  python examples/flax_linen.py --head zo_sam
  python examples/flax_linen.py --head sam --steps 20 --data_dir FOLDER

It needs only zosam_jax, optax and Flax. The data are the four Fashion-MNIST idx ``.gz`` files
of ``--data_dir`` (default: the folder of Debian's ``dataset-fashion-mnist`` package); where
they are missing it says so and trains on synthetic images instead (a noisy template per class).

Against the plain-SGD version of this script, these lines differ (marked ``# head``):

  - tx = optax.sgd(args.learning_rate, momentum=0.9)
  + tx = optax.chain(head, optax.sgd(args.learning_rate, momentum=0.9))

  - (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  - return state.apply_gradients(grads=grads, batch_stats=stats), loss
  + state, loss, stats = flax_utils.apply_loss(state, loss_fn, **extra)
  + return state.replace(batch_stats=stats), loss

``make_head`` (the menu of heads) and ``extra`` (empty except for ESAM, which also takes
per-example losses) are the additions.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import train_state

import zosam_jax as zj
from zosam_jax import flax_utils

# Where Debian's dataset-fashion-mnist package puts the idx files.
DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
IDX_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's pixel mean and deviation (of values in [0, 1])

HEADS = (
  "sgd",
  "sam",
  "zo_sam",
  "random_perturbation",
  "sparse_sam",
  "looksam",
  "gsam",
  "esam",
  "adaptive_zo_sam",
)


def make_head(name: str, args: argparse.Namespace, total_steps: int):
  """The head ``name``; every one is built with ``has_aux=True`` (the aux: BatchNorm stats)."""
  rho, seed = args.rho, args.seed
  return {
    "sgd": lambda: zj.exact_gradient(has_aux=True),
    "sam": lambda: zj.sam(rho, has_aux=True),
    "zo_sam": lambda: zj.zo_sam(rho, num_directions=4, seed=seed, has_aux=True),
    "random_perturbation": lambda: zj.random_perturbation(rho, seed=seed, has_aux=True),
    "sparse_sam": lambda: zj.sparse_sam(
      rho, 0.5, mask_method="dynamic", update_every=10, end_step=total_steps, has_aux=True
    ),
    "looksam": lambda: zj.looksam(rho, 5, has_aux=True),
    "gsam": lambda: zj.gsam(rho, has_aux=True),
    "esam": lambda: zj.esam(rho, seed=seed, has_aux=True),
    "adaptive_zo_sam": lambda: zj.adaptive_zo_sam(rho, 8, seed=seed, has_aux=True),
  }[name]()


class CNN(nn.Module):
  """conv-BN-ReLU-pool twice, then two dense layers."""

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for features in (32, 64):
      x = nn.Conv(features, (3, 3), use_bias=False)(x)
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
      x = nn.avg_pool(nn.relu(x), (2, 2), strides=(2, 2))
    x = nn.relu(nn.Dense(256)(x.reshape((x.shape[0], -1))))
    return nn.Dense(10)(x)


class TrainState(train_state.TrainState):
  batch_stats: Any


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_train_step(head: str):
  @jax.jit
  def train_step(state: TrainState, images: jax.Array, labels: jax.Array):
    def per_example(params, batch):
      logits, new = state.apply_fn(
        {"params": params, "batch_stats": state.batch_stats},
        batch["image"],
        train=True,
        mutable=["batch_stats"],
      )
      return cross_entropy(logits, batch["label"]), new["batch_stats"]

    def loss_fn(params):
      losses, stats = per_example(params, {"image": images, "label": labels})
      return losses.mean(), stats

    extra = {}
    if head == "esam":  # ESAM picks the examples whose loss rises most at theta + eps.
      extra = {"per_example_loss_fn": per_example, "batch": {"image": images, "label": labels}}
    state, loss, stats = flax_utils.apply_loss(state, loss_fn, **extra)  # head
    return state.replace(batch_stats=stats), loss  # head

  return train_step


@jax.jit
def eval_step(state: TrainState, images: jax.Array, labels: jax.Array):
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = state.apply_fn(variables, images, train=False)
  return cross_entropy(logits, labels).sum(), (jnp.argmax(logits, -1) == labels).sum()


def evaluate(state: TrainState, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  return evaluate_in_batches(functools.partial(eval_step, state), images, labels)


def evaluate_in_batches(eval_fn, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """Mean loss and accuracy over batches of 500; ``eval_fn(images, labels)`` gives the summed
  loss and the number of correct predictions of one batch."""
  loss, correct = 0.0, 0
  for i in range(0, len(labels), 500):
    batch_loss, batch_correct = eval_fn(images[i : i + 500], labels[i : i + 500])
    loss, correct = loss + float(batch_loss), correct + int(batch_correct)
  return {"loss": loss / len(labels), "accuracy": correct / len(labels)}


def read_idx(path: str, count: int) -> np.ndarray:
  """The first ``count`` entries of a gzipped idx file of unsigned bytes.

  Layout: two zero bytes, the type code 0x08, the number of dimensions, one big-endian int32 per
  dimension, then the values.
  """
  with gzip.open(path, "rb") as f:
    data = f.read()
  if data[:3] != b"\x00\x00\x08":
    raise SystemExit(f"{path} is not an idx file of unsigned bytes")
  shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
  array = np.frombuffer(data, np.uint8, offset=4 + 4 * len(shape)).reshape(shape)
  return array[:count]


def synthetic(split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
  """``count`` images ``[28, 28]`` in [0, 255]: one fixed random template per class plus noise
  (learnable in a few steps, unlike pure noise); the two splits draw different noise."""
  templates = np.random.default_rng(0).uniform(0, 255, (10, 28, 28))
  rng = np.random.default_rng(1 if split == "train" else 2)
  labels = rng.integers(0, 10, count).astype(np.uint8)
  images = templates[labels] + rng.normal(0, 64, (count, 28, 28))
  return np.clip(images, 0, 255).astype(np.uint8), labels


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, ...]:
  """Train images, train labels, test images, test labels: the first ``--train_subset`` and
  ``--test_subset`` examples, images normalised to ``[N, 28, 28, 1]``."""
  names = [name for split in ("train", "test") for name in IDX_FILES[split]]
  missing = [name for name in names if not os.path.isfile(os.path.join(args.data_dir, name))]
  if missing:
    lacks = "no Fashion-MNIST idx files" if len(missing) == len(names) else ", ".join(missing)
    print(
      f"note: {args.data_dir}: {lacks} (apt-get install dataset-fashion-mnist, or --data_dir "
      "FOLDER); training on synthetic data",
      flush=True,
    )
  out = []
  for split, count in (("train", args.train_subset), ("test", args.test_subset)):
    if missing:
      images, labels = synthetic(split, count)
    else:
      images, labels = (read_idx(os.path.join(args.data_dir, n), count) for n in IDX_FILES[split])
    out += [((images.astype(np.float32) / 255.0 - MEAN) / STD)[..., None], labels.astype(np.int32)]
  return tuple(out)


def schedule(args: argparse.Namespace, num_train: int) -> tuple[int, int]:
  """``(steps_per_epoch, total_steps)``; ``--steps 0`` is one epoch."""
  steps_per_epoch = num_train // args.batch_size
  if steps_per_epoch < 1 or args.steps < 0:
    raise SystemExit(
      f"--batch_size {args.batch_size} must not exceed the {num_train} training images, and "
      f"--steps must be >= 0 (got {args.steps})"
    )
  return steps_per_epoch, args.steps or steps_per_epoch


def shuffled_batches(args: argparse.Namespace, num_train: int, total_steps: int):
  """The rows of each of ``total_steps`` batches: a fresh permutation every epoch."""
  steps_per_epoch, _ = schedule(args, num_train)
  rng = np.random.default_rng(args.seed)
  for step in range(total_steps):
    if step % steps_per_epoch == 0:
      order = rng.permutation(num_train)
    yield order[(step % steps_per_epoch) * args.batch_size :][: args.batch_size]


def report(head: str, before: dict, after: dict, steps: int, loss: jax.Array) -> dict[str, Any]:
  """Prints the test results after training against those before; returns them."""
  print(
    f"{head}: after {steps} steps: test loss {after['loss']:.4f} "
    f"(accuracy {before['accuracy']:.4f} -> {after['accuracy']:.4f}; last training loss "
    f"{float(loss):.4f})"
  )
  return {"before": before, "after": after, "steps": steps}


def parse_args(argv: list[str] | None, doc: str = __doc__) -> argparse.Namespace:
  """The flags; ``doc``: the docstring whose first line ``--help`` shows."""
  parser = argparse.ArgumentParser(description=doc.split("\n")[0])
  parser.add_argument("--head", choices=HEADS, default="zo_sam")
  parser.add_argument("--steps", type=int, default=0, help="training steps (0: one epoch)")
  parser.add_argument("--train_subset", type=int, default=10_000, help="first N training images")
  parser.add_argument("--test_subset", type=int, default=2_000, help="first N test images")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--learning_rate", type=float, default=0.05)
  parser.add_argument("--rho", type=float, default=0.05)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument(
    "--data_dir", "--data-dir", default=DEBIAN_DIR, help="folder of the Fashion-MNIST idx files"
  )
  args = parser.parse_args(argv)
  if min(args.train_subset, args.test_subset) < 1:
    parser.error("--train_subset and --test_subset must be >= 1")
  return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  train_images, train_labels, test_images, test_labels = load_data(args)
  _, total_steps = schedule(args, len(train_labels))

  model = CNN()
  init = jax.jit(lambda key, x: model.init(key, x, train=False))  # one compile, not one per op
  variables = init(jax.random.key(args.seed), train_images[:1])
  head = make_head(args.head, args, total_steps)
  tx = optax.chain(head, optax.sgd(args.learning_rate, momentum=0.9))  # head
  state = jax.jit(
    lambda v: TrainState.create(
      apply_fn=model.apply, params=v["params"], tx=tx, batch_stats=v["batch_stats"]
    )
  )(variables)
  train_step = make_train_step(args.head)

  before = evaluate(state, test_images, test_labels)
  print(f"{args.head}: before training: test loss {before['loss']:.4f}", flush=True)
  for rows in shuffled_batches(args, len(train_labels), total_steps):
    state, loss = train_step(state, train_images[rows], train_labels[rows])
  after = evaluate(state, test_images, test_labels)
  return report(args.head, before, after, total_steps, loss)


if __name__ == "__main__":
  main()
