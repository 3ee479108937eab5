"""zosam_jax.flax_utils: every head through linen's TrainState and NNX's Optimizer.

Expected values are derived: SAM's step equals ``theta - lr grad L(theta + eps)`` with
``eps = rho g/||g||`` written out, BatchNorm statistics included (linen and NNX); the NNX step of
every head equals the chain run on an explicit functional form of the same network; every head
runs through linen's ``apply_loss`` with BatchNorm statistics as its aux.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

import zosam_jax as zj
from tests._helpers import PER_EXAMPLE_HEADS, every_head
from zosam_jax import flax_utils

LR, RHO = 0.1, 0.05
X = jax.random.normal(jax.random.key(0), (8, 4))
Y = jnp.array([0, 1, 2, 0, 1, 2, 0, 1])
BATCH = {"x": X, "y": Y}


def _close(a, b, **kw):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, **kw), a, b)


# ----------------------------------------------------------------------------- linen


class _LinenNet(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = True):
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(nn.Dense(8)(x))
    return nn.Dense(3)(nn.relu(x))


class _State(train_state.TrainState):
  batch_stats: Any


def _linen_state(tx):
  model = _LinenNet()
  variables = model.init(jax.random.key(1), X, train=False)
  return _State.create(
    apply_fn=model.apply, params=variables["params"], tx=tx, batch_stats=variables["batch_stats"]
  )


def _linen_losses(state):
  """``(loss_fn, per_example_loss_fn)`` with the aux ``new batch_stats``."""

  def per_example(params, batch):
    logits, new = state.apply_fn(
      {"params": params, "batch_stats": state.batch_stats},
      batch["x"],
      mutable=["batch_stats"],
    )
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    return losses, new["batch_stats"]

  def loss_fn(params):
    losses, stats = per_example(params, BATCH)
    return losses.mean(), stats

  return loss_fn, per_example


@pytest.mark.parametrize("name", sorted(every_head()))
def test_linen_apply_loss_runs_every_head_with_batch_norm(name):
  tx = optax.chain(every_head(has_aux=True)[name], optax.sgd(LR, momentum=0.9))
  state = _linen_state(tx)
  loss_fn, per_example = _linen_losses(state)
  extra = {"per_example_loss_fn": per_example, "batch": BATCH} if name in PER_EXAMPLE_HEADS else {}

  new_state, value, aux = jax.jit(lambda s: flax_utils.apply_loss(s, loss_fn, **extra))(state)

  # What apply_loss returns is the head's state protocol of the new state; the step moved on.
  np.testing.assert_array_equal(value, optax.tree_utils.tree_get(new_state.opt_state, "value"))
  jax.tree.map(
    np.testing.assert_array_equal, aux, optax.tree_utils.tree_get(new_state.opt_state, "aux")
  )
  assert jax.tree.structure(aux) == jax.tree.structure(state.batch_stats)
  assert value.dtype == jnp.float32 and np.isfinite(value)
  assert int(new_state.step) == 1
  assert not np.allclose(new_state.params["Dense_1"]["kernel"], state.params["Dense_1"]["kernel"])


def test_linen_sam_step_and_batch_stats_from_the_perturbed_pass():
  state = _linen_state(optax.chain(zj.sam(RHO, has_aux=True), optax.sgd(LR)))
  loss_fn, _ = _linen_losses(state)

  new_state, value, stats = jax.jit(lambda s: flax_utils.apply_loss(s, loss_fn))(state)
  new_state = new_state.replace(batch_stats=stats)

  # SAM written out: eps = rho g/||g||, the update is the gradient at theta + eps, and the
  # BatchNorm statistics are those of that same pass.
  g = jax.grad(lambda p: loss_fn(p)[0])(state.params)
  norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
  adv = jax.tree.map(lambda p, d: p + RHO * d / norm, state.params, g)
  (adv_loss, adv_stats), g_adv = jax.value_and_grad(loss_fn, has_aux=True)(adv)
  _close(
    new_state.params,
    jax.tree.map(lambda p, d: p - LR * d, state.params, g_adv),
    rtol=1e-5,
    atol=1e-7,
  )
  _close(new_state.batch_stats, adv_stats, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(value, adv_loss, rtol=1e-6)
  assert not np.allclose(stats["BatchNorm_0"]["mean"], state.batch_stats["BatchNorm_0"]["mean"])


def test_linen_apply_loss_refuses_a_chain_without_a_head():
  state = _linen_state(optax.sgd(LR))
  with pytest.raises(ValueError, match="headed by a zosam_jax head"):
    flax_utils.apply_loss(state, _linen_losses(state)[0])


# ----------------------------------------------------------------------------- NNX


class _NnxNet(nnx.Module):
  def __init__(self, rngs: nnx.Rngs, *, batch_norm: bool = True, dropout: float = 0.0):
    self.l1 = nnx.Linear(4, 8, rngs=rngs)
    self.bn = nnx.BatchNorm(8, momentum=0.9, rngs=rngs) if batch_norm else None
    self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
    self.l2 = nnx.Linear(8, 3, rngs=rngs)

  def __call__(self, x):
    h = self.l1(x)
    if self.bn is not None:
      h = self.bn(h)
    if self.drop is not None:
      h = self.drop(h)
    return self.l2(nnx.relu(h))


def _nnx_per_example(model, batch):
  return optax.softmax_cross_entropy_with_integer_labels(model(batch["x"]), batch["y"])


def _nnx_loss(model):
  logits = model(X)
  return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean(), logits


def _explicit_logits(p, x, bn_stats=None):
  """The network written out from its arrays (BatchNorm in training mode when ``bn_stats``)."""
  h = x @ p["l1"]["kernel"] + p["l1"]["bias"]
  new_stats = None
  if bn_stats is not None:
    mean, var = h.mean(0), (h**2).mean(0) - h.mean(0) ** 2  # Flax: biased variance
    h = (h - mean) / jnp.sqrt(var + 1e-5) * p["bn"]["scale"] + p["bn"]["bias"]
    new_stats = {
      "mean": 0.9 * bn_stats["mean"] + 0.1 * mean,
      "var": 0.9 * bn_stats["var"] + 0.1 * var,
    }
  return jax.nn.relu(h) @ p["l2"]["kernel"] + p["l2"]["bias"], new_stats


def test_nnx_sam_step_equals_sam_written_out_with_batch_norm():
  model = _NnxNet(nnx.Rngs(0))
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  stats0 = {"mean": model.bn.mean[...], "var": model.bn.var[...]}
  optimizer = nnx.Optimizer(
    model, optax.chain(zj.sam(RHO, has_aux=True), optax.sgd(LR)), wrt=nnx.Param
  )

  value, logits = nnx.jit(lambda m, o: flax_utils.nnx_apply_loss(o, m, _nnx_loss, has_aux=True))(
    model, optimizer
  )

  def loss(p):
    out, new_stats = _explicit_logits(p, X, stats0)
    return optax.softmax_cross_entropy_with_integer_labels(out, Y).mean(), (new_stats, out)

  g = jax.grad(lambda p: loss(p)[0])(params)
  norm = jnp.sqrt(sum(jnp.sum(x**2) for x in jax.tree.leaves(g)))
  adv = jax.tree.map(lambda p, d: p + RHO * d / norm, params, g)
  (adv_loss, (adv_stats, adv_logits)), g_adv = jax.value_and_grad(loss, has_aux=True)(adv)
  expected = jax.tree.map(lambda p, d: p - LR * d, params, g_adv)
  _close(nnx.as_pure(nnx.state(model, nnx.Param)), expected, rtol=1e-5, atol=1e-6)
  _close({"mean": model.bn.mean[...], "var": model.bn.var[...]}, adv_stats, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(value, adv_loss, rtol=1e-5)
  np.testing.assert_allclose(logits, adv_logits, rtol=1e-5, atol=1e-6)
  assert int(optimizer.step[...]) == 1


# The NNX plumbing does not depend on the head: by default ESAM (per-example losses through
# nnx_loss_fn) and ZO-SAM (probes); every head with -m slow.
NNX_DEFAULT_HEADS = ("esam", "zo_sam")


@pytest.mark.parametrize(
  "name",
  [
    n if n in NNX_DEFAULT_HEADS else pytest.param(n, marks=pytest.mark.slow)
    for n in sorted(every_head())
  ],
)
def test_nnx_every_head_equals_the_chain_on_the_explicit_network(name):
  model = _NnxNet(nnx.Rngs(0), batch_norm=False)
  params = nnx.as_pure(nnx.state(model, nnx.Param))
  tx = optax.chain(every_head(has_aux=True)[name], optax.sgd(LR, momentum=0.9))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  extra = {}
  if name in PER_EXAMPLE_HEADS:
    extra = {
      "per_example_loss_fn": flax_utils.nnx_loss_fn(model, _nnx_per_example),
      "batch": BATCH,
    }

  @nnx.jit
  def step(model, optimizer):
    return flax_utils.nnx_apply_loss(optimizer, model, _nnx_loss, has_aux=True, **extra)

  step(model, optimizer)

  def per_example(p, batch):
    logits, _ = _explicit_logits(p, batch["x"])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]), None

  def loss_fn(p):
    return per_example(p, BATCH)[0].mean(), None

  extra = {"per_example_loss_fn": per_example, "batch": BATCH} if name in PER_EXAMPLE_HEADS else {}

  @jax.jit
  def one_step(p):
    updates, _ = tx.update(None, tx.init(p), p, loss_fn=loss_fn, **extra)
    return optax.apply_updates(p, updates)

  expected = one_step(params)
  _close(nnx.as_pure(nnx.state(model, nnx.Param)), expected, rtol=2e-5, atol=1e-6)
  assert not np.allclose(model.l2.kernel[...], params["l2"]["kernel"])


def test_nnx_probes_share_one_dropout_mask_and_the_rng_advances_once_per_step():
  model = _NnxNet(nnx.Rngs(0), dropout=0.5)
  tx = optax.chain(zj.zo_sam(RHO, num_directions=2, seed=0, has_aux=True), optax.sgd(LR))
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  count = lambda: int(model.drop.rngs.count[...])  # noqa: E731
  traces = []

  @nnx.jit
  def step(model, optimizer):
    traces.append(1)
    return flax_utils.nnx_apply_loss(optimizer, model, _nnx_loss, has_aux=True)

  start, mean0 = count(), model.bn.mean[...]
  values = [float(step(model, optimizer)[0]) for _ in range(3)]
  # ZO-SAM with 2 central directions calls the loss 5 times a step; the model's state moves as
  # after one call: that of the exact-gradient pass.
  assert count() == start + 3
  assert len(traces) == 2  # the first step fills the aux slot, then one program is reused
  assert np.all(np.isfinite(values))
  assert not np.allclose(model.bn.mean[...], mean0)


def test_nnx_apply_loss_says_what_is_wrong():
  model = _NnxNet(nnx.Rngs(0))
  no_aux = nnx.Optimizer(model, optax.chain(zj.sam(RHO), optax.sgd(LR)), wrt=nnx.Param)
  with pytest.raises(ValueError, match="has_aux=True"):
    flax_utils.nnx_apply_loss(no_aux, model, _nnx_loss, has_aux=True)
  no_head = nnx.Optimizer(model, optax.sgd(LR), wrt=nnx.Param)
  with pytest.raises(ValueError, match="headed by a zosam_jax head"):
    flax_utils.nnx_apply_loss(no_head, model, _nnx_loss, has_aux=True)
