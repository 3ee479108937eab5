"""Cost of the sparsity patterns: Sparse SAM's explicit vs implicit form, and RigL's patterns.

Part ``ssam`` (issue 16): one jitted Sparse SAM training step (the head, SGD with momentum, BN in
training mode) at 50% perturbation sparsity, ``form="explicit"`` against ``form="implicit"``, for
the ``channel``, ``unstructured`` and ``n:m`` (2:4) patterns. Masks are random and refreshed only
at step 0 (``update_every`` is larger than the run), so the timed steps are the ordinary ones that
SSAM-F and SSAM-D share; the refresh is not timed. Reported per pattern: XLA's compiled flop count
of the step (noise free: what the implicit form skips, or not) and the median time ratio
implicit / explicit over paired rounds (each implicit step timed right after an explicit one, so
drift on a shared machine cancels). ``n:m`` perturbs only kernels whose input axis splits into
blocks of 4 (not the stem).

Part ``rigl``: a jitted RigL training step (ERK, 90% for ``unstructured`` and ``channel``, 2:4
for ``n:m``) on an ordinary step and on a mask-update step, as a ratio to the dense SGD step
(paired the same way), and the amortised step ``((every - 1) t_plain + t_update) / every``. The
classifier stays dense for ``channel``; the stem for ``n:m``.

Usage:
  python -m benchmarks.pattern_cost                                   # cnn and resnet32
  python -m benchmarks.pattern_cost --models cnn --batch-size 8 --rounds 1 --calls 1  # a check
"""

from __future__ import annotations

import argparse
import statistics

import jax
import jax.numpy as jnp
import optax

import zosam_jax as zj
from benchmarks import timing
from zosam_jax import sparse

INPUTS = {"cnn": (28, 28, 1), "resnet32": (32, 32, 3)}
STEM = {"cnn": "conv0", "resnet32": "stem"}


