"""Every head on a tiny mixed-precision model (bfloat16 activations, float32 parameters, as
``experiments.models`` with ``dtype="bfloat16"``): finite, the loss goes down, and every point the
head evaluates (``theta``, ``theta + eps``, ``theta +- mu u``), every update and the new
parameters are float32."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests._helpers import PER_EXAMPLE_HEADS, every_head

STEPS, LR = 5, 0.05


class _Net(nn.Module):
  """Dense-BatchNorm-ReLU-Dense computed in bfloat16 on float32 parameters, float32 logits."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    bf16 = jnp.bfloat16
    x = nn.Dense(16, dtype=bf16)(x.reshape((x.shape[0], -1)))
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=bf16)(x))
    return nn.Dense(4, dtype=bf16)(x).astype(jnp.float32)


def _problem():
  model = _Net()
  keys = jax.random.split(jax.random.key(0), 2)
  batch = {
    "image": jax.random.normal(keys[0], (16, 4, 4, 1)),
    "label": jax.random.randint(keys[1], (16,), 0, 4),
  }
  variables = model.init(jax.random.key(1), batch["image"], train=False)
  return model, batch, variables


@pytest.mark.parametrize("name", sorted(every_head()))
def test_every_head_trains_a_bfloat16_model_in_float32(name):
  model, batch, variables = _problem()
  tx = optax.chain(every_head(has_aux=True)[name], optax.sgd(LR, momentum=0.9))
  seen = set()  # dtypes of the parameters the head calls the loss with (recorded when traced)

  def make_losses(stats):
    def per_example(params, b, train=True):
      seen.update(p.dtype for p in jax.tree.leaves(params))
      v = {"params": params, "batch_stats": stats}
      if train:
        logits, new = model.apply(v, b["image"], train=True, mutable=["batch_stats"])
      else:
        logits, new = model.apply(v, b["image"], train=False), {"batch_stats": stats}
      assert logits.dtype == jnp.float32  # the loss is reduced in float32
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, b["label"])
      return losses, new["batch_stats"]

    def loss_fn(params):
      losses, new_stats = per_example(params, batch)
      return losses.mean(), new_stats

    extra = {}
    if name == "esam":
      extra = {"per_example_loss_fn": per_example, "batch": batch}
    elif name in PER_EXAMPLE_HEADS:  # SSAM-F: BatchNorm in inference mode on single examples
      extra = {"per_example_loss_fn": lambda p, b: per_example(p, b, False), "batch": batch}
    return loss_fn, extra

  @jax.jit
  def step(params, stats, opt_state):
    loss_fn, extra = make_losses(stats)
    updates, opt_state = tx.update(None, opt_state, params, loss_fn=loss_fn, **extra)
    return updates, optax.apply_updates(params, updates), opt_state

  params, stats = variables["params"], variables["batch_stats"]
  opt_state = optax.tree_utils.tree_set(tx.init(params), aux=stats)
  start = float(make_losses(stats)[0](params)[0])
  for _ in range(STEPS):
    updates, params, opt_state = step(params, stats, opt_state)
    stats = optax.tree_utils.tree_get(opt_state, "aux")
    for tree in (updates, params, stats):
      assert {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
      assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))
  assert seen == {jnp.dtype(jnp.float32)}
  assert optax.tree_utils.tree_get(opt_state, "value").dtype == jnp.float32
  end = float(make_losses(stats)[0](params)[0])
  assert np.isfinite(end) and end < start, (start, end)
