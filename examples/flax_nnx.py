"""A Flax NNX classifier trained with a zosam_jax head through ``nnx.Optimizer``.

The usual NNX script: a CNN module (with BatchNorm), an ``nnx.Optimizer``, one ``nnx.jit``
training step, an epoch over shuffled batches, an evaluation. Only the optimizer is different: a
head (``--head``, e.g. ``zo_sam``) first in the optax chain, and the step calls
``zosam_jax.flax_utils.nnx_apply_loss(optimizer, model, loss)`` where plain SGD takes
``nnx.value_and_grad`` and calls ``optimizer.update(model, grads)``. By default it trains one
epoch on the first 10,000 Fashion-MNIST training images and prints the test loss before and
after. The data, the flags and the menu of heads are those of ``flax_linen.py``, which must sit
beside this file (a script's own folder is on its import path).

  python examples/flax_nnx.py --head zo_sam
  python examples/flax_nnx.py --head sam --steps 20 --data_dir FOLDER

Against the plain-SGD version of this script, these lines differ (marked ``# head``):

  - tx = optax.sgd(args.learning_rate, momentum=0.9)
  + tx = optax.chain(head, optax.sgd(args.learning_rate, momentum=0.9))

  - loss, grads = nnx.value_and_grad(loss_fn)(model)
  - optimizer.update(model, grads)
  + loss, _ = flax_utils.nnx_apply_loss(optimizer, model, loss_fn, **extra)

``make_head`` (imported from ``flax_linen.py``, as are the data, the shuffled batches, the
evaluation loop and the report) and ``extra`` (empty except for ESAM, which also takes
per-example losses) are the additions. The head computes its gradients from
``loss_fn`` itself; the model's BatchNorm statistics and RNG state follow its exact-gradient pass
(at ``theta + eps`` for the SAM family), and zeroth-order probes never move them.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from zosam_jax import flax_utils

from flax_linen import (
  evaluate_in_batches,
  load_data,
  make_head,
  parse_args,
  report,
  schedule,
  shuffled_batches,
)


class CNN(nnx.Module):
  """conv-BN-ReLU-pool twice, then two dense layers."""

  def __init__(self, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(1, 32, (3, 3), use_bias=False, rngs=rngs)
    self.bn1 = nnx.BatchNorm(32, momentum=0.9, rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), use_bias=False, rngs=rngs)
    self.bn2 = nnx.BatchNorm(64, momentum=0.9, rngs=rngs)
    self.dense1 = nnx.Linear(7 * 7 * 64, 256, rngs=rngs)
    self.dense2 = nnx.Linear(256, 10, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2)):
      x = nnx.avg_pool(nnx.relu(bn(conv(x))), (2, 2), strides=(2, 2))
    x = nnx.relu(self.dense1(x.reshape((x.shape[0], -1))))
    return self.dense2(x)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def make_train_step(head: str):
  @nnx.jit
  def train_step(model: CNN, optimizer: nnx.Optimizer, images: jax.Array, labels: jax.Array):
    def per_example(model, batch):
      return cross_entropy(model(batch["image"]), batch["label"])

    def loss_fn(model):
      return per_example(model, {"image": images, "label": labels}).mean()

    extra = {}
    if head == "esam":  # ESAM picks the examples whose loss rises most at theta + eps.
      extra = {
        "per_example_loss_fn": flax_utils.nnx_loss_fn(model, per_example),
        "batch": {"image": images, "label": labels},
      }
    loss, _ = flax_utils.nnx_apply_loss(optimizer, model, loss_fn, **extra)  # head
    return loss

  return train_step


@nnx.jit
def eval_step(model: CNN, images: jax.Array, labels: jax.Array):
  logits = model(images)
  return cross_entropy(logits, labels).sum(), (jnp.argmax(logits, -1) == labels).sum()


def evaluate(model: CNN, images: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  model.eval()  # BatchNorm reads its running statistics
  result = evaluate_in_batches(functools.partial(eval_step, model), images, labels)
  model.train()
  return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv, __doc__)
  train_images, train_labels, test_images, test_labels = load_data(args)
  _, total_steps = schedule(args, len(train_labels))

  head = make_head(args.head, args, total_steps)
  tx = optax.chain(head, optax.sgd(args.learning_rate, momentum=0.9))  # head

  @nnx.jit  # one compile for the initialisers, not one per operation
  def create():
    model = CNN(nnx.Rngs(args.seed))
    return model, nnx.Optimizer(model, tx, wrt=nnx.Param)

  model, optimizer = create()
  train_step = make_train_step(args.head)

  before = evaluate(model, test_images, test_labels)
  print(f"{args.head}: before training: test loss {before['loss']:.4f}", flush=True)
  for rows in shuffled_batches(args, len(train_labels), total_steps):
    loss = train_step(model, optimizer, train_images[rows], train_labels[rows])
  after = evaluate(model, test_images, test_labels)
  return report(args.head, before, after, total_steps, loss)


if __name__ == "__main__":
  main()
