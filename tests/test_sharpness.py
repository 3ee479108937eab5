"""SAM, ZO-SAM and Sparse SAM heads and pure functions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from tests._helpers import train

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
  _, grads = zj.sam_gradient(quadratic, THETA, rho=rho, weight_mask=mask)
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
      options = zj.ZerothOrderOptions(num_directions=m, smoothing=delta, probe_batch_size=None)
      est = zj.rge(loss_fn, params, k, zeroth_order=options)
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
  tx = optax.chain(zj.zo_sam(0.05, num_directions=2, smoothing=1e-2, seed=0), optax.sgd(0.1))
  state = tx.init(params)
  eager, _ = tx.update(None, state, params, loss_fn=loss_fn)
  jitted, _ = jax.jit(lambda s, p: tx.update(None, s, p, loss_fn=loss_fn))(state, params)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-5, atol=1e-7)

  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  bf16_loss = lambda p: loss_fn(jax.tree.map(lambda x: x.astype(jnp.float32), p))  # noqa: E731
  tx16 = optax.chain(zj.zo_sam(0.05, num_directions=2, smoothing=1e-1, seed=0), optax.sgd(0.1))
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
  est = zj.rge(
    loss_fn, params, jax.random.PRNGKey(0), num_directions=3, smoothing=1e-2, weight_mask=mask
  )
  for e, m in zip(jax.tree.leaves(est), jax.tree.leaves(mask), strict=True):
    assert np.all(np.asarray(e)[~np.asarray(m)] == 0.0)


@pytest.mark.parametrize(
  "factory, match",
  [
    (lambda: zj.sam(rho=-0.1), "rho must be a finite number >= 0, got -0.1"),
    (lambda: zj.sam(0.1, adaptive_eta=-1.0), "adaptive_eta must be .*, got -1.0"),
    (lambda: zj.zo_sam(0.05, num_directions=0), "num_directions must be .*, got 0"),
    (lambda: zj.zo_sam(0.05, num_directions=2, smoothing=0.0), "smoothing must be .*, got 0.0"),
    (
      lambda: zj.zo_sam(0.05, zeroth_order=zj.ZerothOrderOptions(distribution="uniform")),
      "distribution must be one of .*, got 'uniform'",
    ),
    (
      lambda: zj.zo_sam(0.05, zeroth_order=zj.ZerothOrderOptions(scheme="backward")),
      "scheme must be one of .*, got 'backward'",
    ),
    (lambda: zj.zo_sam(0.05, zeroth_order={"num_directions": 2}), "zeroth_order must be"),
    (lambda: zj.zo_sam(0.05, seed=1.5), "seed must be an integer, got 1.5"),
    (lambda: zj.random_perturbation(-0.1), "rho must be .*, got -0.1"),
    (lambda: zj.random_perturbation(0.1, seed="0"), "seed must be an integer"),
    (lambda: zj.sparse_sam(0.1, sparsity=1.0), r"sparsity must be in \[0, 1\), got 1.0"),
    (lambda: zj.sparse_sam(0.1, sparsity=-0.1), r"sparsity must be in \[0, 1\), got -0.1"),
    (lambda: zj.sparse_sam(0.1, 0.5, pattern="n:m", n_m=(4, 2)), r"n_m must be .*, got \(4, 2\)"),
    (lambda: zj.sparse_sam(0.1, 0.5, pattern="blocky"), "pattern must be one of .*'blocky'"),
    (lambda: zj.sparse_sam(0.1, 0.5, mask_method="hessian"), "mask_method must be one of"),
    (lambda: zj.sparse_sam(0.1, 0.5, mask_method="dynamic"), "end_step must be .*, got None"),
    (
      lambda: zj.sparse_sam(0.1, 0.5, mask_method="dynamic", end_step=0),
      "end_step must be an integer >= 1, got 0",
    ),
    (
      lambda: zj.sparse_sam(0.1, 0.5, mask_method="dynamic", end_step=10, drop_fraction=1.0),
      r"drop_fraction must be in \(0, 1\), got 1.0",
    ),
    (lambda: zj.sparse_sam(0.1, 0.5, update_every=0), "update_every must be .*, got 0"),
    (lambda: zj.sparse_sam(0.1, 0.5, ascent="random"), "ascent must be one of .*'random'"),
    (
      lambda: zj.sparse_sam(0.1, 0.5, zeroth_order=zj.ZerothOrderOptions(num_directions=0)),
      "num_directions must be .*, got 0",
    ),
    (lambda: zj.sparse_sam(0.1, 0.5, zeroth_order="central"), "zeroth_order must be"),
    (lambda: zj.sharpness_aware(0.1, ascent="second_order"), "ascent must be one of .*random"),
    (lambda: zj.sharpness_aware(0.1, zeroth_order=4), "zeroth_order must be .*, got 4"),
  ],
)
def test_bad_construction_arguments_raise(factory, match):
  with pytest.raises(ValueError, match=match):
    factory()


def test_bad_runtime_arguments_raise():
  params, loss_fn = _mlp_setup()
  tx = zj.zo_sam(0.05, num_directions=2, smoothing=1e-3)
  state = tx.init(params)
  with pytest.raises(ValueError, match="loss_fn"):
    tx.update(None, state, params)
  bad = jax.tree.map(lambda p: jnp.ones(p.shape[:1]), params)
  with pytest.raises(ValueError, match="weight_mask leaf"):
    tx.update(None, state, params, loss_fn=loss_fn, weight_mask=bad)
  with pytest.raises(ValueError, match="n_m.*divisible"):
    zj.sparse_sam(0.1, pattern="n:m", n_m=(2, 3), mask_method="random").init(params)
  with pytest.raises(ValueError, match="per_example_loss_fn"):
    s = zj.sparse_sam(0.1, 0.5)
    s.update(None, s.init(params), params, loss_fn=loss_fn)


# ----------------------------------------------------------------------------- the control head

# A quadratic a/2 ||theta - c||^2 has gradient a (theta - c), so the gradient the head returns,
# a (theta + eps - c), gives back its perturbation: eps = grads / a - (theta - c).
CTRL_THETA = {
  "w": jnp.linspace(-1.0, 1.0, 6),
  "k": jnp.arange(6.0).reshape(2, 3) / 5.0,
  "b": jnp.array([0.5, -0.5, 0.25]),
}
CTRL_MASK = {  # pruned coordinates of the two selected leaves; "b" is dense but not selected
  "w": jnp.array([1, 0, 1, 1, 0, 1], bool),
  "k": jnp.array([[0, 1, 1], [1, 0, 0]], bool),
  "b": jnp.ones(3, bool),
}
CTRL_LEAVES = {"w": True, "k": True, "b": False}
CTRL_COUNTS = {"w": 4, "k": 3, "b": 3}


def _ctrl_loss(scale, centre):
  def loss(p):
    return 0.5 * scale * sum(jnp.sum((p[n] - centre[n]) ** 2) for n in sorted(p))

  return loss


def _ctrl_eps(grads, scale, centre, theta=CTRL_THETA):
  return {n: np.asarray(grads[n]) / scale - np.asarray(theta[n] - centre[n]) for n in theta}


def _ctrl_norm(eps):
  return np.sqrt(sum(np.sum(np.square(e)) for e in eps.values()))


@pytest.mark.parametrize("with_counts", [False, True])
def test_random_perturbation_has_norm_rho_on_active_weights_and_none_on_pruned(with_counts):
  rho = 0.3
  centre = {n: 0.1 * jnp.ones_like(v) for n, v in CTRL_THETA.items()}
  loss = _ctrl_loss(1.0, centre)
  tx = zj.random_perturbation(rho, perturb_leaves=CTRL_LEAVES, seed=5)
  extra = {"weight_mask_counts": CTRL_COUNTS} if with_counts else {}
  step = jax.jit(
    lambda s: tx.update(None, s, CTRL_THETA, loss_fn=loss, weight_mask=CTRL_MASK, **extra)
  )
  state = tx.init(CTRL_THETA)
  seen = []
  for _ in range(4):
    start = state
    grads, state = step(state)
    eps = _ctrl_eps(grads, 1.0, centre)
    np.testing.assert_allclose(_ctrl_norm(eps), rho, rtol=1e-5)
    for n in ("w", "k"):
      assert np.all(eps[n][~np.asarray(CTRL_MASK[n])] == 0.0), (n, eps[n])
      assert np.all(eps[n][np.asarray(CTRL_MASK[n])] != 0.0), (n, eps[n])
    assert np.all(eps["b"] == 0.0)  # an unselected leaf is never perturbed
    # The direction is a Gaussian draw on the active weights, from the split of the state key
    # (as the ZO-SAM head splits it), normalised to rho.
    _, step_key = jax.random.split(start.key)
    probe_key, _ = jax.random.split(step_key)
    u = zj.sample_direction(
      probe_key,
      CTRL_THETA,
      weight_mask=CTRL_MASK,
      perturb_leaves=CTRL_LEAVES,
      **({"weight_mask_counts": CTRL_COUNTS} if with_counts else {}),
    )
    u_norm = _ctrl_norm({n: np.asarray(x) for n, x in u.items()})
    for n in CTRL_THETA:
      np.testing.assert_allclose(eps[n], rho * np.asarray(u[n]) / u_norm, rtol=1e-4, atol=1e-6)
    # The value in the state is the loss of the one exact pass, at theta + eps.
    adv = {n: CTRL_THETA[n] + eps[n] for n in CTRL_THETA}
    np.testing.assert_allclose(state.value, loss(adv), rtol=1e-5)
    seen.append(np.concatenate([eps["w"], eps["k"].ravel()]))
  # Every step draws a fresh direction.
  assert all(not np.allclose(a, b) for a, b in zip(seen, seen[1:], strict=False))


def test_random_perturbation_does_not_depend_on_the_loss():
  rho = 0.2
  c1 = {n: 0.1 * jnp.ones_like(v) for n, v in CTRL_THETA.items()}
  c2 = {n: jnp.cos(3.0 * v) for n, v in CTRL_THETA.items()}
  tx = zj.random_perturbation(rho, perturb_leaves=CTRL_LEAVES, seed=11)
  state = tx.init(CTRL_THETA)
  g1, s1 = tx.update(None, state, CTRL_THETA, loss_fn=_ctrl_loss(1.0, c1), weight_mask=CTRL_MASK)
  g2, s2 = tx.update(None, state, CTRL_THETA, loss_fn=_ctrl_loss(3.0, c2), weight_mask=CTRL_MASK)
  e1, e2 = _ctrl_eps(g1, 1.0, c1), _ctrl_eps(g2, 3.0, c2)
  for n in CTRL_THETA:
    np.testing.assert_allclose(e1[n], e2[n], rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(s1.key, s2.key)  # the key advances the same way
  # ... whereas ZO-SAM's direction does depend on the loss.
  zo = zj.zo_sam(rho, num_directions=2, smoothing=1e-3, perturb_leaves=CTRL_LEAVES, seed=11)
  z1, _ = zo.update(None, state, CTRL_THETA, loss_fn=_ctrl_loss(1.0, c1), weight_mask=CTRL_MASK)
  z2, _ = zo.update(None, state, CTRL_THETA, loss_fn=_ctrl_loss(3.0, c2), weight_mask=CTRL_MASK)
  assert not np.allclose(_ctrl_eps(z1, 1.0, c1)["w"], _ctrl_eps(z2, 3.0, c2)["w"], atol=1e-4)


def test_random_perturbation_costs_one_forward_backward():
  def traced_calls(tx):
    calls = []

    def loss(p):
      calls.append(1)  # one Python call per trace of the loss
      return _ctrl_loss(1.0, {n: jnp.zeros_like(v) for n, v in p.items()})(p)

    state = tx.init(CTRL_THETA)
    jax.make_jaxpr(lambda s, p: tx.update(None, s, p, loss_fn=loss, weight_mask=CTRL_MASK))(
      state, CTRL_THETA
    )
    return len(calls)

  assert traced_calls(zj.random_perturbation(0.1)) == 1
  assert traced_calls(zj.sharpness_aware(0.1, ascent="random")) == 1
  assert traced_calls(zj.exact_gradient()) == 1
  assert traced_calls(zj.sam(0.1)) == 2  # the count does see a second pass when there is one


def test_random_perturbation_with_aux_trains_in_a_chain():
  params, loss_fn = _mlp_setup()

  def with_aux(p):
    return loss_fn(p), p["dense2"]["bias"]

  tx = optax.chain(zj.random_perturbation(0.05, seed=0, has_aux=True), optax.sgd(0.5))
  state = optax.tree_utils.tree_set(tx.init(params), aux=jnp.zeros(3))
  start = float(loss_fn(params))
  params, state, step = train(tx, params, with_aux, 30, state)
  assert step._cache_size() == 1
  assert float(loss_fn(params)) < 0.8 * start
  assert optax.tree_utils.tree_get(state, "aux").shape == (3,)
