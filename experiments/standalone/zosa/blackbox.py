"""A black-box adaptation task on real data, in the spirit of black-box prompt tuning.

A small CNN (``experiments.models`` ``cnn``) is trained once on offline Fashion-MNIST with Adam
(``prepare_classifier``; cached in ``workdir``) and then frozen. The test images are corrupted
(a distribution shift: contrast reduced to ``contrast`` about each image's mean, plus Gaussian
noise of std ``noise_std`` in [0, 1] pixel units, clipped to [0, 1]; the noise is drawn once from
``seed``). The optimiser may only query the loss of the frozen model: it tunes a low-dimensional
vector ``z`` (``dim`` entries, start ``z = 0``), which a fixed random matrix ``P`` (``784 x dim``,
entries ``N(0, 1/dim)``, drawn from ``seed``) maps to an additive offset of the normalised input
image, shared by all images:

  loss(z) = mean cross-entropy of model(corrupt(x) + reshape(P z)) on the ``num_adapt`` labelled
            "support" images (the first of the shuffled corrupted test set),

exactly as black-box prompt tuning optimises a low-dimensional prompt projected into a language
model's input space (Sun et al., ICML 2022). Generalisation is measured on ``num_eval`` held-out
corrupted test images that the optimiser never queries.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import NamedTuple

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import input_pipeline, models

CLASSIFIER_FILE = "fmnist_cnn.msgpack"


class BlackBoxTask(NamedTuple):
  """Attributes:

  loss_fn: ``z [dim] -> float32`` mean cross-entropy on the support set (the only oracle).
  eval_fn: ``z -> (loss, accuracy)`` on the held-out corrupted images (never queried in training).
  z0: the start, zeros ``[dim]``.
  dim: ``len(z)``.
  info: dict with clean and corrupted accuracies of the frozen model and the task's settings.
  """

  loss_fn: Callable[[jax.Array], jax.Array]
  eval_fn: Callable[[jax.Array], tuple[jax.Array, jax.Array]]
  z0: jax.Array
  dim: int
  info: dict


def _normalize(images: np.ndarray) -> np.ndarray:
  spec = input_pipeline.SPECS["fashion_mnist"]
  return ((images - spec.mean[0]) / spec.std[0]).astype(np.float32)


def load_fashion_mnist(data_dir: str) -> dict[str, np.ndarray]:
  """uint8 images ``[N, 28, 28, 1]`` and int32 labels of both splits (built offline once)."""
  out = {}
  for split in ("train", "test"):
    s = input_pipeline.load_split("fashion_mnist", split, data_dir)
    out[f"{split}_images"], out[f"{split}_labels"] = s.images, s.labels
  return out


def prepare_classifier(
  workdir: str, data: dict[str, np.ndarray], *, epochs: int = 1, seed: int = 0
) -> tuple[flax.linen.Module, dict, float]:
  """Trains (or loads from ``workdir``) the frozen classifier; returns model, variables, clean
  test accuracy. Adam 1e-3, batch 128, ``epochs`` epochs; BatchNorm in eval mode afterwards."""
  model = models.create_model("cnn", 10)
  path = os.path.join(workdir, CLASSIFIER_FILE)
  x_train = _normalize(data["train_images"] / 255.0)
  y_train = data["train_labels"]
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 28, 28, 1)), train=False)
  if os.path.exists(path):
    with open(path, "rb") as f:
      variables = flax.serialization.from_bytes(variables, f.read())
  else:
    tx = optax.adam(1e-3)
    params, stats = variables["params"], variables["batch_stats"]
    opt = tx.init(params)

    @jax.jit
    def step(params, stats, opt, x, y):
      def loss_fn(p):
        logits, upd = model.apply(
          {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), upd

      (_, upd), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt = tx.update(grads, opt, params)
      return optax.apply_updates(params, updates), upd["batch_stats"], opt

    rng = np.random.default_rng(seed)
    t0 = time.time()
    for _ in range(epochs):
      order = rng.permutation(len(x_train))
      for i in range(len(order) // 128):
        idx = order[i * 128 : (i + 1) * 128]
        params, stats, opt = step(params, stats, opt, x_train[idx], y_train[idx])
    variables = {"params": params, "batch_stats": stats}
    os.makedirs(workdir, exist_ok=True)
    with open(path, "wb") as f:
      f.write(flax.serialization.to_bytes(variables))
    print(f"trained the frozen classifier in {time.time() - t0:.0f}s -> {path}", flush=True)
  x_test = _normalize(data["test_images"] / 255.0)
  acc = _accuracy(model, variables, x_test, data["test_labels"])
  return model, variables, acc


def _accuracy(model, variables, x, y, batch=2000) -> float:
  apply = jax.jit(lambda v, xb: model.apply(v, xb, train=False))
  correct = 0
  for i in range(0, len(x), batch):
    correct += int(np.sum(np.argmax(apply(variables, x[i : i + batch]), -1) == y[i : i + batch]))
  return correct / len(x)


def corrupt(images: np.ndarray, *, contrast: float, noise_std: float, seed: int) -> np.ndarray:
  """uint8 ``[N, H, W, C]`` -> float32 in [0, 1]: contrast about each image's mean, plus noise."""
  x = images.astype(np.float32) / 255.0
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  noise = np.random.default_rng(seed).normal(0.0, noise_std, x.shape).astype(np.float32)
  return np.clip((x - mean) * contrast + mean + noise, 0.0, 1.0)


