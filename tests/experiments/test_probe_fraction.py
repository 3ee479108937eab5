"""``optimizer.probe_fraction``: the trainer's sub-batch probes (``probe_loss_fn``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import checks, models, optimizers, steps, train
from tests.experiments.conftest import SUBSET, tiny_config

BATCH = 8


class SpyState(NamedTuple):
  value: jax.Array
  aux: Any
  probe_value: jax.Array
  probe_aux: Any


def spy_head(probe_aux_example):
  """Evaluates ``probe_loss_fn`` once at ``params`` and keeps what it returned."""

  def init_fn(params):
    del params
    zero = jnp.zeros([], jnp.float32)
    return SpyState(zero, None, zero, probe_aux_example)

  def update_fn(updates, state, params=None, *, loss_fn=None, probe_loss_fn=None, **extra):
    (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    probe_value, probe_aux = probe_loss_fn(params)
    return grads, SpyState(value, aux, probe_value, probe_aux)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _loss_and_stats(model, variables, images, labels):
  logits, new = model.apply(variables, images, train=True, mutable=["batch_stats"])
  return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), new


def test_probes_see_the_first_fraction_with_its_own_batch_statistics():
  model = models.create_model("cnn", 10)
  kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
  batch = {
    "image": jax.random.normal(kx, (BATCH, 28, 28, 1)),
    "label": jax.random.randint(ky, (BATCH,), 0, 10),
  }
  variables = model.init(kp, batch["image"][:1], train=False)
  aux_example = {
    "correct": jnp.zeros([], jnp.int32),
    "count": jnp.zeros([], jnp.int32),
    "batch_stats": variables["batch_stats"],
  }
  tx = optax.chain(spy_head(aux_example), optax.sgd(0.0))
  opt_state = optax.tree_utils.tree_set(tx.init(variables["params"]), aux=aux_example)
  state = {
    "step": jnp.zeros([], jnp.int32),
    "params": variables["params"],
    "batch_stats": variables["batch_stats"],
    "opt_state": opt_state,
    "acc": steps.zero_accumulators(),
  }
  size = steps.probe_size(BATCH, 0.25)
  assert size == 2
  out = jax.jit(steps.make_train_step(model, tx, 0, None, probe_fraction=0.25))(state, batch)
  spy = out["opt_state"][0]

  # The probe loss is the training-mode loss on the first quarter, normalised with that
  # quarter's own batch statistics.
  assert int(spy.probe_aux["count"]) == size
  probe_loss, probe_stats = _loss_and_stats(
    model, variables, batch["image"][:size], batch["label"][:size]
  )
  np.testing.assert_allclose(spy.probe_value, probe_loss, rtol=1e-5)
  # The exact pass saw the whole batch, and only its statistics reach the running averages.
  full_loss, full_stats = _loss_and_stats(model, variables, batch["image"], batch["label"])
  assert int(spy.aux["count"]) == BATCH
  np.testing.assert_allclose(spy.value, full_loss, rtol=1e-5)
  for a, b, c in zip(
    jax.tree.leaves(out["batch_stats"]),
    jax.tree.leaves(full_stats["batch_stats"]),
    jax.tree.leaves(probe_stats["batch_stats"]),
    strict=True,
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)  # the probes' statistics would have been different


class _State(NamedTuple):
  value: jax.Array
  aux: Any


def test_full_fraction_passes_no_probe_loss_fn():
  seen = []
  model = models.create_model("cnn", 10)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)), train=False)
  aux_example = {
    "correct": jnp.zeros([], jnp.int32),
    "count": jnp.zeros([], jnp.int32),
    "batch_stats": variables["batch_stats"],
  }

  def update_fn(updates, state, params=None, *, loss_fn=None, **extra):
    seen.append(sorted(extra))
    (value, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return grads, _State(value, aux)

  tx = optax.GradientTransformationExtraArgs(
    lambda p: _State(jnp.zeros([]), aux_example), update_fn
  )
  state = {
    "step": jnp.zeros([], jnp.int32),
    "params": variables["params"],
    "batch_stats": variables["batch_stats"],
    "opt_state": tx.init(variables["params"]),
    "acc": steps.zero_accumulators(),
  }
  batch = {"image": jnp.zeros((4, 28, 28, 1)), "label": jnp.zeros((4,), jnp.int32)}
  jax.eval_shape(steps.make_train_step(model, tx, 0, None), state, batch)
  jax.eval_shape(steps.make_train_step(model, tx, 0, None, probe_fraction=0.5), state, batch)
  assert seen == [[], ["probe_loss_fn"]]


def test_probe_fraction_reaches_looksam_from_the_config():
  # LookSAM's exact ascent on a sub-batch: the config is accepted, and the first step (a refresh)
  # ascends along the first quarter's gradient, so it differs from the full-batch ascent's step.
  config = tiny_config("", "", optimizer__name="looksam", optimizer__probe_fraction=0.25)
  checks.validate_config(config, device_count=1)
  model = models.create_model("cnn", 10)
  kx, ky, kp = jax.random.split(jax.random.PRNGKey(1), 3)
  batch = {
    "image": jax.random.normal(kx, (BATCH, 28, 28, 1)),
    "label": jax.random.randint(ky, (BATCH,), 0, 10),
  }
  variables = model.init(kp, batch["image"][:1], train=False)
  params, stats = variables["params"], variables["batch_stats"]

  def first_step(fraction):
    config.optimizer.probe_fraction = fraction
    chain, method = optimizers.create_optimizer(config, steps_per_epoch=1)
    tx = optimizers.sparse_chain(chain, method, params)
    state = steps.initial_state(params, tx.init(params), stats)
    return jax.jit(train.train_step_fn(config, model, tx))(state, batch)

  quarter, full = first_step(0.25), first_step(1.0)
  kept = [optax.tree_utils.tree_get(s["opt_state"], "reused") for s in (quarter, full)]
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(kept))
  differ = [
    np.abs(np.asarray(a) - np.asarray(b)).max()
    for a, b in zip(*map(jax.tree.leaves, (quarter["params"], full["params"])), strict=True)
  ]
  assert max(differ) > 1e-6
  assert not all(
    np.allclose(a, b) for a, b in zip(*map(jax.tree.leaves, kept), strict=True)
  )  # g_v: the full loss's gradient at a different theta + eps, against another ascent


@pytest.mark.slow
@pytest.mark.parametrize("name", ["zo_sam", "sam", "looksam"])  # Exact ascents on the sub-batch.
def test_one_epoch_rigl_with_quarter_batch_ascent(tmp_path, data_dir, fmnist_subset_dir, name):
  config = tiny_config(
    data_dir,
    fmnist_subset_dir,
    optimizer__name=name,
    optimizer__probe_fraction=0.25,
    sparse__method="rigl",
    sparse__update_every=2,
  )
  result = train.train_and_evaluate(config, str(tmp_path / "w"))
  records = [r for r in train.read_metrics(str(tmp_path / "w")) if r["kind"] == "train"]
  assert [r["step"] for r in records] == [4, SUBSET["train"] // 64]
  assert all(np.isfinite(r["loss"]) for r in records)
  assert 0.3 < result["test_accuracy"] <= 1.0
