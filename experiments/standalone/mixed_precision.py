"""How precise is a zeroth-order difference when the model computes in bfloat16?

A central difference ``(L(theta + mu u) - L(theta - mu u)) / (2 mu)`` estimates the directional
derivative ``grad L(theta) . u``. Its error has a truncation part (``O(mu^2)``, grows with ``mu``)
and a rounding part (``~ delta_L / mu``, where ``delta_L`` is the absolute error of one loss
value): bfloat16 keeps 8 significant bits against float32's 24. Two roundings matter:

* the loss value itself: a cross-entropy near 2.3 reduced in bfloat16 is a multiple of
  ``2^-6 = 0.016``, while the two probes differ by ``2 mu |grad L . u|``, about 0.012 here at
  ``mu = 1e-3``: they round to the same number or one step apart. Casting the logits to
  float32 before the loss (``experiments.models`` does) removes this part;
* the perturbed weights: every layer casts ``theta + mu u`` (float32 master weights) to
  bfloat16, whose spacing at ``|theta| ~ 0.05`` is ``2.4e-4``, a quarter of ``mu |u_i|`` at
  ``mu = 1e-3``.

This script measures, on the small CNN of ``experiments.models`` (BatchNorm in training mode, as
the heads probe it) at its initialisation and on one batch of real Fashion-MNIST images, the
relative error ``||d_fd - d|| / ||d||`` over ``--directions`` Gaussian directions, where ``d`` is
the exact float32 directional derivative (``jax.jvp`` of the float32 model), for three set-ups:
float32 model; bfloat16 model with the loss reduced in float32; bfloat16 model with the loss
reduced in bfloat16. It also reports SAM's loss rise ``L(theta + eps) - L(theta)`` at
``rho = 0.05`` in each set-up. Results: docs/flax.md.

  python -m experiments.standalone.mixed_precision [--batch 128] [--directions 64]
      [--source_dir DIR]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import input_pipeline, models

SMOOTHINGS = (1e-4, 1e-3, 1e-2, 1e-1)
SETUPS = {  # name -> (model dtype, dtype the loss is reduced in)
  "float32": ("float32", jnp.float32),
  "bf16 model, fp32 loss": ("bfloat16", jnp.float32),
  "bf16 model, bf16 loss": ("bfloat16", jnp.bfloat16),
}


def make_loss(dtype: str, loss_dtype):
  """``(params, data) -> loss``: the CNN in training mode (batch statistics), reduced in
  ``loss_dtype``. ``data = (batch_stats, images, labels)`` is an argument, not a constant of the
  compiled program (XLA would spend minutes folding it)."""
  model = models.create_model("cnn", 10, dtype=dtype)

  def loss(params, data):
    batch_stats, images, labels = data
    logits, _ = model.apply(
      {"params": params, "batch_stats": batch_stats}, images, train=True, mutable=["batch_stats"]
    )
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(loss_dtype), labels)
    return jnp.mean(losses).astype(jnp.float32)  # the value the heads see

  return loss


def _direction(key, params):
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
    treedef, [jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)]
  )


def measure(batch: int, directions: int, seed: int, source_dir: str, data_dir: str) -> dict:
  split = input_pipeline.load_split("fashion_mnist", "train", data_dir, source_dir, subset=batch)
  spec = input_pipeline.SPECS["fashion_mnist"]
  images = jnp.asarray(input_pipeline.normalize_eval(split.images, spec))
  init = models.create_model("cnn", 10)
  variables = jax.jit(lambda k: init.init(k, images[:1], train=False))(jax.random.key(seed))
  params = variables["params"]
  data = (variables["batch_stats"], images, jnp.asarray(split.labels))
  keys = jax.random.split(jax.random.key(seed + 1), directions)

  reference = make_loss("float32", jnp.float32)

  @jax.jit
  def exact(params, key, data):
    return jax.jvp(lambda p: reference(p, data), (params,), (_direction(key, params),))[1]

  d = np.array([exact(params, k, data) for k in keys])
  g = jax.jit(jax.grad(reference))(params, data)
  norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
  eps = jax.tree.map(lambda x: 0.05 * x / norm, g)

  results = {"exact_rms": float(np.sqrt(np.mean(d**2))), "setups": {}}
  for name, (dtype, loss_dtype) in SETUPS.items():
    loss = make_loss(dtype, loss_dtype)

    @jax.jit
    def difference(params, key, mu, data, loss=loss):
      u = _direction(key, params)
      up = loss(jax.tree.map(lambda p, v: p + mu * v, params, u), data)
      down = loss(jax.tree.map(lambda p, v: p - mu * v, params, u), data)
      return (up - down) / (2 * mu)

    row = {}
    for mu in SMOOTHINGS:
      fd = np.array([difference(params, k, jnp.float32(mu), data) for k in keys])
      row[mu] = float(np.linalg.norm(fd - d) / np.linalg.norm(d))
    value = jax.jit(loss)
    rise = float(value(jax.tree.map(jnp.add, params, eps), data) - value(params, data))
    results["setups"][name] = {
      "relative_error": row,
      "sam_rise": rise,
      "loss": float(value(params, data)),
    }
  return results


def main(argv: list[str] | None = None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--directions", type=int, default=64)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--source_dir", default="", help="idx files ('' = Debian's folder)")
  parser.add_argument("--data_dir", default="", help="tfds data_dir ('' = a temporary one)")
  args = parser.parse_args(argv)
  start = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    out = measure(args.batch, args.directions, args.seed, args.source_dir, args.data_dir or tmp)
  header = " | ".join(f"mu = {mu:g}" for mu in SMOOTHINGS)
  print(
    f"small CNN at initialisation, {args.batch} Fashion-MNIST images, {args.directions} Gaussian "
    f"directions, seed {args.seed}; rms exact directional derivative {out['exact_rms']:.4g}"
  )
  print(f"| set-up | loss | {header} | SAM loss rise (rho 0.05) |")
  print("|---|---|" + "---|" * len(SMOOTHINGS) + "---|")
  for name, r in out["setups"].items():
    cells = " | ".join(f"{r['relative_error'][mu]:.3g}" for mu in SMOOTHINGS)
    print(f"| {name} | {r['loss']:.4f} | {cells} | {r['sam_rise']:.3g} |")
  print(
    f"({jax.default_backend()}, {platform.processor() or platform.machine()}, jax "
    f"{jax.__version__}; {time.perf_counter() - start:.0f} s)"
  )
  return out


if __name__ == "__main__":
  main()
