"""Small shared pieces for the sparse-training tests."""

import jax
import jax.numpy as jnp
import numpy as np


def flat(x):
  return np.asarray(x).ravel()


def active_set(mask_leaf):
  return set(np.flatnonzero(np.asarray(mask_leaf)).tolist())


def mlp_params(key, sizes=(6, 8, 8, 3)):
  """Dense kernels and biases of a tiny tanh MLP."""
  params = {}
  keys = jax.random.split(key, len(sizes) - 1)
  for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
    params[f"layer{i}"] = {
      "kernel": jax.random.normal(keys[i], (a, b)) / np.sqrt(a),
      "bias": jnp.zeros((b,)),
    }
  return params


def mlp_apply(params, x):
  n = len(params)
  h = x
  for i in range(n):
    h = h @ params[f"layer{i}"]["kernel"] + params[f"layer{i}"]["bias"]
    if i < n - 1:
      h = jnp.tanh(h)
  return h


def xent(logits, labels):
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))
