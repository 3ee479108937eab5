"""A conditional whose branch back-propagates through convolutions.

XLA:CPU rewrites convolutions into the canonical layout that its fast (Eigen) kernels need only in
the entry computation, not inside ``cond``/``while`` bodies. The convolutions of a backward pass
(input and filter gradients) are not canonical, so inside a conditional they fall back to a naive
loop: a ResNet-20 forward-backward at batch 16 took 1.29 s inside ``lax.cond`` against 71 ms at top
level on our 2-core CPU (forward passes alone are unaffected: 17.8 ms against 17.0 ms). There it
is cheaper to run both branches and select, which is what :func:`cond_with_backward` lowers to for
the CPU; for every other platform (GPU, TPU) it lowers to ``lax.cond``.

The choice is made per platform when the computation is lowered (``lax.platform_dependent``), not
from the host's default backend when it is traced: an export for an accelerator made on a CPU
host (``jax.export.export(jax.jit(f), platforms=("cuda",))``) gets the conditional, and a
multi-platform export carries both, resolved when it is compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core


def _jaxprs_in(value: Any) -> Iterator[jax_core.Jaxpr]:
  if isinstance(value, jax_core.ClosedJaxpr):
    yield value.jaxpr
  elif isinstance(value, jax_core.Jaxpr):
    yield value
  elif isinstance(value, tuple | list):
    for v in value:
      yield from _jaxprs_in(v)


def primitive_names(jaxpr: jax_core.Jaxpr) -> set[str]:
  """The names of the primitives in ``jaxpr``, those of nested jaxprs (branches, bodies) too."""
  names: set[str] = set()
  for eqn in jaxpr.eqns:
    names.add(eqn.primitive.name)
    for param in eqn.params.values():
      for sub in _jaxprs_in(param):
        names |= primitive_names(sub)
  return names


def cond_with_backward(
  pred: jax.Array, true_fn: Callable[[], Any], false_fn: Callable[[], Any]
) -> Any:
  """``lax.cond(pred, true_fn, false_fn)``, except in the CPU lowering when a branch uses
  convolutions: there both branches run and the result is selected (see the module docstring).

  The platform is that of the lowering, so one traced function lowers to the select for the CPU
  and to the ``cond`` for a GPU or TPU. Both forms give the same value.
  """

  def uses_convolution(fn: Callable[[], Any]) -> bool:
    return "conv_general_dilated" in primitive_names(jax.make_jaxpr(fn)().jaxpr)

  def conditional(p: jax.Array) -> Any:
    return jax.lax.cond(p, true_fn, false_fn)

  if not any(uses_convolution(f) for f in (true_fn, false_fn)):
    return conditional(pred)

  def select(p: jax.Array) -> Any:
    return jax.tree.map(lambda a, b: jnp.where(p, a, b), true_fn(), false_fn())

  return jax.lax.platform_dependent(pred, cpu=select, default=conditional)
