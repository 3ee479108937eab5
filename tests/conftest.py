"""Settings of every test session: pytest imports this before any test module, so before JAX
starts a backend (XLA reads ``XLA_FLAGS`` then)."""

from __future__ import annotations

import os

# The tests compile hundreds of small programs and run each for milliseconds, so most of their
# CPU time is XLA:CPU's LLVM code generation. At LLVM optimisation level 0 that costs 25-60% less
# per test file (docs/testing.md). XLA's own (HLO) passes -- fusion, layouts, buffer assignment --
# still run, so what is computed is the same; values may differ from the default level's in
# float32 rounding (1e-6 after 20 SAM/ZO-SAM steps of a small CNN), which the tests' comparisons
# of two computations tolerate. A level set in XLA_FLAGS is kept: XLA_FLAGS=
# --xla_backend_optimization_level=3 (XLA's default) runs the tests as programs normally compile.
OPT_LEVEL_FLAG = "--xla_backend_optimization_level=0"
# XLA:CPU's fusion emitters (its MLIR code generation of fused operations, on by default) take
# 2-3 times the compile time of its older LLVM emitters on these small programs, and compiling
# is most of the suite's time (docs/testing.md). Off, the same computations are compiled by the
# older emitters; float32 results may differ in rounding, which the tests' comparisons of two
# computations tolerate. A setting of the flag in XLA_FLAGS is kept: XLA_FLAGS=
# "--xla_cpu_use_fusion_emitters=true" compiles as programs normally do. (An unknown flag in
# XLA_FLAGS aborts XLA at start-up: if a jaxlib drops this one, remove it here.)
FUSION_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters=false"


def xla_flags(*extra: str) -> str:
  """``XLA_FLAGS`` for a subprocess of a test: this session's flags, then ``extra`` (XLA takes
  the last value of a flag given twice)."""
  return " ".join([os.environ.get("XLA_FLAGS", ""), *extra]).strip()


for name, flag in (
  ("xla_backend_optimization_level", OPT_LEVEL_FLAG),
  ("xla_cpu_use_fusion_emitters", FUSION_EMITTERS_FLAG),
):
  if name not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = xla_flags(flag)
