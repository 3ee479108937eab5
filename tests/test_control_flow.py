"""The conv-aware conditional used by LookSAM's refresh (zosam_jax/_src/control_flow.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from zosam_jax._src import control_flow


def _conv_loss(w, x):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(y**2)


def _dense_loss(w, x):
  return jnp.sum(jnp.sin(w) * jnp.mean(x)) + jnp.sum(w**3)


def _primitives(fn, *args):
  return control_flow.primitive_names(jax.make_jaxpr(fn)(*args).jaxpr)


@pytest.mark.parametrize("loss", [_conv_loss, _dense_loss])
@pytest.mark.parametrize("pred", [True, False])
def test_result_equals_the_chosen_branch(loss, pred):
  kw, kx = jax.random.split(jax.random.PRNGKey(0))
  w = jax.random.normal(kw, (3, 3, 2, 2))
  x = jax.random.normal(kx, (2, 4, 4, 2))
  grad = jax.grad(loss)

  @jax.jit
  def run(p):
    return control_flow.cond_with_backward(p, lambda: grad(w, x), lambda: grad(2.0 * w, x))

  expected = grad(w, x) if pred else grad(2.0 * w, x)
  np.testing.assert_allclose(run(jnp.asarray(pred)), expected, rtol=1e-5)


def test_selects_on_cpu_only_when_a_branch_has_convolutions():
  w = jnp.ones((3, 3, 2, 2))
  x = jnp.ones((2, 4, 4, 2))

  def step(loss):
    grad = jax.grad(loss)
    return lambda p: control_flow.cond_with_backward(
      p, lambda: grad(w, x), lambda: jnp.zeros_like(w)
    )

  conv = _primitives(step(_conv_loss), True)
  dense = _primitives(step(_dense_loss), True)
  assert "conv_general_dilated" in conv and "cond" not in conv
  assert "cond" in dense
