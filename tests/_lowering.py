"""Reading a lowered (StableHLO) module: its conditionals, and which of them hold convolutions.

Used by the export tests: per platform, a ``lax.platform_dependent`` keeps only the branch of the
lowering platform, and what is left of it is a one-branch ``stablehlo.case`` (always taken, so
not a conditional); a ``lax.cond`` is a ``stablehlo.case`` with two or more branches.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax
from jax.extend.mlir import ir
from jax.interpreters import mlir as jax_mlir


def _ops(op: ir.Operation) -> Iterator[ir.Operation]:
  """The operations nested in ``op``'s regions, outermost first (``op`` itself excluded)."""
  for region in op.regions:
    for block in region.blocks:
      for child in block.operations:
        yield child.operation
        yield from _ops(child.operation)


def conditionals(module_text: str, holding: str | None = "stablehlo.convolution") -> int:
  """How many conditionals (``stablehlo.case`` with at least two branches) of the module hold an
  operation named ``holding`` in a branch, directly or in a function a branch calls (``None``:
  every conditional).

  Meant for single-platform lowerings: a multi-platform module also switches on the platform,
  and some of its lowering rules differ per platform, which adds cases of its own.
  """
  with jax_mlir.make_ir_context():
    module = ir.Module.parse(module_text)
    functions = {
      ir.StringAttr(op.attributes["sym_name"]).value: op.operation
      for op in module.body.operations
      if op.operation.name == "func.func"
    }
    called: dict[str, bool] = {}

    def holds(op: ir.Operation) -> bool:
      if holding is None:
        return True
      for inner in _ops(op):
        if inner.name == holding:
          return True
        if inner.name == "func.call":
          callee = ir.FlatSymbolRefAttr(inner.attributes["callee"]).value
          if callee not in called:
            called[callee] = False  # guards against recursion (none in JAX's output)
            called[callee] = holds(functions[callee])
          if called[callee]:
            return True
      return False

    return sum(
      1
      for function in functions.values()
      for op in _ops(function)
      if op.name == "stablehlo.case" and len(op.regions) > 1 and holds(op)
    )


def export_text(fn, args, platform: str) -> str:
  """The StableHLO text of ``jax.jit(fn)`` exported for ``platform`` alone at ``args`` (arrays
  or ``jax.ShapeDtypeStruct``s); ``fn`` may already be jitted."""
  jitted = fn if hasattr(fn, "trace") else jax.jit(fn)
  return jax.export.export(jitted, platforms=(platform,))(*args).mlir_module()
