"""Cost of one Hessian-vector product against one forward-backward pass.

The Hessian diagnostics (``zosam_jax.diagnostics``) are priced in HVPs; this measures what one HVP
costs in forward-backwards. For each model, in ONE process, after warm-up (compile and two runs),
the median over rounds of the wall time of:

  forward         the loss alone (training mode, BatchNorm with batch statistics)
  fwd_bwd         ``jax.value_and_grad`` of the loss: one forward-backward
  hvp             ``zosam_jax.diagnostics.hessian_vector_product`` (``jax.jvp`` of ``jax.grad``)
                  along a fixed random direction

each jitted, one call per configuration per round in turn (interleaved), so drift on a shared
machine hits all alike. The ratio ``hvp / fwd_bwd`` is what "one HVP is about two
forward-backwards" claims; XLA's compiled flop count of each program is printed beside it as a
noise-free cross-check.

Models and training loss as ``benchmarks.step_cost.setup`` builds them (``experiments.models``;
needs flax): ``cnn`` (the experiments' small CNN, inputs
``(128, 28, 28, 1)``) and ``resnet20`` (CIFAR ResNet-20, inputs ``(64, 32, 32, 3)``).

Usage:
  python -m benchmarks.hvp_cost                        # both models, 7 rounds
  python -m benchmarks.hvp_cost --models cnn --rounds 1
"""

from __future__ import annotations

import argparse

import jax

import zosam_jax.diagnostics as zd
from benchmarks import timing
from benchmarks.step_cost import setup

INPUTS = {"cnn": (128, 28, 28, 1), "resnet20": (64, 32, 32, 3)}


def _setup(name: str):
  # The training loss, ``(loss, new batch_stats)`` as a training step computes it.
  params, _, loss_fn, _, _ = setup(name, INPUTS[name][0])
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  vector = jax.tree.unflatten(
    treedef, [jax.random.normal(k, p.shape, p.dtype) for k, p in zip(keys, leaves, strict=True)]
  )
  configs = {
    "forward": (jax.jit(lambda p: loss_fn(p)[0]), (params,)),
    "fwd_bwd": (jax.jit(jax.value_and_grad(loss_fn, has_aux=True)), (params,)),
    "hvp": (
      jax.jit(lambda p, v: zd.hessian_vector_product(loss_fn, p, v, has_aux=True)),
      (params, vector),
    ),
  }
  return configs, sum(p.size for p in leaves)


def run(name: str, rounds: int) -> None:
  configs, num_params = _setup(name)
  flops = {k: timing.compiled_cost(fn, *args).get("flops") for k, (fn, args) in configs.items()}
  med = timing.median_times(configs, rounds, warmup=3)  # compile, then two warm runs
  shape = INPUTS[name]
  print(f"\n## {name}, inputs {shape}, {num_params / 1e6:.3f}M parameters, {rounds} rounds")
  print("| program | median ms | x fwd_bwd | GFLOP (XLA) | flops x fwd_bwd |")
  print("|---|---|---|---|---|")
  for k, t in med.items():
    gflop = "" if flops[k] is None else f"{flops[k] / 1e9:.2f}"
    ratio = "" if flops[k] is None or not flops["fwd_bwd"] else f"{flops[k] / flops['fwd_bwd']:.2f}"
    print(f"| {k} | {t * 1e3:.1f} | {t / med['fwd_bwd']:.2f} | {gflop} | {ratio} |")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=list(INPUTS), choices=list(INPUTS))
  timing.timing_flags(parser, rounds=7)
  args = parser.parse_args()
  print(timing.device_line())
  for name in args.models:
    run(name, args.rounds)


if __name__ == "__main__":
  main()
