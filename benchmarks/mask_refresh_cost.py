"""Cost of the mask refreshes that run inside ``lax.cond``: SSAM-F's Fisher and RigL's update.

Both run inside the compiled step only on refresh steps (``lax.cond`` on the step count). On
XLA:CPU a convolution backward pass inside control flow (a ``cond`` branch or a ``scan`` body)
misses the fast kernels, so a refresh that differentiates costs more on CPU than its maths
suggests. RigL no longer differentiates there: it grows from the dense gradient the head
computed in the same step (the head state's ``gradient`` slot), so its update step should cost
a normal step plus the top-k selections. In ONE process, after warm-up, the median time of a
full jitted step for:

  sgd              exact_gradient head + SGD with momentum
  sam              zosam_jax.sam head + SGD
  ssam_f refresh   sparse_sam(mask_method="fisher"), update_every=1: every step refreshes
  ssam_f between   the same with a refresh only at step 0: the steps between refreshes
  fisher alone     empirical_fisher (N_F = 128, chunks of 16) jitted at top level
  rigl update      RigL (90% sparse) around SGD, update_every=1: every step updates the mask
  rigl between     the same with update_every far beyond the run
  rigl_zo_sam ...  the same two around a ZO-SAM head (m = 1): the issue's "RigL mask-update
                   step against a normal step with the same head"

the ratio of each update step to the normal step with the same head, and the refresh's extra
cost amortised over a refresh interval (``--interval``, default 100, both methods' default).

Usage:
  python -m benchmarks.mask_refresh_cost                  # small CNN, batch 128
  python -m benchmarks.mask_refresh_cost --model resnet20 --batch-size 64 --rounds 5
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

import zosam_jax as zj
from benchmarks import timing
from benchmarks.step_cost import head_step, setup, tx_step
from zosam_jax import perturbation_masks

NEVER = 10**8  # a refresh interval no benchmark run reaches


def _configs(name: str, batch_size: int, num_fisher_samples: int, rho: float):
  params, stats, loss_fn, per_example, batch = setup(name, batch_size)
  copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731  (donated buffers need fresh copies)
  fisher_args = dict(per_example_loss_fn=per_example, batch=batch)

  def ssam_f(interval):
    head = zj.sparse_sam(
      rho, 0.5, update_every=interval, num_fisher_samples=num_fisher_samples, has_aux=True
    )
    return head_step(head, copy(params), stats, loss_fn, **fisher_args)

  def rigl(interval, head=None):
    head = zj.exact_gradient(has_aux=True) if head is None else head
    inner = optax.chain(head, optax.sgd(0.05, momentum=0.9))
    method = zj.sparse.rigl(sparsity=0.9, update_every=interval, end_step=2 * NEVER, has_aux=True)
    return tx_step(method.wrap(inner, params), copy(params), stats, loss_fn)

  def zo_sam():
    return zj.zo_sam(rho, num_directions=1, has_aux=True)

  fisher = jax.jit(
    lambda p: perturbation_masks.empirical_fisher(
      per_example, p, batch, num_samples=num_fisher_samples
    )
  )
  return {
    "sgd": head_step(zj.exact_gradient(has_aux=True), copy(params), stats, loss_fn),
    "sam": head_step(zj.sam(rho, has_aux=True), copy(params), stats, loss_fn),
    "ssam_f refresh": ssam_f(1),
    "ssam_f between": ssam_f(NEVER),
    "fisher alone": (lambda p: (fisher(p),), (params,)),
    "rigl update": rigl(1),
    "rigl between": rigl(NEVER),
    "rigl_zo_sam update": rigl(1, zo_sam()),
    "rigl_zo_sam between": rigl(NEVER, zo_sam()),
  }


def run(configs: dict, rounds: int) -> dict[str, float]:
  """Median milliseconds of every step, each fed its own output (the Fisher alone is not a
  step)."""
  times = timing.median_times(configs, rounds, stateful=lambda k: k != "fisher alone")
  return {k: t * 1e3 for k, t in times.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="cnn", help="cnn, mlp or resnet20/32/56")
  timing.timing_flags(parser, rounds=9, batch_size=128)
  parser.add_argument("--num-fisher-samples", type=int, default=128)
  parser.add_argument("--interval", type=int, default=100, help="refresh interval to amortise")
  parser.add_argument("--rho", type=float, default=0.05)
  args = parser.parse_args()
  if args.num_fisher_samples > args.batch_size:
    parser.error("--num-fisher-samples must be at most --batch-size (the Fisher reads the batch)")
  if args.interval < 1:
    parser.error("--interval must be >= 1")
  print(timing.device_line())
  print(
    f"{args.model}, batch {args.batch_size}, N_F {args.num_fisher_samples}, {args.rounds} rounds"
  )
  ms = run(_configs(args.model, args.batch_size, args.num_fisher_samples, args.rho), args.rounds)
  print("| step | ms | x SGD | x SAM |")
  print("|---|---|---|---|")
  for k, v in ms.items():
    print(f"| {k} | {v:.1f} | {v / ms['sgd']:.2f} | {v / ms['sam']:.2f} |")
  pairs = {
    "ssam_f": ("ssam_f refresh", "ssam_f between", "sam"),
    "rigl": ("rigl update", "rigl between", "sgd"),
    "rigl_zo_sam": ("rigl_zo_sam update", "rigl_zo_sam between", "sgd"),
  }
  for method, (refresh, between, base) in pairs.items():
    extra = ms[refresh] - ms[between]
    per_step = extra / args.interval
    print(
      f"{method}: a refresh step is {ms[refresh] / ms[between]:.2f}x a step between refreshes "
      f"and adds {extra:.1f} ms; over {args.interval} steps {per_step:.2f} ms per step "
      f"({per_step / ms[base]:.1%} of {base})"
    )


if __name__ == "__main__":
  main()
