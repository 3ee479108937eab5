"""The losses the parts measure: the mean over a fixed training subset (BatchNorm in inference
mode) and the trainer's loss on one batch (BatchNorm in training mode)."""

from __future__ import annotations

import numpy as np


def cross_entropy(logits, labels):
  import optax

  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def subset_loss(model, params, batch_stats, data):
  """Mean cross-entropy over a chunked subset, BatchNorm in inference mode.

  ``data = (images [C, chunk, ...], labels [C, chunk], weights [C, chunk])`` with weights
  ``1/N`` on the ``N`` real examples and 0 on padding. One ``lax.scan`` over the chunks; with
  several chunks each is rematerialised (``jax.checkpoint``), so differentiating it holds the
  activations of one chunk at a time.
  """
  import jax
  import jax.numpy as jnp

  images, labels, weights = data

  def chunk_loss(p, stats, x, y, w):
    logits = model.apply({"params": p, "batch_stats": stats}, x, train=False)
    return jnp.sum(w * cross_entropy(logits, y))

  if images.shape[0] > 1:
    chunk_loss = jax.checkpoint(chunk_loss)

  def body(total, xs):
    return total + chunk_loss(params, batch_stats, *xs), None

  total, _ = jax.lax.scan(body, jnp.zeros([], jnp.float32), (images, labels, weights))
  return total


def batch_loss(model, params, batch_stats, batch, dropout_key):
  """Mean cross-entropy of one training batch, BatchNorm in training mode (as the trainer's
  loss; the updated running statistics are discarded)."""
  from experiments import steps

  variables = {"params": params, "batch_stats": batch_stats}
  logits, _ = steps.training_logits(model, variables, batch["image"], dropout_key)
  return cross_entropy(logits, batch["label"]).mean()


def chunked_subset(split, spec, n: int, chunk_size: int) -> tuple[np.ndarray, ...]:
  """The first ``n`` examples of ``split`` (evaluation preprocessing), as ``[C, chunk, ...]``
  chunks padded with zero-weight rows."""
  from experiments import input_pipeline

  n = min(n, split.size)
  images, labels = split.get(np.arange(n))
  images = input_pipeline.normalize_eval(images, spec).astype(np.float32)
  chunk = min(chunk_size, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  weights = np.concatenate([np.full(n, 1.0 / n, np.float32), np.zeros(pad, np.float32)])
  images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.float32)])
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  return (
    images.reshape(num_chunks, chunk, *images.shape[1:]),
    labels.reshape(num_chunks, chunk),
    weights.reshape(num_chunks, chunk),
  )