def _setup(name: str, batch_size: int):
  from experiments import models

  model = models.create_model(name, 10)
  kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (batch_size, *INPUTS[name]))
  y = jax.random.permutation(ky, jnp.arange(batch_size) % 10)
  variables = model.init(kp, x[:2], train=False)
  params, stats = variables["params"], variables["batch_stats"]

  def loss_fn(p):
    logits, _ = model.apply({"params": p, "batch_stats": stats}, x, train=True, mutable=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, loss_fn


def _n_m_leaves(params, m: int = 4):
  """Kernels whose input axis (second to last) splits into blocks of ``m``."""
  return jax.tree.map(lambda p: p.ndim >= 2 and p.shape[-2] % m == 0, params)


def ssam(name: str, args) -> None:
  params, loss_fn = _setup(name, args.batch_size)
  sgd = optax.sgd(0.05, momentum=0.9)
  configs, flops = {}, {}
  for pattern in ("channel", "unstructured", "n:m"):
    leaves = _n_m_leaves(params) if pattern == "n:m" else None
    for form in ("explicit", "implicit"):
      head = zj.sparse_sam(
        0.05,
        0.5,
        mask_method="random",
        pattern=pattern,
        update_every=10**6,
        form=form,
        perturb_leaves=leaves,
      )
      tx = optax.chain(head, sgd)

      @jax.jit
      def step(p, s, tx=tx):
        u, s = tx.update(None, s, p, loss_fn=loss_fn)
        return optax.apply_updates(p, u), s

      state = step(params, tx.init(params))[1]  # past the step-0 refresh
      key = f"{pattern} {form}"
      configs[key] = lambda step=step, state=state: step(params, state)
      flops[key] = timing.compiled_cost(step, params, state).get("flops")
  for fn in configs.values():  # warm-up (compile)
    jax.block_until_ready(fn())
  times = {k: [] for k in configs}
  ratios = {p: [] for p in ("channel", "unstructured", "n:m")}
  for _ in range(args.rounds):
    for pattern in ratios:  # each implicit step right after its explicit one
      t_e = timing.timeit(configs[f"{pattern} explicit"], args.calls)
      t_i = timing.timeit(configs[f"{pattern} implicit"], args.calls)
      times[f"{pattern} explicit"].append(t_e)
      times[f"{pattern} implicit"].append(t_i)
      ratios[pattern].append(t_i / t_e)

  def gflop(f):
    return "n/a" if f is None else f"{f / 1e9:.3f}"

  print(f"\n## Sparse SAM, {name}, batch {args.batch_size}, 50% perturbation sparsity\n")
  print("| pattern | explicit ms | implicit ms | implicit / explicit time | GFLOP expl. | impl. |")
  print("|---|---|---|---|---|---|")
  for pattern, r in ratios.items():
    e, i = f"{pattern} explicit", f"{pattern} implicit"
    print(
      f"| {pattern} | {1e3 * statistics.median(times[e]):.1f} | "
      f"{1e3 * statistics.median(times[i]):.1f} | {statistics.median(r):.3f} | "
      f"{gflop(flops[e])} | {gflop(flops[i])} |"
    )


def rigl(name: str, args) -> None:
  params, loss_fn = _setup(name, args.batch_size)
  sgd = optax.sgd(0.05, momentum=0.9)
  every = args.update_every

  def make_step(tx):
    @jax.jit
    def step(p, s):
      u, s = tx.update(jax.grad(loss_fn)(p), s, p, loss_fn=loss_fn)
      return optax.apply_updates(p, u), s

    return step

  dense = make_step(sgd)
  dense_state = sgd.init(params)
  configs = {"dense": lambda: dense(params, dense_state)}
  for pattern in ("unstructured", "channel", "n:m"):
    kw = dict(sparsity=0.9)
    dense_module = None
    if pattern == "channel":
      dense_module = "head"
    if pattern == "n:m":
      kw = dict(n_m=(2, 4))
      dense_module = STEM[name]
    prunable = None
    if dense_module is not None:
      prunable = lambda p, d=dense_module: {  # noqa: E731
        k: jax.tree.map(lambda x, k=k: x.ndim >= 2 and k != d, v) for k, v in p.items()
      }
    method = sparse.rigl(
      pattern=pattern, update_every=every, end_step=100 * every, prunable=prunable, **kw
    )
    tx = method.wrap(sgd, params)
    step = make_step(tx)
    state = tx.init(params)
    plain = state._replace(sparse_step=jnp.asarray(1, jnp.int32))
    upd = state._replace(sparse_step=jnp.asarray(every, jnp.int32))
    configs[pattern] = lambda step=step, s=plain: step(params, s)
    configs[pattern + " (update step)"] = lambda step=step, s=upd: step(params, s)
  med, ratio = timing.paired_times(configs, "dense", args.rounds, args.calls)
  print(f"\n## RigL, {name}, batch {args.batch_size}, update every {every} steps\n")
  print("| pattern | step ms | x dense | update step ms | x dense | amortised x dense |")
  print("|---|---|---|---|---|---|")
  for pattern in ("unstructured", "channel", "n:m"):
    r, ru = ratio[pattern], ratio[pattern + " (update step)"]
    amortised = ((every - 1) * r + ru) / every
    print(
      f"| {pattern} | {1e3 * med[pattern]:.1f} | {r:.3f} | "
      f"{1e3 * med[pattern + ' (update step)']:.1f} | {ru:.3f} | {amortised:.3f} |"
    )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
  ap.add_argument("--models", nargs="+", default=["cnn", "resnet32"], choices=sorted(INPUTS))
  ap.add_argument("--parts", nargs="+", default=["ssam", "rigl"], choices=["ssam", "rigl"])
  timing.timing_flags(ap, rounds=5, batch_size=64)
  ap.add_argument("--calls", type=int, default=3, help="calls per configuration per round")
  ap.add_argument("--update-every", type=int, default=100)
  args = ap.parse_args()
  print(f"# pattern_cost; {timing.device_line()}")
  for name in args.models:
    if "ssam" in args.parts:
      ssam(name, args)
    if "rigl" in args.parts:
      rigl(name, args)


if __name__ == "__main__":
  main()
