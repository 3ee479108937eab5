"""Overhead of the sparse-training wrappers on a CIFAR ResNet-32 training step.

In ONE process, after warm-up, the median time of a jitted training step (forward-backward with
BatchNorm in training mode, SGD with momentum, apply) for:

  dense          plain optax SGD step
  <method>       the same step with ``zosam_jax.sparse.<method>(...).wrap(sgd, params)``; for
                 dynamic methods both an ordinary step (``lax.cond`` false) and a mask-update step
                 (``lax.cond`` true) are timed, and the amortised step is
                 ``((every - 1) t_plain + t_update) / every``
  mask update    the method's mask update alone (drop and grow on the ResNet's kernels), given
                 the gradient

and, for SNIP and GraSP, the one-off time to score and build the mask before training.
Timings are taken in rounds, every configuration once per round, so drift on a shared machine
hits all alike; the median over rounds is reported.

Bar (issue 3): amortised wrapper overhead <= 5% of the dense step; one mask update < one dense
step.

Usage:
  python -m benchmarks.sparse_overhead                        # batch 32, 5 rounds
  python -m benchmarks.sparse_overhead --batch-size 64 --rounds 7 --update-every 100
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from zosam_jax import sparse

DYNAMIC = ("set", "rigl", "mest", "dsr")
STATIC = ("lth", "snip", "grasp")


class _Block(nn.Module):
  filters: int
  stride: int

  @nn.compact
  def __call__(self, x, train: bool):
    norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
    y = nn.Conv(self.filters, (3, 3), (self.stride, self.stride), use_bias=False)(x)
    y = nn.relu(norm()(y))
    y = nn.Conv(self.filters, (3, 3), use_bias=False)(y)
    y = norm()(y)
    if x.shape != y.shape:
      x = nn.Conv(self.filters, (1, 1), (self.stride, self.stride), use_bias=False)(x)
      x = norm()(x)
    return nn.relu(x + y)


class ResNet32(nn.Module):
  """CIFAR ResNet-32 (He et al. 2016): 3 stages of 5 basic blocks, 16/32/64 filters."""

  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.Conv(16, (3, 3), use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
    for stage, filters in enumerate((16, 32, 64)):
      for block in range(5):
        x = _Block(filters, 2 if stage > 0 and block == 0 else 1)(x, train)
    x = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(x)


def _model():
  try:  # prefer the experiments' model when it is on this branch
    from experiments import models  # type: ignore

    return models.CifarResNet(depth=32, num_classes=10), "experiments.models.CifarResNet"
  except Exception:  # noqa: BLE001
    return ResNet32(), "benchmarks.sparse_overhead.ResNet32"


def _timeit(fn: Callable[[], object], calls: int) -> float:
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--batch-size", type=int, default=32)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--calls", type=int, default=3, help="calls per configuration per round")
  ap.add_argument("--sparsity", type=float, default=0.9)
  ap.add_argument("--update-every", type=int, default=100)
  args = ap.parse_args()

  model, model_name = _model()
  kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (args.batch_size, 32, 32, 3))
  y = jax.random.permutation(ky, jnp.arange(args.batch_size) % 10)  # every class present
  variables = model.init(kp, x[:2], train=False)
  params, stats = variables["params"], variables["batch_stats"]
  n_params = sum(p.size for p in jax.tree_util.tree_leaves(params))

  def loss_fn(p, s):
    logits, new = model.apply(
      {"params": p, "batch_stats": s}, x, train=True, mutable=["batch_stats"]
    )
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new["batch_stats"]

  def logits_fn(p, inputs):
    return model.apply({"params": p, "batch_stats": stats}, inputs, train=False)

  sgd = optax.sgd(0.05, momentum=0.9)

  def make_step(tx):
    @jax.jit
    def step(p, s, opt_state):
      grads, new_s = jax.grad(loss_fn, has_aux=True)(p, s)
      updates, opt_state = tx.update(grads, opt_state, p)
      return optax.apply_updates(p, updates), new_s, opt_state

    return step

  configs: dict[str, Callable[[], object]] = {}
  dense_step = make_step(sgd)
  dense_state = sgd.init(params)
  configs["dense"] = lambda: dense_step(params, stats, dense_state)

  one_off: dict[str, float] = {}
  grads, _ = jax.jit(jax.grad(loss_fn, has_aux=True))(params, stats)
  for name in STATIC + DYNAMIC:
    kw = dict(sparsity=args.sparsity)
    if name in DYNAMIC:
      kw.update(
        distribution="erk", update_every=args.update_every, end_step=100 * args.update_every
      )
    if name == "grasp":
      kw.update(samples_per_class=max(1, args.batch_size // 10))
    method = sparse.get_method(name, **kw)
    t0 = time.perf_counter()
    if name == "snip":
      tx = method.wrap(sgd, params, loss_fn=lambda p: loss_fn(p, stats)[0])
    elif name == "grasp":
      tx = method.wrap(sgd, params, apply_fn=logits_fn, inputs=x, labels=y)
    elif name == "lth":
      tx = method.wrap(sgd, params, mask=method.magnitude_mask(params))
    else:
      tx = method.wrap(sgd, params)
    state = tx.init(params)
    jax.block_until_ready(state)
    if name in ("snip", "grasp"):  # scoring + mask, jit-compiled on the spot
      one_off[name] = time.perf_counter() - t0
    step = make_step(tx)
    plain = state._replace(sparse_step=jnp.asarray(1, jnp.int32))
    configs[name] = lambda step=step, plain=plain: step(params, stats, plain)
    if name in DYNAMIC:
      upd = state._replace(sparse_step=jnp.asarray(args.update_every, jnp.int32))
      configs[name + " (update step)"] = lambda step=step, upd=upd: step(params, stats, upd)
      flags = method.prunable_flags(params)
      mask = state.weight_mask
      masked = jax.tree_util.tree_map(lambda m, p: jnp.where(m, p, 0), mask, params)

      @jax.jit
      def mask_update(mask, masked, grads, key, mstate, method=method, flags=flags):
        return method.update_mask(
          flags, jnp.asarray(args.update_every), mask, masked, grads, key, mstate
        )

      mstate = state.method_state
      configs[name + " (mask update)"] = lambda f=mask_update, m=mask, q=masked, ms=mstate: f(
        m, q, grads, jax.random.PRNGKey(1), ms
      )

  for fn in configs.values():  # warm-up (compile)
    jax.block_until_ready(fn())
    jax.block_until_ready(fn())
  per_round: dict[str, list[float]] = {k: [] for k in configs}
  for _ in range(args.rounds):
    for k, fn in configs.items():
      per_round[k].append(_timeit(fn, args.calls))
  med = {k: statistics.median(v) for k, v in per_round.items()}

  t_dense = med["dense"]
  print(
    f"# sparse wrapper overhead: {model_name} ({n_params / 1e6:.2f}M params), batch "
    f"{args.batch_size}, sparsity {args.sparsity}, ERK for dynamic / global for static, "
    f"update_every {args.update_every}"
  )
  print(
    f"# {platform.processor() or platform.machine()}, {jax.device_count()} x "
    f"{jax.devices()[0].platform}, jax {jax.__version__}; median of {args.rounds} rounds x "
    f"{args.calls} calls. Shared CPU: indicative numbers."
  )
  print(f"dense SGD step: {t_dense * 1e3:.1f} ms")
  print()
  print(
    "| method | plain step (ms) | update step (ms) | amortised (ms) | overhead | "
    "mask update (ms) | mask update / dense step | one-off mask, incl. compile (ms) |"
  )
  print("|---|---|---|---|---|---|---|---|")
  every = args.update_every
  for name in STATIC + DYNAMIC:
    plain = med[name]
    if name in DYNAMIC:
      upd = med[name + " (update step)"]
      amort = ((every - 1) * plain + upd) / every
      mu = med[name + " (mask update)"]
      cols = [f"{upd * 1e3:.1f}", f"{amort * 1e3:.1f}"]
      mcols = [f"{mu * 1e3:.1f}", f"{mu / t_dense:.2f}"]
    else:
      amort = plain
      cols = ["-", f"{amort * 1e3:.1f}"]
      mcols = ["-", "-"]
    extra = f"{one_off[name] * 1e3:.0f}" if name in one_off else "-"
    overhead = f"{100 * (amort / t_dense - 1):+.1f}%"
    print(
      f"| {name} | {plain * 1e3:.1f} | " + " | ".join(cols + [overhead] + mcols + [extra]) + " |"
    )


if __name__ == "__main__":
  main()
