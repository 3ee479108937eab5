"""What every benchmark here measures with: median wall times of jitted calls (in rounds, or
paired with a reference), XLA's compiled cost and memory figures, and the device line.

Timings are taken after warm-up (compilation) and every call is ended with
``jax.block_until_ready``, so a time covers the computation and not only its dispatch.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import optax

Step = tuple[Callable[..., Any], Sequence[Any]]  # a jitted function and its first arguments


def device_line() -> str:
  """The device the figures come from, and the versions that produced them."""
  import jaxlib

  device = jax.devices()[0]
  return (
    f"device: {device.device_kind} | platform {device.platform} ({jax.device_count()} device(s))"
    f" | jax {jax.__version__}, jaxlib {jaxlib.__version__}, optax {optax.__version__} | host "
    f"{platform.processor() or platform.machine()}"
  )


def timing_flags(
  parser: argparse.ArgumentParser, *, rounds: int, batch_size: int | None = None
) -> None:
  """Adds ``--rounds`` (timing rounds, >= 1) and, with a default, ``--batch-size``."""
  if batch_size is not None:
    parser.add_argument("--batch-size", type=int, default=batch_size)
  parser.add_argument("--rounds", type=_at_least_one, default=rounds, help="timing rounds")


def _at_least_one(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def timeit(fn: Callable[[], object], calls: int) -> float:
  """Median seconds of ``calls`` calls of ``fn()``."""
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def median_times(
  configs: dict[str, Step],
  rounds: int,
  *,
  warmup: int = 2,
  stateful: Callable[[str], bool] = lambda key: False,
  calls: Callable[[str], int] = lambda key: 1,
) -> dict[str, float]:
  """Median seconds per call of every configuration ``key -> (fn, args)``.

  ``warmup`` untimed passes (the first compiles), then ``rounds`` rounds timing every
  configuration once in turn (``calls(key)`` calls, averaged), so drift on a shared machine hits
  all alike. A ``stateful`` configuration is a step fed its own output: what ``fn`` returns is
  its next arguments.
  """
  state = {k: tuple(args) for k, (_, args) in configs.items()}

  def call(key, fn):
    out = jax.block_until_ready(fn(*state[key]))
    if stateful(key):
      state[key] = out

  for _ in range(warmup):
    for k, (fn, _) in configs.items():
      call(k, fn)
  times: dict[str, list[float]] = {k: [] for k in configs}
  for _ in range(rounds):
    for k, (fn, _) in configs.items():
      n = calls(k)
      start = time.perf_counter()
      for _ in range(n):
        call(k, fn)
      times[k].append((time.perf_counter() - start) / n)
  return {k: statistics.median(v) for k, v in times.items()}


def paired_times(
  configs: dict[str, Callable[[], object]], ref: str, rounds: int, calls: int, *, warmup: int = 1
) -> tuple[dict[str, float], dict[str, float]]:
  """Median time of every configuration and its median ratio to ``ref``, each timed right after
  ``ref`` in every round (drift on a shared machine cancels in the ratio). The time of ``ref``
  is the median over all of its timings."""
  for _ in range(warmup):
    for fn in configs.values():
      jax.block_until_ready(fn())
  times: dict[str, list[float]] = {k: [] for k in configs}
  ratios: dict[str, list[float]] = {k: [] for k in configs}
  for _ in range(rounds):
    for k, fn in configs.items():
      t_ref = timeit(configs[ref], calls)
      t_k = timeit(fn, calls)
      times[ref].append(t_ref)
      times[k].append(t_k)
      ratios[k].append(t_k / t_ref)
  return (
    {k: statistics.median(v) for k, v in times.items()},
    {k: statistics.median(v) for k, v in ratios.items()},
  )


def cost_analysis(compiled: Any) -> dict[str, float]:
  """XLA's cost analysis of a compiled program (``flops``, ``bytes accessed``, ...); empty where
  the backend gives none (best effort)."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 - cost analysis is best effort on some backends
    return {}
  if isinstance(analysis, list | tuple):  # older jax: one dict per computation
    analysis = analysis[0] if analysis else {}
  return dict(analysis or {})


def compiled_cost(fn: Any, *args: Any) -> dict[str, float]:
  """XLA's cost analysis of ``fn`` compiled for ``args`` (see :func:`cost_analysis`)."""
  try:
    compiled = fn.lower(*args).compile()
  except Exception:  # noqa: BLE001 - kept best effort, as before
    return {}
  return cost_analysis(compiled)


def temp_bytes(fn: Any, *args: Any) -> int | None:
  """XLA's temporary-buffer size of ``fn`` compiled for ``args`` (``None`` where unknown)."""
  try:
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes
  except Exception:  # noqa: BLE001 - memory analysis is best effort on some backends
    return None
