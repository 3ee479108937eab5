"""Settings of every test session: pytest imports this before any test module, so before JAX
starts a backend (XLA reads ``XLA_FLAGS`` then)."""

from __future__ import annotations

import os

import pytest

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
# older emitters and float32 results may differ in rounding, which the default suite's
# comparisons tolerate; one slow test does not (pytest_configure below). (An unknown flag in
# XLA_FLAGS aborts XLA at start-up: if a jaxlib drops this one, remove it here.)
FUSION_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters=false"
# The marker expression of the default run (pyproject.toml's addopts).
DEFAULT_SELECTION = "not slow"


def xla_flags(*extra: str) -> str:
  """``XLA_FLAGS`` for a subprocess of a test: this session's flags, then ``extra`` (XLA takes
  the last value of a flag given twice)."""
  return " ".join([os.environ.get("XLA_FLAGS", ""), *extra]).strip()


if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = xla_flags(OPT_LEVEL_FLAG)


def pytest_configure(config: pytest.Config) -> None:
  """Turns XLA:CPU's fusion emitters off for the default selection only (before any test module
  is imported, so before JAX starts a backend).

  With them off, ``test_analyze.py::test_every_part_on_two_runs`` (slow) fails: SAM's loss
  increase, computed alike in the separately compiled program of each direction count, is no
  longer the same to the last bit. So ``-m slow`` (or any other selection) compiles as programs
  normally do: the slow tests always run that way, and the default suite passes both ways. A
  setting of the flag in XLA_FLAGS is kept.
  """
  default_run = config.getoption("markexpr") == DEFAULT_SELECTION
  if default_run and "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = xla_flags(FUSION_EMITTERS_FLAG)
