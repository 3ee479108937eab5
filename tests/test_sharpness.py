"""SAM, ZO-SAM and Sparse SAM heads and pure functions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj

D = 5
A = jnp.diag(jnp.arange(1.0, D + 1.0))
B = jnp.ones(D)
THETA = {"w": jnp.linspace(-1.0, 1.0, D)}


def quadratic(p):
  return 0.5 * p["w"] @ A @ p["w"] - B @ p["w"]


def grad_at(w):
  return np.asarray(A @ w - B)


def test_sam_gradient_is_the_gradient_at_the_normalised_ascent_point():
  rho = 0.3
  w = np.asarray(THETA["w"])
  g = grad_at(w)
  w_adv = w + rho * g / np.linalg.norm(g)
  value, grads = zj.sam_gradient(quadratic, THETA, rho=rho)
  np.testing.assert_allclose(grads["w"], grad_at(w_adv), rtol=1e-5)
  np.testing.assert_allclose(value, quadratic({"w": w_adv}), rtol=1e-5)


def test_adaptive_sam_follows_asam():
  rho, eta = 0.3, 0.01
  w = np.asarray(THETA["w"])
  g = grad_at(w)
  t = np.abs(w) + eta
  eps = rho * t**2 * g / np.linalg.norm(t * g)
  _, grads = zj.sam_gradient(quadratic, THETA, rho=rho, adaptive=True, adaptive_eta=eta)
  np.testing.assert_allclose(grads["w"], grad_at(w + eps), rtol=1e-5)


def test_weight_mask_restricts_and_renormalises_the_perturbation():
  rho = 0.3
  mask = {"w": jnp.array([1.0, 1.0, 0.0, 0.0, 1.0])}
  w = np.asarray(THETA["w"])
  g = grad_at(w) * np.asarray(mask["w"])
  eps = rho * g / np.linalg.norm(g)
  _, grads = zj.sam_gradient(quadratic, THETA, rho=rho, mask=mask)
  np.testing.assert_allclose(grads["w"], grad_at(w + eps), rtol=1e-5)


def test_perturbation_mask_is_applied_after_normalisation():
  rho = 0.3
  pmask = {"w": jnp.array([0.0, 1.0, 1.0, 0.0, 0.0])}
  w = np.asarray(THETA["w"])
  g = grad_at(w)
  eps = rho * g / np.linalg.norm(g) * np.asarray(pmask["w"])
  _, grads = zj.sam_gradient(quadratic, THETA, rho=rho, perturbation_mask=pmask)
  np.testing.assert_allclose(grads["w"], grad_at(w + eps), rtol=1e-5)


def test_zero_gradient_gives_zero_perturbation_not_nan():
  w_star = {"w": jnp.linalg.solve(A, B)}  # the minimiser: gradient exactly 0 there
  flat = lambda p: 0.0 * jnp.sum(p["w"])  # noqa: E731
  for fn in (quadratic, flat):
    _, g1 = zj.sam_gradient(fn, w_star, rho=0.5)
    _, g2 = zj.zo_sam_gradient(
      fn, w_star, jax.random.PRNGKey(0), rho=0.5, num_directions=2, smoothing=1e-3
    )
    for g in (g1, g2):
      assert np.all(np.isfinite(g["w"]))
  eps = zj.perturbation(w_star, {"w": jnp.zeros(D)}, rho=0.5)
  assert np.all(np.asarray(eps["w"]) == 0.0)


def _mlp_setup():
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(42), 4)
  params = {
    "dense1": {"kernel": 0.5 * jax.random.normal(k1, (4, 8)), "bias": jnp.zeros(8)},
    "dense2": {"kernel": 0.5 * jax.random.normal(k2, (8, 3)), "bias": jnp.zeros(3)},
  }
  x = jax.random.normal(k3, (32, 4))
  y = jax.random.randint(k4, (32,), 0, 3)

  def loss_fn(p):
    h = jnp.tanh(x @ p["dense1"]["kernel"] + p["dense1"]["bias"])
    logits = h @ p["dense2"]["kernel"] + p["dense2"]["bias"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  return params, loss_fn


def test_sam_head_matches_optax_contrib_sam_over_several_steps():
  params, loss_fn = _mlp_setup()
  lr, rho = 0.1, 0.05
  ours = optax.chain(zj.sam(rho), optax.sgd(lr))
  theirs = optax.contrib.sam(
    optax.sgd(lr),
    optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
    sync_period=2,
    opaque_mode=True,
  )

  @jax.jit
  def run(p0):
    p_ours, s_ours, p_theirs, s_theirs = p0, ours.init(p0), p0, theirs.init(p0)
    grad_fn = jax.grad(loss_fn)
    for _ in range(5):
      u, s_ours = ours.update(None, s_ours, p_ours, loss_fn=loss_fn)
      p_ours = optax.apply_updates(p_ours, u)
      u, s_theirs = theirs.update(
        grad_fn(p_theirs), s_theirs, p_theirs, grad_fn=lambda p, _: grad_fn(p)
      )
      p_theirs = optax.apply_updates(p_theirs, u)
    return p_ours, p_theirs

  p_ours, p_theirs = run(params)
  chex.assert_trees_all_close(p_ours, p_theirs, rtol=1e-5, atol=1e-6)
  assert not np.allclose(p_ours["dense1"]["kernel"], params["dense1"]["kernel"])


def test_zo_sam_perturbation_approaches_sam_as_m_grows():
  params, loss_fn = _mlp_setup()
  exact = zj.perturbation(params, jax.grad(loss_fn)(params), rho=1.0)
  flat = lambda t: jnp.concatenate([x.ravel() for x in jax.tree.leaves(t)])  # noqa: E731

  def mean_cosine(m, delta):
    def one(k):
      est = zj.rge(loss_fn, params, k, num_directions=m, smoothing=delta, probe_batch_size=None)
      e = flat(zj.perturbation(params, est, rho=1.0))
      return e @ flat(exact) / (jnp.linalg.norm(e) * jnp.linalg.norm(flat(exact)))

    return float(jnp.mean(jax.lax.map(one, jax.random.split(jax.random.PRNGKey(1), 4))))

  d = flat(params).size  # 67
  cosines = [mean_cosine(m, 1e-2) for m in (1, 16, 256, 1024)]
  assert cosines == sorted(cosines), cosines
  # For Gaussian RGE, E cos ~ sqrt(m / (m + d + 1)): about 0.97 at m = 1024, d = 67.
  predicted = np.sqrt(1024 / (1024 + d + 1))
  assert cosines[-1] > predicted - 0.04, (cosines, predicted)
  assert mean_cosine(1024, 1e-4) > predicted - 0.04


def test_zo_sam_head_uses_the_state_key_and_splits_it():
  params, loss_fn = _mlp_setup()
  tx = zj.zo_sam(0.05, num_directions=2, smoothing=1e-3, seed=3)
  state = tx.init(params)
  g1, state1 = tx.update(None, state, params, loss_fn=loss_fn)
  g2, _ = tx.update(None, state1, params, loss_fn=loss_fn)
  # Same as the pure function driven by the split of the state key.
  _, step_key = jax.random.split(state.key)
  probe_key, _ = jax.random.split(step_key)
  _, expected = zj.zo_sam_gradient(
    loss_fn, params, probe_key, rho=0.05, num_directions=2, smoothing=1e-3
  )
  chex.assert_trees_all_close(g1, expected, rtol=1e-6)
  assert not np.allclose(g1["dense1"]["kernel"], g2["dense1"]["kernel"])


def test_value_and_aux_come_from_the_exact_pass_not_the_probes():
  params, loss_fn = _mlp_setup()

  def with_aux(p):
    return loss_fn(p), p["dense2"]["bias"]  # aux records the point the pass was taken at

  tx = zj.zo_sam(0.5, num_directions=3, smoothing=0.1, seed=0, has_aux=True)
  state = optax.tree_utils.tree_set(tx.init(params), aux=jnp.zeros(3))
  grads, state = jax.jit(lambda s, p: tx.update(None, s, p, loss_fn=with_aux))(state, params)
  _, step_key = jax.random.split(tx.init(params).key)
  probe_key, _ = jax.random.split(step_key)
  est = zj.rge(with_aux, params, probe_key, num_directions=3, smoothing=0.1, has_aux=True)
  eps = zj.perturbation(params, est, rho=0.5)
  np.testing.assert_allclose(state.aux, eps["dense2"]["bias"], rtol=1e-5, atol=1e-7)
  adv = jax.tree.map(jnp.add, params, eps)
  np.testing.assert_allclose(optax.tree_utils.tree_get(state, "value"), loss_fn(adv), rtol=1e-5)


def test_jit_matches_no_jit_and_bf16_keeps_dtype():
  params, loss_fn = _mlp_setup()
  tx = optax.chain(zj.zo_sam(0.05, 2, 1e-2, 0), optax.sgd(0.1))
  state = tx.init(params)
  eager, _ = tx.update(None, state, params, loss_fn=loss_fn)
  jitted, _ = jax.jit(lambda s, p: tx.update(None, s, p, loss_fn=loss_fn))(state, params)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-7)

  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  bf16_loss = lambda p: loss_fn(jax.tree.map(lambda x: x.astype(jnp.float32), p))  # noqa: E731
  tx16 = optax.chain(zj.zo_sam(0.05, 2, 1e-1, 0), optax.sgd(0.1))
  updates, _ = jax.jit(lambda s, p: tx16.update(None, s, p, loss_fn=bf16_loss))(
    tx16.init(bf16), bf16
  )
  chex.assert_trees_all_equal_dtypes(updates, bf16)


def test_weight_mask_keeps_every_probe_and_the_perturbation_on_active_weights():
  params, loss_fn = _mlp_setup()
  mask = jax.tree.map(lambda p: jnp.arange(p.size).reshape(p.shape) % 3 == 0, params)
  params = jax.tree.map(lambda p, m: p * m, params, mask)
  deviations = []

  def watched_loss(q):
    # Every evaluation (probes inside the scan and the exact pass) reports how far it moved
    # any pruned weight.
    off = [
      jnp.max(jnp.abs(jnp.where(m, 0.0, a)))
      for a, m in zip(jax.tree.leaves(q), jax.tree.leaves(mask), strict=True)
    ]
    jax.debug.callback(lambda v: deviations.append(float(v)), jnp.max(jnp.stack(off)))
    return loss_fn(q)

  counts = jax.tree.map(lambda m: int(m.sum()), mask)
  cases = (
    (zj.zo_sam(0.5, num_directions=3, smoothing=1e-1, seed=0), {}),
    (zj.zo_sam(0.5, num_directions=3, smoothing=1e-1, seed=0), {"weight_mask_counts": counts}),
    (zj.sam(0.5), {}),
  )
  for tx, extra in cases:
    deviations.clear()
    step = jax.jit(
      lambda s, p, tx=tx, extra=extra: tx.update(
        None, s, p, loss_fn=watched_loss, weight_mask=mask, **extra
      )
    )
    jax.block_until_ready(step(tx.init(params), params))
    assert len(deviations) >= 2 and max(deviations) == 0.0, deviations
  est = zj.rge(loss_fn, params, jax.random.PRNGKey(0), num_directions=3, smoothing=1e-2, mask=mask)
  for e, m in zip(jax.tree.leaves(est), jax.tree.leaves(mask), strict=True):
    assert np.all(np.asarray(e)[~np.asarray(m)] == 0.0)


@pytest.mark.parametrize(
  "factory, match",
  [
    (lambda: zj.sam(rho=-0.1), "rho"),
    (lambda: zj.zo_sam(0.05, num_directions=0), "num_directions"),
    (lambda: zj.zo_sam(0.05, 2, smoothing=0.0), "smoothing"),
    (lambda: zj.zo_sam(0.05, 2, 1e-3, distribution="uniform"), "distribution"),
    (lambda: zj.zo_sam(0.05, 2, 1e-3, scheme="backward"), "scheme"),
    (lambda: zj.sparse_sam(0.1, sparsity=1.0), "sparsity"),
    (lambda: zj.sparse_sam(0.1, sparsity=-0.1), "sparsity"),
    (lambda: zj.sparse_sam(0.1, 0.5, pattern="n:m", n_m=(4, 2)), "n_m"),
    (lambda: zj.sparse_sam(0.1, 0.5, pattern="blocky"), "pattern"),
    (lambda: zj.sparse_sam(0.1, 0.5, mask_method="hessian"), "mask_method"),
    (lambda: zj.sparse_sam(0.1, 0.5, mask_method="dynamic"), "total_steps"),
    (
      lambda: zj.sparse_sam(0.1, 0.5, mask_method="dynamic", total_steps=10, drop_fraction=1.0),
      "drop_fraction",
    ),
    (lambda: zj.sparse_sam(0.1, 0.5, update_interval=0), "update_interval"),
    (lambda: zj.sharpness_aware(0.1, ascent="second_order"), "ascent"),
  ],
)
def test_bad_construction_arguments_raise(factory, match):
  with pytest.raises(ValueError, match=match):
    factory()


def test_bad_runtime_arguments_raise():
  params, loss_fn = _mlp_setup()
  tx = zj.zo_sam(0.05, 2, 1e-3)
  state = tx.init(params)
  with pytest.raises(ValueError, match="loss_fn"):
    tx.update(None, state, params)
  bad = jax.tree.map(lambda p: jnp.ones(p.shape[:1]), params)
  with pytest.raises(ValueError, match="weight_mask leaf"):
    tx.update(None, state, params, loss_fn=loss_fn, weight_mask=bad)
  with pytest.raises(ValueError, match="n:m.*divisible"):
    zj.sparse_sam(0.1, pattern="n:m", n_m=(2, 3), mask_method="random").init(params)
  with pytest.raises(ValueError, match="per_example_loss_fn"):
    s = zj.sparse_sam(0.1, 0.5)
    s.update(None, s.init(params), params, loss_fn=loss_fn)
