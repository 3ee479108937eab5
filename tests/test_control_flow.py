"""The conv-aware conditional used by LookSAM's refresh (zosam_jax/_src/control_flow.py): the
same values everywhere; per lowering platform, a select on CPU when a branch has convolutions and
a ``lax.cond`` otherwise."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests import _lowering
from zosam_jax._src import control_flow


def _conv_loss(w, x):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jnp.sum(y**2)


def _dense_loss(w, x):
  return jnp.sum(jnp.sin(w) * jnp.mean(x)) + jnp.sum(w**3)


def _inputs():
  kw, kx = jax.random.split(jax.random.PRNGKey(0))
  return jax.random.normal(kw, (3, 3, 2, 2)), jax.random.normal(kx, (2, 4, 4, 2))


def _step(loss):
  """``(pred, w, x) ->`` the gradient at ``w`` or at ``2 w``, chosen by ``pred``."""
  grad = jax.grad(loss)

  def step(pred, w, x):
    return control_flow.cond_with_backward(pred, lambda: grad(w, x), lambda: grad(2.0 * w, x))

  return step


@pytest.mark.parametrize("loss", [_conv_loss, _dense_loss])
@pytest.mark.parametrize("pred", [True, False])
def test_result_equals_the_chosen_branch(loss, pred):
  w, x = _inputs()
  expected = jax.grad(loss)(w, x) if pred else jax.grad(loss)(2.0 * w, x)
  got = jax.jit(_step(loss))(jnp.asarray(pred), w, x)
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("platform", ["cpu", "cuda", "tpu"])
def test_lowering_selects_on_cpu_only_when_a_branch_has_convolutions(platform):
  # Exported from this CPU host: the choice follows the platform lowered for, not the host.
  args = (jnp.asarray(True), *_inputs())
  conv = _lowering.export_text(_step(_conv_loss), args, platform)
  dense = _lowering.export_text(_step(_dense_loss), args, platform)
  assert _lowering.conditionals(conv) == (0 if platform == "cpu" else 1)
  assert _lowering.conditionals(dense, holding=None) == 1


def test_cpu_compilation_keeps_the_convolutions_out_of_control_flow():
  # What the workaround is for: XLA:CPU gets no conditional around the convolution backward.
  args = (jnp.asarray(True), *_inputs())
  hlo = jax.jit(_step(_conv_loss)).lower(*args).compile().as_text()
  assert "convolution(" in hlo and " conditional(" not in hlo


@pytest.mark.parametrize("pred", [True, False])
def test_a_multi_platform_export_runs_on_cpu(pred):
  # One module for every platform; on this host it resolves to the CPU branch when compiled.
  w, x = _inputs()
  exported = jax.export.export(jax.jit(_step(_conv_loss)), platforms=("cpu", "cuda", "tpu"))(
    jnp.asarray(pred), w, x
  )
  assert exported.platforms == ("cpu", "cuda", "tpu")
  expected = jax.grad(_conv_loss)(w if pred else 2.0 * w, x)
  np.testing.assert_allclose(exported.call(jnp.asarray(pred), w, x), expected, rtol=1e-5)
