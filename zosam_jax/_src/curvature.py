"""The gradient and the Hessian-vector product of a loss, shared by the sparse methods (GraSP's
scores) and the read-only diagnostics (Lanczos, Hutchinson), which sit in different layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from zosam_jax._src.types import LossFn, PyTree


def gradient(loss_fn: LossFn, params: PyTree, has_aux: bool = False) -> PyTree:
  """``grad L(params)``; with ``has_aux`` the aux output of ``loss_fn`` is dropped."""
  grads = jax.grad(loss_fn, has_aux=has_aux)(params)
  return grads[0] if has_aux else grads


def hessian_vector_product(
  loss_fn: LossFn, params: PyTree, vector: PyTree, *, has_aux: bool = False
) -> PyTree:
  r"""``H(theta) v``: the Hessian of ``loss_fn`` at ``params`` times ``vector``.

  Forward-over-reverse: ``jax.jvp`` of ``jax.grad``,

  .. math:: H v = \frac{d}{dt} \nabla L(\theta + t v) \Big|_{t=0},

  exact (no finite difference). Cost: one forward-mode pass through a forward-backward, about two
  forward-backwards in time and the memory of one forward-backward plus its tangents.

  Args:
    loss_fn: ``params -> scalar`` (or ``(scalar, aux)`` with ``has_aux=True``; aux discarded).
    params: the point ``theta``; a pytree of floating-point arrays.
    vector: ``v``, a pytree like ``params`` (cast to each leaf's dtype).
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    ``H v`` as a pytree like ``params`` (each leaf in the parameter's dtype).

  References:
    Pearlmutter, Neural Computation 1994.
  """
  tangent = jax.tree.map(lambda p, v: jnp.asarray(v, jnp.result_type(p)), params, vector)
  return jax.jvp(lambda p: gradient(loss_fn, p, has_aux), (params,), (tangent,))[1]
