"""SNIP, GraSP and LTH on hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import zosam_jax as zj
from tests.sparse._helpers import active_set, mlp_apply, mlp_params, xent
from zosam_jax import sparse


def test_snip_keeps_largest_connection_sensitivity():
  # loss = sum(c * w) -> grad = c -> score |w c| = [4, 2, 3, 0.4]; global 50%: keep {0, 2}.
  # (magnitude alone would keep {2, 3}.) The bias is not prunable and stays dense.
  w = jnp.array([[1.0, 2.0], [3.0, 4.0]])
  c = jnp.array([[4.0, 1.0], [1.0, 0.1]])
  params = {"w": w, "b": jnp.array([0.0, 5.0])}

  def loss_fn(p):
    return jnp.sum(c * p["w"]) + jnp.sum(p["b"])

  mask = sparse.snip(sparsity=0.5).compute_mask(params, loss_fn=loss_fn)
  assert active_set(mask["w"]) == {0, 2}
  assert bool(mask["b"].all())


def test_hvp_matches_explicit_hessian():
  params = mlp_params(jax.random.PRNGKey(0), sizes=(3, 4, 2))
  x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
  y = jnp.array([0, 1, 0, 1, 1])

  def loss_fn(p):
    return xent(mlp_apply(p, x), y)

  flat, unravel = ravel_pytree(params)
  hess = jax.jit(jax.hessian(lambda f: loss_fn(unravel(f))))(flat)
  v = jax.random.normal(jax.random.PRNGKey(2), flat.shape)
  hvp = jax.jit(lambda p, t: zj.diagnostics.hessian_vector_product(loss_fn, p, t))(
    params, unravel(v)
  )
  np.testing.assert_allclose(ravel_pytree(hvp)[0], hess @ v, rtol=1e-4, atol=1e-6)


def test_grasp_scores_on_a_quadratic():
  # L = 1/2 w^T A w: g = A w, Hg = A A w, score = -w * (A A w).
  a = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.5], [0.0, 0.5, -1.0]])
  w = np.array([1.0, 0.5, -2.0])
  # By hand: A w = [2, 1.5, 2.25]; A A w = [5, 6.625, -1.5]; score = [-5, -3.3125, -3].
  expected = np.array([-5.0, -3.3125, -3.0])
  params = {"w": jnp.asarray(w)[None, :]}

  def loss_fn(p):
    v = p["w"][0]
    return 0.5 * v @ jnp.asarray(a) @ v

  scores = sparse.grasp_scores(loss_fn, params)
  np.testing.assert_allclose(np.asarray(scores["w"])[0], expected, rtol=1e-6)
  np.testing.assert_allclose(-w * (a @ a @ w), expected)
  # GraSP removes the highest scores: keeping 1 of 3 keeps the lowest, index 0.
  method = sparse.grasp(sparsity=0.6)  # round(0.4 * 3) = 1 kept
  kept = method.mask_from_scores(params, jax.tree.map(jnp.negative, scores))
  assert active_set(kept["w"]) == {0}


def test_grasp_uses_temperature_and_samples_per_class():
  params = mlp_params(jax.random.PRNGKey(3), sizes=(4, 6, 3))
  x = jax.random.normal(jax.random.PRNGKey(4), (12, 4))
  y = np.array([0, 1, 2, 0, 1, 2, 2, 2, 1, 0, 0, 1])
  idx = sparse.samples_per_class(y, 2, num_classes=3)
  np.testing.assert_array_equal(idx, [0, 3, 1, 4, 2, 5])
  method = sparse.grasp(sparsity=0.5, temperature=5.0, samples_per_class=2, num_classes=3)
  mask = method.compute_mask(params, apply_fn=mlp_apply, inputs=x, labels=y)

  def loss_t(p):
    return xent(mlp_apply(p, x[idx]) / 5.0, jnp.asarray(y[idx]))

  s = jax.jit(lambda p: sparse.grasp_scores(loss_t, p))(params)
  flat_s = np.concatenate([np.ravel(s["layer0"]["kernel"]), np.ravel(s["layer1"]["kernel"])])
  keep = np.argsort(flat_s, kind="stable")[: round(0.5 * flat_s.size)]
  got = np.concatenate([np.ravel(mask["layer0"]["kernel"]), np.ravel(mask["layer1"]["kernel"])])
  assert set(np.flatnonzero(got).tolist()) == set(keep.tolist())
  with pytest.raises(ValueError, match="samples_per_class"):
    sparse.samples_per_class(y, 5, num_classes=3)


def test_lth_prune_rounds_and_rewind():
  method = sparse.lth(sparsity=0.75, rounds=2)
  assert method.round_sparsity(1) == pytest.approx(0.5)
  assert method.round_sparsity(2) == pytest.approx(0.75)
  trained = {"w": jnp.array([[0.1, -0.5, 0.3], [0.9, -0.2, 0.05]]), "b": jnp.ones(3)}
  m1 = method.prune(trained, None, round=1)  # keep 3 largest: 0.9, -0.5, 0.3
  assert active_set(m1["w"]) == {1, 2, 3}
  # In round 2 weights pruned in round 1 cannot come back even if now large.
  trained2 = {"w": jnp.array([[5.0, -0.5, 0.3], [0.9, -0.2, 0.05]]), "b": jnp.ones(3)}
  m2 = method.prune(trained2, m1, round=2)  # keep round(1.5) = 2 of {1, 2, 3}: 0.9, -0.5
  assert active_set(m2["w"]) == {1, 3}
  params_k = {"w": jnp.array([[1.5, 2.5, 3.5], [4.5, 5.5, 6.5]]), "b": jnp.full(3, 7.0)}
  rewound = method.rewind(params_k, m2)
  np.testing.assert_array_equal(rewound["w"], [[0.0, 2.5, 0.0], [4.5, 0.0, 0.0]])
  np.testing.assert_array_equal(rewound["b"], params_k["b"])

  # Training the rewound ticket keeps the pruned weights at exactly 0.
  tx = method.wrap(optax.sgd(0.1, momentum=0.9), rewound, mask=m2)
  state = tx.init(rewound)
  p = rewound
  for _ in range(3):
    u, state = tx.update(jax.tree.map(jnp.ones_like, p), state, p)
    p = optax.apply_updates(p, u)
  assert np.count_nonzero(np.asarray(p["w"])) == 2
  assert np.all(np.asarray(p["w"])[~np.asarray(m2["w"])] == 0.0)


def test_static_wrap_zeroes_dense_params_on_first_update():
  params = {"w": jnp.array([[1.0, 2.0], [3.0, 4.0]]), "b": jnp.ones(2)}
  mask = {"w": jnp.array([[True, False], [False, True]]), "b": jnp.ones(2, bool)}
  tx = sparse.snip(sparsity=0.5).wrap(optax.sgd(0.5), params, mask=mask)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  u, state = jax.jit(tx.update)(grads, state, params)
  p = optax.apply_updates(params, u)
  np.testing.assert_array_equal(p["w"], [[0.5, 0.0], [0.0, 3.5]])
  np.testing.assert_array_equal(p["b"], [0.5, 0.5])
