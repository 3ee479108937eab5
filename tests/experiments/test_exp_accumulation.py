"""The trainer's gradient accumulation (``accumulation_steps``) and mixed precision
(``model.dtype``): the accumulated step written out, counts in optimizer steps, bad values, and a
real run with both."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import optimizers, steps, train
from experiments.checks import validate_config
from experiments.configs import default
from experiments.errors import ConfigError
from tests.experiments.conftest import SUBSET, tiny_config
from tests.experiments.test_exp_train import _resume_matches

K, LR, RHO = 2, 0.1, 0.05


class _Linear(nn.Module):
  """Softmax regression with the trainer's model interface (no BatchNorm)."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def _config(name: str, k: int):
  config = default.get_config()
  config.optimizer.name = name
  config.optimizer.rho = RHO
  config.optimizer.learning_rate = LR
  config.optimizer.schedule = "constant"
  config.optimizer.momentum = 0.0
  config.optimizer.weight_decay = 0.0
  config.batch_size = 8
  config.accumulation_steps = k
  return config


def _initial_state(model, tx, images):
  params = model.init(jax.random.key(0), images, train=False)["params"]
  zero = jnp.zeros([], jnp.int32)
  aux = {"correct": zero, "count": zero, "batch_stats": {}}
  opt_state = optax.tree_utils.tree_set(tx.init(params), aux=aux)
  return {
    "step": zero,
    "params": params,
    "batch_stats": {},
    "opt_state": opt_state,
    "acc": steps.zero_accumulators(),
  }


def test_accumulated_step_applies_the_mean_of_the_micro_batches_sam_gradients():
  keys = jax.random.split(jax.random.key(1), 2)
  batch = {
    "image": jax.random.normal(keys[0], (8, 4, 4, 1)),
    "label": jax.random.randint(keys[1], (8,), 0, 10),
  }
  model = _Linear()
  tx, _ = optimizers.create_optimizer(_config("sam", K), steps_per_epoch=10)
  state = _initial_state(model, tx, batch["image"])
  new = jax.jit(steps.make_train_step(model, tx, 0, None, K))(state, batch)

  def loss(p, rows):
    logits = model.apply({"params": p}, batch["image"][rows])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"][rows]).mean()

  # Micro-batch j holds rows j, j + K, ...; each gets its own eps_j = rho g_j/||g_j||.
  theta, grads, losses = state["params"], [], []
  for j in range(K):
    rows = np.arange(j, 8, K)
    g = jax.grad(loss)(theta, rows)
    norm = jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g)))
    adv = jax.tree.map(lambda p, d, n=norm: p + RHO * d / n, theta, g)
    value, g_adv = jax.value_and_grad(loss)(adv, rows)
    grads.append(g_adv)
    losses.append(value)
  expected = jax.tree.map(lambda p, *g: p - LR * sum(g) / K, theta, *grads)
  jax.tree.map(
    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), new["params"], expected
  )
  np.testing.assert_allclose(new["acc"]["loss_sum"], np.mean(losses), rtol=1e-5)
  assert int(new["acc"]["count"]) == 8 and int(new["acc"]["steps"]) == 1
  assert int(new["step"]) == 1


def test_every_count_stays_in_optimizer_steps():
  config = _config("gsam", K)
  config.optimizer.schedule = "cosine"
  config.sparse.method = "rigl"
  tx, method = optimizers.create_optimizer(config, steps_per_epoch=10)
  total = config.num_epochs * 10
  end = int(round(config.sparse.end_fraction * total))
  assert method.schedule.update_every == K * config.sparse.update_every
  assert method.schedule.end_step == K * end
  schedule = optimizers.learning_rate_schedule(config, 10)
  context = optimizers.HeadContext(total, schedule, 0, 4, K)
  for step in (0, 7, 29):
    for call in range(K * step, K * step + K):
      assert float(context.head_schedule(call)) == float(schedule(step))
  # Without accumulation the chain is the flat head -> decay -> SGD of before (checkpoints of
  # earlier runs keep their structure).
  flat, _ = optimizers.create_optimizer(_config("sam", 1), steps_per_epoch=10)
  params = {"w": jnp.zeros((2, 2))}
  assert len(flat.init(params)) == 3
  assert jax.tree.structure(tx.init(params)) != jax.tree.structure(flat.init(params))


@pytest.mark.parametrize(
  "field,value,message",
  [
    ("accumulation_steps", 0, "accumulation_steps must be an integer >= 1"),
    ("accumulation_steps", -2, "accumulation_steps must be an integer >= 1"),
    ("accumulation_steps", 3, "equal micro-batches .* use a multiple of 3"),
    ("model.dtype", "float16", "unknown model.dtype 'float16'; valid: float32, bfloat16"),
  ],
)
def test_bad_accumulation_and_dtype_are_refused(field, value, message):
  config = default.get_config()
  config.batch_size = 64
  group, _, leaf = field.rpartition(".")
  (config[group] if group else config)[leaf] = value
  with pytest.raises(ConfigError, match=message):
    validate_config(config, device_count=1)


ACCUMULATED = {
  "optimizer__name": "zo_sam",
  "sparse__method": "rigl",
  "sparse__update_every": 2,
  "accumulation_steps": K,
  "model__dtype": "bfloat16",
}


@pytest.fixture(scope="module")
def accumulated_run(tmp_path_factory, data_dir, fmnist_subset_dir):
  """ZO-SAM + RigL, 2 micro-batches a step, bfloat16 activations; the sparse mask of each step."""
  workdir = str(tmp_path_factory.mktemp("accumulated") / "run")
  masks = {}

  def keep_mask(step, state):
    masks[step] = jax.device_get(optax.tree_utils.tree_get(state["opt_state"], "weight_mask"))

  config = tiny_config(data_dir, fmnist_subset_dir, **ACCUMULATED)
  return workdir, train.train_run(config, workdir, state_hook=keep_mask), masks


@pytest.mark.slow  # One epoch-sized run shared by both; the derived tests stay fast.
def test_accumulated_bfloat16_run_trains_and_updates_masks_on_the_step_grid(accumulated_run):
  workdir, result, masks = accumulated_run
  steps_per_epoch = SUBSET["train"] // 64
  records = train.read_metrics(workdir)
  assert [r["step"] for r in records if r["kind"] == "train"] == [4, 8]
  assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
  assert 0.3 < result["test_accuracy"] <= 1.0
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(result["params"]))
  # RigL (update_every 2, end 0.75 of 8 steps = 6) changes the mask in the steps that start at
  # 2 and 4, as without accumulation; at 6 its cosine drop fraction is 0.
  changed = {
    s
    for s in range(1, steps_per_epoch + 1)
    if any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(masks[s - 1]), jax.tree.leaves(masks[s]), strict=True)
    )
  }
  assert changed == {3, 5}


@pytest.mark.slow
@pytest.mark.slow  # One epoch-sized run shared by both; the derived tests stay fast.
def test_accumulated_run_resumes_bitwise(tmp_path, data_dir, fmnist_subset_dir, accumulated_run):
  workdir, result, _ = accumulated_run
  _resume_matches(tmp_path, data_dir, fmnist_subset_dir, (workdir, result), **ACCUMULATED)
