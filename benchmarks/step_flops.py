"""XLA's cost analysis of the trainer's step for every head: FLOPs and bytes accessed, no timing.

For each head of the trainer's registry (``experiments.optimizers.HEADS``, each with the default
config's values: rho 0.05, m = 1, LookSAM k = 5, ...), dense or wrapped by a sparse method, the
trainer's step is built as ``train_run`` builds it (``train.build_abstract`` +
``train.train_step_fn``: head, weight decay, SGD with momentum, BatchNorm and metric updates),
compiled for this host's backend and given to XLA's cost model (``compiled.cost_analysis()``):

  flops           floating-point operations of one call
  bytes accessed  bytes read and written by its (fused) operations

These counts are properties of the compiled program, not of the machine's load or clock, so they
can be taken on a shared CPU. They are XLA's model, with its rules:

* a conditional counts its costliest branch: SSAM-F's Fisher refresh, RigL's mask update and
  ZO-LookSAM's ascent count as on a refresh step, not amortised. Exact LookSAM has no conditional
  in the CPU lowering (both branches run and one is selected, ``zosam_jax._src.control_flow``),
  so on CPU its every step counts both passes, as it also runs them;
* a loop body counts once whatever its trip count, so a row with ``loops`` is an undercount
  (``loops``, ``conditionals``: those of the compiled program that hold a pass of the model, a
  convolution or matrix product; the PRNG's small loops are not counted);
* the program is the one compiled for this backend (fusion, layouts), so bytes accessed in
  particular are XLA:CPU's on a CPU host.

Usage:
  python -m benchmarks.step_flops                                   # CNN, dense and RigL
  python -m benchmarks.step_flops --models cnn resnet20 --sparse dense rigl --batch-size 128
"""

from __future__ import annotations

import argparse
import json
import re

import jax
import jax.numpy as jnp

from benchmarks import timing

SPARSE_CHOICES = ("dense", "rigl", "set", "mest", "dsr")
_COMPUTATION = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")
_CALLED = re.compile(
  r"(?:body|calls|to_apply|condition|true_computation|false_computation)=%([\w.\-]+)"
  r"|branch_computations=\{([^}]*)\}"
)


def _called(line: str) -> list[str]:
  """The computations an HLO instruction calls (bodies, branches, fusions, reducers)."""
  names = []
  for single, branches in _CALLED.findall(line):
    names += [single] if single else [b.strip().lstrip("%") for b in branches.split(",")]
  return names


def heavy_control_flow(hlo: str) -> tuple[int, int]:
  """``(loops, conditionals)`` of a compiled HLO module whose body or a branch holds (directly or
  in what it calls) a convolution or a matrix product: a pass of the model. The PRNG's small
  loops are left out that way."""
  bodies: dict[str, list[str]] = {}
  name = None
  for line in hlo.splitlines():
    if match := _COMPUTATION.match(line):
      name = match.group(1)
      bodies[name] = []
    elif name is not None:
      if line == "}":
        name = None
      else:
        bodies[name].append(line)
  memo: dict[str, bool] = {}

  def heavy(computation: str) -> bool:
    if computation not in memo:
      memo[computation] = False  # guards against cycles (none in HLO)
      lines = bodies.get(computation, [])
      memo[computation] = any(" convolution(" in x or " dot(" in x for x in lines) or any(
        heavy(c) for x in lines for c in _called(x)
      )
    return memo[computation]

  loops = conditionals = 0
  for lines in bodies.values():
    for line in lines:
      if " while(" in line:
        loops += heavy(re.search(r"body=%([\w.\-]+)", line).group(1))
      elif " conditional(" in line:
        conditionals += any(heavy(c) for c in _called(line))
  return loops, conditionals


def _config(model: str, head: str, sparse: str, batch_size: int):
  from experiments.configs import default

  config = default.get_config()
  config.model.name = model
  config.dataset.name = "fashion_mnist" if model == "cnn" else "cifar10"
  config.optimizer.name = head
  config.sparse.method = sparse
  config.batch_size = batch_size
  return config


def step_cost(model: str, head: str, sparse: str, batch_size: int) -> dict:
  """XLA's counts for one compiled step of the trainer, and its loops and conditionals."""
  from experiments import input_pipeline, train

  config = _config(model, head, sparse, batch_size)
  spec = input_pipeline.SPECS[config.dataset.name]
  net, tx, state = train.build_abstract(config, spec)
  batch = {
    "image": jax.ShapeDtypeStruct((batch_size, *spec.image_shape), jnp.float32),
    "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32),
  }
  compiled = jax.jit(train.train_step_fn(config, net, tx)).lower(state, batch).compile()
  cost = timing.cost_analysis(compiled)
  loops, conditionals = heavy_control_flow(compiled.as_text())
  return {
    "model": model,
    "sparse": sparse,
    "sparsity": None if sparse == "dense" else config.sparse.sparsity,
    "head": head,
    "batch_size": batch_size,
    "flops": cost.get("flops"),
    "bytes_accessed": cost.get("bytes accessed"),
    "loops": loops,
    "conditionals": conditionals,
  }


def report(rows: list[dict]) -> None:
  """One Markdown table per model and sparsity, with ratios to that table's SGD."""
  groups: dict[tuple, list[dict]] = {}
  for row in rows:
    groups.setdefault((row["model"], row["sparse"], row["batch_size"]), []).append(row)
  for (model, sparse, batch_size), group in groups.items():
    sgd = next((r for r in group if r["head"] == "sgd"), None)
    label = sparse if sparse == "dense" else f"{sparse} {group[0]['sparsity']:.0%}"
    print(f"\n## {model}, {label}, batch {batch_size}")
    print("| head | GFLOP | x SGD | GB accessed | x SGD | loops | conditionals |")
    print("|---|---|---|---|---|---|---|")
    for r in group:
      flops, moved = r["flops"], r["bytes_accessed"]
      x_flops = "" if sgd is None or not sgd["flops"] else f"{flops / sgd['flops']:.2f}"
      x_bytes = (
        "" if sgd is None or not sgd["bytes_accessed"] else f"{moved / sgd['bytes_accessed']:.2f}"
      )
      print(
        f"| {r['head']} | {flops / 1e9:.2f} | {x_flops} | {moved / 1e9:.3f} | {x_bytes} | "
        f"{r['loops']} | {r['conditionals']} |"
      )


def main() -> None:
  from experiments import optimizers

  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", nargs="+", default=["cnn"], help="cnn, resnet20, resnet32, ...")
  parser.add_argument("--sparse", nargs="+", default=["dense", "rigl"], choices=SPARSE_CHOICES)
  parser.add_argument("--heads", nargs="+", default=list(optimizers.HEADS))
  parser.add_argument("--batch-size", type=int, default=128)
  parser.add_argument("--json", help="also write the rows to this JSON file")
  args = parser.parse_args()
  unknown = sorted(set(args.heads) - set(optimizers.HEADS))
  if unknown:
    parser.error(f"--heads: unknown {', '.join(unknown)}; valid: {', '.join(optimizers.HEADS)}")
  device = timing.device_line()
  print(device)
  print("XLA's cost model of the compiled step (no timing; see the module docstring)")
  rows = []
  for model in args.models:
    for sparse in args.sparse:
      group = [step_cost(model, head, sparse, args.batch_size) for head in args.heads]
      report(group)
      rows += group
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
