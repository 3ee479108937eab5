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
Timings are paired: in every round each configuration is timed right after a dense step and
the ratio to it is kept; the median ratio over rounds is reported, so drift on a shared machine
cancels. XLA's compiled cost analysis (flops and bytes accessed of the whole step) gives a
noise-free upper bound of the extra work (it counts both branches of the ``lax.cond``).
Since full-step ratios on a shared CPU scatter by several percent, the wrapper's own work is
also timed directly: the optimizer update alone (``tx.update`` on given gradients, no forward
or backward pass), wrapped minus plain SGD; the amortised overhead is that difference,
``((every - 1) w_plain + w_update) / every``, divided by the dense training step.

Bar (issue 3): amortised wrapper overhead <= 5% of the dense step; one mask update < one dense
step.

Usage:
  python -m benchmarks.sparse_overhead                        # batch 32, 5 rounds
  python -m benchmarks.sparse_overhead --batch-size 64 --rounds 7 --update-every 100
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from benchmarks import timing
from zosam_jax import sparse

DYNAMIC = ("set", "rigl", "mest", "dsr")
STATIC = ("lth", "snip", "grasp")


def _model():
  from experiments import models

  return models.create_model("resnet32", 10), "experiments.models resnet32"


def _cost(fn, *args) -> tuple[float | None, float | None]:
  """(flops, bytes accessed) of the compiled program, from XLA's cost analysis."""
  cost = timing.compiled_cost(fn, *args)
  return cost.get("flops"), cost.get("bytes accessed")


def _rel(x: float | None, ref: float | None) -> str:
  if x is None or not ref:
    return "n/a"
  return f"{100 * (x / ref - 1):+.2f}%"


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  timing.timing_flags(ap, rounds=5, batch_size=32)
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
  grads, _ = jax.jit(jax.grad(loss_fn, has_aux=True))(params, stats)
  dense_step = make_step(sgd)
  dense_state = sgd.init(params)
  configs["dense"] = lambda: dense_step(params, stats, dense_state)
  cost = {"dense": _cost(dense_step, params, stats, dense_state)}
  # The optimizer update alone (no forward/backward), wrapped vs plain SGD: its difference is the
  # wrapper's own work, small enough to time precisely on a busy machine.
  sgd_update = jax.jit(sgd.update)
  opt_only = {"dense": lambda: sgd_update(grads, dense_state, params)}

  one_off: dict[str, float] = {}
  for name in STATIC + DYNAMIC:
    kw = dict(sparsity=args.sparsity)
    if name in DYNAMIC:
      kw.update(
        sparsity_distribution="erk",
        update_every=args.update_every,
        end_step=100 * args.update_every,
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
    cost[name] = _cost(step, params, stats, plain)
    tx_update = jax.jit(tx.update)
    opt_only[name] = lambda f=tx_update, st=plain: f(grads, st, params)
    if name in DYNAMIC:
      upd = state._replace(sparse_step=jnp.asarray(args.update_every, jnp.int32))
      opt_only[name + " (update step)"] = lambda f=tx_update, st=upd: f(grads, st, params)
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

  # Paired timing: every configuration right after a dense step, so that drift on the shared
  # machine cancels in the ratio; the overhead is the median ratio over rounds.
  med, ratio = timing.paired_times(configs, "dense", args.rounds, args.calls, warmup=2)
  for fn in opt_only.values():
    jax.block_until_ready(fn())
  opt_rounds: dict[str, list[float]] = {k: [] for k in opt_only}
  for _ in range(args.rounds):
    for k, fn in opt_only.items():
      opt_rounds[k].append(timing.timeit(fn, 20))
  opt = {k: statistics.median(v) for k, v in opt_rounds.items()}

  t_dense = med["dense"]
  print(
    f"# sparse wrapper overhead: {model_name} ({n_params / 1e6:.2f}M params), batch "
    f"{args.batch_size}, sparsity {args.sparsity}, ERK for dynamic / global for static, "
    f"update_every {args.update_every}"
  )
  print(
    f"# {timing.device_line()}; median of {args.rounds} rounds x {args.calls} calls. Shared "
    "CPU: indicative numbers."
  )
  print(f"dense SGD step: {t_dense * 1e3:.1f} ms")
  print()
  print(
    f"optimizer update alone (plain SGD with momentum, no forward/backward): "
    f"{opt['dense'] * 1e3:.2f} ms"
  )
  print()
  print(
    "| method | wrapper work, plain step (ms) | wrapper work, update step (ms) | "
    "amortised wrapper overhead / dense step | full step / dense, plain (noisy) | "
    "full step / dense, update step (noisy) | mask update alone (ms) | "
    "mask update / dense step | XLA extra bytes, whole step (both cond branches) | "
    "one-off mask, incl. compile (s) |"
  )
  print("|---|---|---|---|---|---|---|---|---|---|")
  every = args.update_every
  for name in STATIC + DYNAMIC:
    w_plain = opt[name] - opt["dense"]
    if name in DYNAMIC:
      w_upd = opt[name + " (update step)"] - opt["dense"]
      w_amort = ((every - 1) * w_plain + w_upd) / every
      mu = med[name + " (mask update)"]
      cols = [f"{w_upd * 1e3:.2f}"]
      rcols = [f"{ratio[name]:.3f}", f"{ratio[name + ' (update step)']:.3f}"]
      mcols = [f"{mu * 1e3:.1f}", f"{mu / t_dense:.2f}"]
    else:
      w_amort = w_plain
      cols = ["-"]
      rcols = [f"{ratio[name]:.3f}", "-"]
      mcols = ["-", "-"]
    extra = f"{one_off[name]:.1f}" if name in one_off else "-"
    row = [f"{w_plain * 1e3:.2f}", *cols, f"{100 * w_amort / t_dense:+.2f}%", *rcols, *mcols]
    row += [_rel(cost[name][1], cost["dense"][1]), extra]
    print(f"| {name} | " + " | ".join(row) + " |")


if __name__ == "__main__":
  main()
