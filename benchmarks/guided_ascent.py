"""How much of SAM's ascent do prior-guided directions recover, over training? (issue 14, item 2)

Trains the small CNN on Fashion-MNIST at 90% RigL sparsity (ERK, the trainer's pieces: its config,
optimizer chain, sparse wrapper and compiled step) with guided ZO-SAM (m=1,
``guidance="previous_gradient"``), for ``--steps`` steps on a cosine schedule that ends with them.
At a few points of training, on the batch the next step will train on, it measures with
``zosam_jax.diagnostics.ascent_quality`` (``--samples`` keys each):

  sam           the exact gradient: cosine 1, loss increase ratio 1
  zo_m1, zo_m4  plain ZO-SAM's random gradient estimate (1 and 4 directions)
  guided_m1/m4  the guided estimate the head would use at that step: direction 0 along the state's
                prior (the last exact gradient, at the previous step's theta + eps on the previous
                batch), the others random and orthogonal to it
  prior         the cosine of the prior itself to the gradient (what guided m=1 gets, up to sign)

beside ``sqrt(m/d)`` (d the active coordinates), the cosine scale of m random directions. The loss
increase is ``L(theta + rho d/||d||) - L(theta)``, reported as a ratio to SAM's. BatchNorm in
training mode (statistics of the batch, as the trainer's loss; running statistics untouched).
Cosines are not timings: the figures hold on a loaded machine.

Usage:
  python -m benchmarks.guided_ascent                     # 400 steps, 5 points, 8 keys each
  python -m benchmarks.guided_ascent --steps 200 --points 3 --samples 4
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import optax

import zosam_jax.diagnostics as zd

GUIDED = "previous_gradient"
ARMS = (("sam", None, False), ("zo_m1", 1, False), ("zo_m4", 4, False))
ARMS += (("guided_m1", 1, True), ("guided_m4", 4, True))


def _cosine(a, b) -> jax.Array:
  a, b = jax.tree.leaves(a), jax.tree.leaves(b)
  dot = sum(jnp.vdot(x, y) for x, y in zip(a, b, strict=True))
  norms = jnp.sqrt(sum(jnp.vdot(x, x) for x in a) * sum(jnp.vdot(y, y) for y in b))
  return dot / (norms + 1e-12)


def _config(steps: int, rho: float, seed: int):
  from experiments.configs import fashion_mnist_default

  config = fashion_mnist_default.get_config()
  config.seed = seed
  config.num_epochs = 1  # with steps_per_epoch=steps below: the schedule ends with the run
  config.optimizer.name = "zo_sam"
  config.optimizer.rho = rho
  config.optimizer.guidance = GUIDED
  config.optimizer.zeroth_order.num_directions = 1
  config.sparse.method = "rigl"
  config.sparse.sparsity = 0.9
  config.sparse.update_every = max(1, steps // 4)
  config.progress_bar = False
  return config


def _rho(rho: float | None) -> tuple[float, str]:
  if rho is not None:
    return rho, "--rho"
  from experiments.studies import protocol

  try:
    return protocol.tuned_rho(), "rho_tuning (the studies' rho)"
  except (FileNotFoundError, ValueError):
    return 0.05, "default (no rho_tuning results)"


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=400, help="training steps (>= 1)")
  parser.add_argument("--points", type=int, default=5, help="measurement points (>= 2)")
  parser.add_argument("--samples", type=int, default=8, help="keys per arm and point (>= 1)")
  parser.add_argument("--rho", type=float, default=None, help="default: the studies' tuned rho")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--data-dir", default="", help="tfds folder (default: $TFDS_DATA_DIR)")
  args = parser.parse_args(argv)
  if args.steps < 1 or args.points < 2 or args.samples < 1:
    parser.error("--steps and --samples must be >= 1 and --points >= 2")

  from experiments import input_pipeline, models, optimizers, steps

  rho, rho_source = _rho(args.rho)
  config = _config(args.steps, rho, args.seed)
  data_dir = args.data_dir or input_pipeline.default_data_dir()
  spec, _, _, batches = input_pipeline.load_run_data(config, data_dir)
  model = models.create_model("cnn", spec.num_classes)
  variables = model.init(
    jax.random.key(args.seed), jnp.zeros((1, *spec.image_shape), jnp.float32), train=False
  )
  params, batch_stats = variables["params"], variables["batch_stats"]
  chain, method = optimizers.create_optimizer(config, args.steps)
  tx = optimizers.sparse_chain(chain, method, params)
  zero = jnp.zeros([], jnp.int32)
  aux = {"correct": zero, "count": zero, "batch_stats": batch_stats}
  state = {
    "step": zero,
    "params": params,
    "batch_stats": batch_stats,
    "opt_state": optax.tree_utils.tree_set(tx.init(params), aux=aux),
    "acc": steps.zero_accumulators(),
  }
  train_step = jax.jit(steps.make_train_step(model, tx, config.seed, None))

  def measure(params, batch_stats, batch, mask, prior, key):
    def loss_fn(p):
      logits, _ = model.apply(
        {"params": p, "batch_stats": batch_stats},
        batch["image"],
        train=True,
        mutable=["batch_stats"],
      )
      return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

    out = {}
    for name, m, guided in ARMS:
      if m is None:
        ascent_fn = zd.gradient_ascent_fn(loss_fn)
      else:
        ascent_fn = zd.rge_ascent_fn(
          loss_fn, num_directions=m, weight_mask=mask, prior=prior if guided else None
        )
      out[name] = zd.ascent_quality(
        loss_fn, params, ascent_fn, rho=rho, key=key, weight_mask=mask, num_samples=args.samples
      )
    g = jax.tree.map(lambda x, k: x * k, zd.gradient_ascent_fn(loss_fn)(params, key), mask)
    out["prior_cosine"] = _cosine(g, prior)
    out["active"] = sum(jnp.sum(k) for k in jax.tree.leaves(mask))
    return out

  measure = jax.jit(measure)
  points = sorted({max(1, round(i * args.steps / (args.points - 1))) for i in range(args.points)})
  print(
    f"# guided ascent: small CNN, Fashion-MNIST, RigL 90% (ERK), trained {args.steps} steps with "
    f"guided ZO-SAM m=1; rho={rho} ({rho_source}); {args.samples} keys per arm; "
    f"jax {jax.__version__} on {jax.devices()[0].platform}"
  )
  print("| step | d | arm | cosine mean | cosine std | sqrt(m/d) | increase / SAM's |")
  print("|---|---|---|---|---|---|---|")
  key = jax.random.PRNGKey(args.seed + 1)
  t0, done = time.perf_counter(), 0
  for point in points:
    for step in range(done, point):
      state = train_step(state, batches.batch(step))
    done = point
    opt_state = state["opt_state"]
    mask = jax.tree.map(
      lambda x: x.astype(jnp.float32), optax.tree_utils.tree_get(opt_state, "weight_mask")
    )
    prior = optax.tree_utils.tree_get(opt_state, "prior")
    batch = batches.batch(point)
    key, sub = jax.random.split(key)
    res = jax.device_get(measure(state["params"], state["batch_stats"], batch, mask, prior, sub))
    d = int(res["active"])
    for name, m, _ in ARMS:
      q = res[name]
      scale = "" if m is None else f"{math.sqrt(m / d):.4f}"
      print(
        f"| {point} | {d} | {name} | {float(q.cosine_mean):.4f} | {float(q.cosine_std):.4f} | "
        f"{scale} | {float(q.increase_ratio):.3f} |",
        flush=True,
      )
    print(f"| {point} | {d} | prior | {float(res['prior_cosine']):.4f} | | | |", flush=True)
  print(f"# {time.perf_counter() - t0:.0f} s (training and measurement)")


if __name__ == "__main__":
  main()
