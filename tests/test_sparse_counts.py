"""Sparse wrappers hand zeroth-order heads exact static mask counts (sparse direction draws)."""

import jax
import jax.numpy as jnp
import optax
import pytest

import zosam_jax as zj


def _problem():
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {
    "d1": {"kernel": jax.random.normal(k1, (8, 16)), "bias": jnp.zeros(16)},
    "d2": {"kernel": jax.random.normal(k2, (16, 3)), "bias": jnp.zeros(3)},
  }
  x = jax.random.normal(k3, (32, 8))
  y = jax.random.randint(k4, (32,), 0, 3)

  def loss_fn(p):
    logits = jnp.tanh(x @ p["d1"]["kernel"] + p["d1"]["bias"]) @ p["d2"]["kernel"] + p["d2"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, loss_fn


@pytest.mark.parametrize("name, dist", [("rigl", "uniform"), ("set", "erk"), ("snip", "erk")])
def test_counts_passed_to_the_head_stay_equal_to_the_mask(name, dist):
  params, loss_fn = _problem()
  kw = dict(update_every=2, end_step=20) if name != "snip" else {}
  if name == "snip":
    method = zj.sparse.get_method(name, sparsity=0.75, sparsity_distribution=dist)
    counts_expected = None
  else:
    method = zj.sparse.get_method(name, sparsity=0.75, sparsity_distribution=dist, **kw)
    counts_expected = method.static_mask_counts(params)
  head = zj.zo_sam(0.05, num_directions=2, smoothing=1e-3, seed=0)
  wrap_kw = {"loss_fn": loss_fn} if name == "snip" else {}
  tx = method.wrap(optax.chain(head, optax.sgd(0.1)), params, **wrap_kw)
  state = tx.init(params)
  seen = []
  inner_update = tx.update

  @jax.jit
  def step(p, s):
    u, s = inner_update(None, s, p, loss_fn=loss_fn)
    return optax.apply_updates(p, u), s

  start = float(loss_fn(params))
  for _ in range(12):
    params, state = step(params, state)
    seen.append(jax.tree.map(lambda m: int(m.sum()), state.weight_mask))
  if counts_expected is not None:
    assert all(s == counts_expected for s in seen)
  # Pruned weights are zero, and the ZO-SAM chain (drawing only on active weights) trains.
  for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(state.weight_mask), strict=True):
    assert bool(jnp.all(jnp.where(m, True, p == 0)))
  assert float(loss_fn(params)) < start


def test_methods_that_move_weights_between_leaves_pass_no_counts():
  params, _ = _problem()
  assert (
    zj.sparse.get_method(
      "rigl", sparsity=0.5, sparsity_distribution="global", end_step=10
    ).static_mask_counts(params)
    is None
  )
  assert not zj.sparse.get_method("dsr", sparsity=0.5, end_step=10).keeps_leaf_counts
  assert not zj.sparse.get_method(
    "mest", sparsity=0.5, soft_memory_bound=True, end_step=10
  ).keeps_leaf_counts
