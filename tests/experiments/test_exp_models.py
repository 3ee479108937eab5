"""Every model: output shape and parameter count; BatchNorm statistics in training mode."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from experiments import models

# (name, input shape, classes, expected parameters, relative tolerance)
CASES = [
  ("cnn", (28, 28, 1), 10, 206_970, 0.0),
  ("resnet20", (32, 32, 3), 10, 0.27e6, 0.01),
  ("resnet32", (32, 32, 3), 10, 0.46e6, 0.01),  # The ZO-SAM paper's "0.46M".
  ("resnet56", (32, 32, 3), 10, 0.85e6, 0.01),
  ("resnet18", (32, 32, 3), 10, 11.17e6, 0.01),
  ("wrn28_10", (32, 32, 3), 10, 36.5e6, 0.01),
  ("vgg11_bn", (32, 32, 3), 10, 9.23e6, 0.01),
  ("resnet50", (224, 224, 3), 1000, 25.56e6, 0.01),
  ("deit_tiny", (224, 224, 3), 1000, 5.72e6, 0.01),
  ("deit_small", (224, 224, 3), 1000, 22.05e6, 0.01),
]


@pytest.mark.parametrize("name,shape,classes,expected,rtol", CASES, ids=[c[0] for c in CASES])
def test_output_shape_and_parameter_count(name, shape, classes, expected, rtol):
  model = models.create_model(name, classes)
  x = jnp.zeros((2, *shape))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, x, train=False), variables)
  assert logits.shape == (2, classes)
  count = models.count_params(variables["params"])
  assert abs(count - expected) <= rtol * expected, count


def test_deit_on_cifar_with_small_patches():
  model = models.create_model("deit_tiny", 10, patch_size=4)
  x = jnp.zeros((2, 32, 32, 3))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert variables["params"]["pos_embed"].shape == (1, 65, 192)


@pytest.mark.parametrize("name", ["cnn"])
def test_batch_norm_statistics_update_only_when_mutable(name):
  model = models.create_model(name, 10)
  x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3)) * 3.0 + 1.0
  variables = jax.jit(lambda: model.init(jax.random.key(0), x, train=False))()
  logits, new = jax.jit(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]))(variables)
  assert logits.shape == (4, 10)
  before, after = jax.tree.leaves(variables["batch_stats"]), jax.tree.leaves(new["batch_stats"])
  assert any(not jnp.allclose(a, b) for a, b in zip(before, after, strict=True))
  # Evaluation mode reads the running statistics and changes nothing.
  out = jax.jit(lambda v: model.apply(v, x, train=False))(variables)
  assert out.shape == (4, 10) and bool(jnp.all(jnp.isfinite(out)))


def test_unknown_model_lists_valid_ones():
  with pytest.raises(ValueError, match="valid: cnn, resnet20"):
    models.create_model("resnet33", 10)


@pytest.mark.parametrize("name,shape,classes,expected,rtol", CASES, ids=[c[0] for c in CASES])
def test_bfloat16_computes_in_bfloat16_on_float32_parameters(name, shape, classes, expected, rtol):
  model = models.create_model(name, classes, dtype="bfloat16")
  x = jnp.zeros((2, *shape))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  logits, state = jax.eval_shape(
    lambda v: model.apply(
      v,
      x,
      train=True,
      mutable=["batch_stats", "intermediates"],
      capture_intermediates=True,
      rngs={"dropout": jax.random.key(1)},
    ),
    variables,
  )
  # Master weights and running statistics stay float32; logits come back in float32.
  assert {v.dtype for v in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert logits.dtype == jnp.float32
  # Every layer's output (the intermediates) is bfloat16, except the model's own return value.
  inner = {k: v for k, v in state["intermediates"].items() if k != "__call__"}
  assert {a.dtype for a in jax.tree.leaves(inner)} == {jnp.dtype(jnp.bfloat16)}


def test_unknown_dtype_lists_valid_ones():
  with pytest.raises(ValueError, match="valid: float32, bfloat16"):
    models.create_model("cnn", 10, dtype="float16")