def make_task(
  workdir: str,
  data_dir: str,
  *,
  dim: int = 100,
  num_adapt: int = 256,
  num_eval: int = 2000,
  contrast: float = 0.4,
  noise_std: float = 0.25,
  seed: int = 0,
  epochs: int = 1,
) -> BlackBoxTask:
  """Builds the black-box task (see the module docstring); trains the classifier on first use."""
  data = load_fashion_mnist(data_dir)
  model, variables, clean_acc = prepare_classifier(workdir, data, epochs=epochs)
  order = np.random.default_rng(seed).permutation(len(data["test_images"]))
  idx_adapt, idx_eval = order[:num_adapt], order[num_adapt : num_adapt + num_eval]
  shifted = _normalize(
    corrupt(data["test_images"], contrast=contrast, noise_std=noise_std, seed=seed + 1)
  )
  x_adapt, y_adapt = jnp.asarray(shifted[idx_adapt]), jnp.asarray(data["test_labels"][idx_adapt])
  x_eval, y_eval = jnp.asarray(shifted[idx_eval]), jnp.asarray(data["test_labels"][idx_eval])
  projection = jax.random.normal(jax.random.PRNGKey(seed + 2), (28 * 28, dim)) / np.sqrt(dim)

  def logits(z, x):
    offset = (projection @ z).reshape(1, 28, 28, 1)
    return model.apply(variables, x + offset, train=False)

  def loss_fn(z):
    return optax.softmax_cross_entropy_with_integer_labels(logits(z, x_adapt), y_adapt).mean()

  def eval_fn(z):
    out = logits(z, x_eval)
    loss = optax.softmax_cross_entropy_with_integer_labels(out, y_eval).mean()
    return loss, jnp.mean(jnp.argmax(out, -1) == y_eval)

  z0 = jnp.zeros([dim], jnp.float32)
  _, shifted_acc = jax.jit(eval_fn)(z0)
  info = dict(
    clean_test_accuracy=clean_acc,
    shifted_eval_accuracy=float(shifted_acc),
    dim=dim,
    num_adapt=num_adapt,
    num_eval=num_eval,
    contrast=contrast,
    noise_std=noise_std,
    seed=seed,
  )
  return BlackBoxTask(loss_fn, eval_fn, z0, dim, info)
