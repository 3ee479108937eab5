"""Every head trains a small Flax model with BatchNorm inside an optax chain."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
import pytest

import zosam_jax as zj


class BatchNormMLP(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Dense(32)(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
    x = nn.relu(x)
    return nn.Dense(3)(x)


def _blobs(key, n=96):
  """Three Gaussian blobs in 8-D: a separable problem with a known floor near zero loss."""
  k1, k2 = jax.random.split(key)
  y = jax.random.randint(k1, (n,), 0, 3)
  centres = 2.0 * jnp.eye(3, 8)
  return centres[y] + 0.5 * jax.random.normal(k2, (n, 8)), y


HEADS = {
  "exact_gradient": lambda: zj.exact_gradient(has_aux=True),
  "sam": lambda: zj.sam(0.05, has_aux=True),
  "asam": lambda: zj.sam(0.5, adaptive=True, has_aux=True),
  "zo_sam": lambda: zj.zo_sam(0.05, num_directions=4, smoothing=1e-3, seed=0, has_aux=True),
  "zo_sam_rademacher_forward": lambda: zj.zo_sam(
    0.05,
    zeroth_order=zj.ZerothOrderOptions(
      num_directions=2, smoothing=1e-3, distribution="rademacher", scheme="forward"
    ),
    seed=1,
    has_aux=True,
  ),
  "random_perturbation": lambda: zj.random_perturbation(0.05, seed=0, has_aux=True),
  "ssam_fisher": lambda: zj.sparse_sam(
    0.05, 0.5, update_every=10, num_fisher_samples=32, has_aux=True
  ),
  "ssam_dynamic_zo": lambda: zj.sparse_sam(
    0.05,
    0.5,
    mask_method="dynamic",
    end_step=80,
    update_every=10,
    ascent="zeroth_order",
    zeroth_order=zj.ZerothOrderOptions(num_directions=2),
    has_aux=True,
  ),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_trains_a_batchnorm_mlp(name):
  model = BatchNormMLP()
  x, y = _blobs(jax.random.PRNGKey(0))
  variables = model.init(jax.random.PRNGKey(1), x, train=False)
  params, batch_stats = variables["params"], variables["batch_stats"]

  def make_loss(stats):
    def loss_fn(p):
      logits, updates = model.apply(
        {"params": p, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
      )
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
      return loss, updates["batch_stats"]

    return loss_fn

  def per_example(p, batch):  # inference-mode BatchNorm: a one-example batch has no statistics
    logits = model.apply({"params": p, "batch_stats": batch_stats}, batch[0], train=False)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1])

  tx = optax.chain(HEADS[name](), optax.sgd(0.1, momentum=0.9))
  opt_state = optax.tree_utils.tree_set(tx.init(params), aux=batch_stats)

  @jax.jit
  def step(params, opt_state):
    stats = optax.tree_utils.tree_get(opt_state, "aux")
    updates, opt_state = tx.update(
      None,
      opt_state,
      params,
      loss_fn=make_loss(stats),
      per_example_loss_fn=per_example,
      batch=(x, y),
    )
    return optax.apply_updates(params, updates), opt_state

  initial = float(make_loss(batch_stats)(params)[0])
  for _ in range(80):
    params, opt_state = step(params, opt_state)
  assert step._cache_size() == 1
  stats = optax.tree_utils.tree_get(opt_state, "aux")
  # Running statistics moved away from their initial values: the exact pass updated them.
  assert float(jnp.abs(stats["BatchNorm_0"]["mean"]).max()) > 0.05
  logits = model.apply({"params": params, "batch_stats": stats}, x, train=False)
  final = float(optax.softmax_cross_entropy_with_integer_labels(logits, y).mean())
  assert initial > 0.8 and final < 0.15, (initial, final)
