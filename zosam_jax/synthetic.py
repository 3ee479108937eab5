"""Synthetic benchmark functions for zeroth-order optimisers, fully specified.

Each :class:`Problem` states its dimension, domain, optimum, optimal value and starting point; the
functions take a flat float32 vector ``x`` of shape ``[d]`` and return a float32 scalar. They are
pure JAX (jit/vmap friendly) and deterministic: the start is a constant vector, so every optimizer
and seed starts from the same point and only the optimizer's own randomness differs.

* ``quadratic``: ``1/2 sum_i lambda_i x_i^2`` with ``lambda_i = kappa^((i-1)/(d-1))``;
  domain ``R^d``; optimum ``x* = 0``; start ``x_0 = (1, ..., 1)``.
* ``rosenbrock``: ``sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``; domain ``[-5, 10]^d``;
  optimum ``x* = (1, ..., 1)``; start ``x_0 = 0``.
* ``rastrigin``: ``10 d + sum_i (x_i^2 - 10 cos(2 pi x_i))``; domain ``[-5.12, 5.12]^d``;
  optimum ``x* = 0``; start ``x_0 = (2.5, ..., 2.5)``.
* ``ackley``: ``-20 exp(-0.2 sqrt(mean_i x_i^2)) - exp(mean_i cos(2 pi x_i)) + 20 + e``;
  domain ``[-32.768, 32.768]^d``; optimum ``x* = 0``; start ``x_0 = (2.5, ..., 2.5)``.

All four have ``f* = 0``. The quadratic's condition number is ``kappa`` (default 100; its
eigenvalues are log-spaced from 1 to ``kappa``, ``f(x_0) = 1/2 sum_i lambda_i``). Rosenbrock is
the chained (extended) form, non-convex, with ``f(x_0) = d - 1``. Rastrigin starts on the local
maxima of the cosine term in every coordinate (``f(x_0) = 26.25 d``), from which a small-smoothing
estimate rolls into the nearest local minimum and a wide one sees the global bowl. Ackley's start
gives ``f(x_0) = 20 + e - 20 exp(-0.5) - exp(-1) ~= 10.22`` at every ``d``. Nothing clips iterates
to the domain: it is the region the function is usually studied on, stated for completeness.

References:
  Rosenbrock, Comput. J. 1960; Rastrigin 1974; Ackley 1987; Jamil & Yang, "A literature survey of
  benchmark functions for global optimization problems", 2013 (definitions and domains).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple, get_args

import jax
import jax.numpy as jnp

from zosam_jax._src.types import ProblemName

#: The problems :func:`make_problem` builds.
NAMES: tuple[ProblemName, ...] = get_args(ProblemName)
#: Reference dimensions ``d`` (the tests run every problem at these).
DIMENSIONS = (100, 1_000, 10_000)


class Problem(NamedTuple):
  """A synthetic test function with everything needed to reproduce a run.

  Attributes:
    name: one of ``NAMES``.
    dim: ``d``.
    fn: ``x [d] -> float32 scalar``.
    x0: the starting point, float32 ``[d]``.
    x_opt: the minimiser, float32 ``[d]``.
    f_opt: the minimum value (0.0 for all four).
    domain: ``(lower, upper)`` per coordinate (``(-inf, inf)`` for the quadratic).
    description: the formula in words.
  """

  name: str
  dim: int
  fn: Callable[[jax.Array], jax.Array]
  x0: jax.Array
  x_opt: jax.Array
  f_opt: float
  domain: tuple[float, float]
  description: str


def quadratic_eigenvalues(dim: int, condition_number: float) -> jax.Array:
  """The quadratic's eigenvalues ``lambda_i = kappa^((i - 1)/(d - 1))``, ``i = 1..d``.

  Args:
    dim: ``d >= 1``.
    condition_number: ``kappa >= 1``.

  Returns:
    A float32 array of shape ``[d]``, log-spaced from 1 to ``kappa`` (all ones when ``d == 1``).
  """
  if dim == 1:
    return jnp.ones([1], jnp.float32)
  return jnp.asarray(condition_number, jnp.float32) ** jnp.linspace(0.0, 1.0, dim)


def quadratic(x: jax.Array, condition_number: float = 100.0) -> jax.Array:
  """``1/2 sum_i lambda_i x_i^2`` with :func:`quadratic_eigenvalues` (see the module docstring).

  Args:
    x: points, shape ``[..., d]``.
    condition_number: ``kappa >= 1`` (default 100).

  Returns:
    The values, shape ``[...]``.
  """
  lam = quadratic_eigenvalues(x.shape[-1], condition_number)
  return 0.5 * jnp.sum(lam * jnp.square(x), axis=-1)


def rosenbrock(x: jax.Array) -> jax.Array:
  """The chained Rosenbrock function ``sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2``.

  Args:
    x: points, shape ``[..., d]`` with ``d >= 2``.

  Returns:
    The values, shape ``[...]``.
  """
  a, b = x[..., :-1], x[..., 1:]
  return jnp.sum(100.0 * jnp.square(b - jnp.square(a)) + jnp.square(1.0 - a), axis=-1)


def rastrigin(x: jax.Array) -> jax.Array:
  """Rastrigin's function ``10 d + sum_i (x_i^2 - 10 cos(2 pi x_i))``.

  Args:
    x: points, shape ``[..., d]``.

  Returns:
    The values, shape ``[...]``.
  """
  d = x.shape[-1]
  return 10.0 * d + jnp.sum(jnp.square(x) - 10.0 * jnp.cos(2.0 * jnp.pi * x), axis=-1)


def ackley(x: jax.Array) -> jax.Array:
  """Ackley's function ``-20 exp(-0.2 sqrt(mean_i x_i^2)) - exp(mean_i cos(2 pi x_i)) + 20 + e``.

  Args:
    x: points, shape ``[..., d]``.

  Returns:
    The values, shape ``[...]``.
  """
  rms = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1))
  mean_cos = jnp.mean(jnp.cos(2.0 * jnp.pi * x), axis=-1)
  return -20.0 * jnp.exp(-0.2 * rms) - jnp.exp(mean_cos) + 20.0 + math.e


def make_problem(name: ProblemName, dim: int, *, condition_number: float = 100.0) -> Problem:
  """The problem ``name`` at dimension ``dim`` (see the module docstring for the table).

  Args:
    name: one of :data:`NAMES`: ``"quadratic"``, ``"rosenbrock"``, ``"rastrigin"`` or
      ``"ackley"``.
    dim: ``d``, an integer ``>= 2``.
    condition_number: the quadratic's ``kappa >= 1`` (default 100); ignored by the others.

  Returns:
    A :class:`Problem`.

  Examples:
    >>> from zosam_jax import synthetic
    >>> problem = synthetic.make_problem("rosenbrock", 10)
    >>> float(problem.fn(problem.x0)), float(problem.fn(problem.x_opt))  # d - 1, then f* = 0
    (9.0, 0.0)

  Raises:
    ValueError: unknown ``name``, ``dim`` not an integer >= 2, or ``condition_number < 1``.
  """
  if name not in NAMES:
    raise ValueError(f"name must be one of {list(NAMES)}, got {name!r}.")
  if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
    raise ValueError(f"dim must be an integer >= 2, got {dim!r}.")
  if not condition_number >= 1.0:
    raise ValueError(f"condition_number must be >= 1, got {condition_number!r}.")
  zeros = jnp.zeros([dim], jnp.float32)
  ones = jnp.ones([dim], jnp.float32)
  if name == "quadratic":
    kappa = float(condition_number)
    return Problem(
      name,
      dim,
      lambda x: quadratic(x, kappa),
      ones,
      zeros,
      0.0,
      (-math.inf, math.inf),
      f"1/2 sum lambda_i x_i^2, lambda log-spaced in [1, {kappa:g}] (condition number {kappa:g})",
    )
  if name == "rosenbrock":
    return Problem(
      name,
      dim,
      rosenbrock,
      zeros,
      ones,
      0.0,
      (-5.0, 10.0),
      "sum_{i<d} 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2 (chained Rosenbrock)",
    )
  if name == "rastrigin":
    return Problem(
      name,
      dim,
      rastrigin,
      2.5 * ones,
      zeros,
      0.0,
      (-5.12, 5.12),
      "10 d + sum x_i^2 - 10 cos(2 pi x_i)",
    )
  return Problem(
    name,
    dim,
    ackley,
    2.5 * ones,
    zeros,
    0.0,
    (-32.768, 32.768),
    "-20 exp(-0.2 rms(x)) - exp(mean cos(2 pi x_i)) + 20 + e",
  )
