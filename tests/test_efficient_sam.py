"""LookSAM, GSAM, ESAM (and their zeroth-order versions) and adaptive m.

Each method is checked to reduce to SAM where its paper says it does, and against a hand
computation on a quadratic where it differs.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj

D = 5
A = np.diag(np.arange(1.0, D + 1.0)) + 0.2
B_VEC = np.ones(D)


def quadratic(p):
  return 0.5 * p["w"] @ jnp.asarray(A) @ p["w"] - jnp.asarray(B_VEC) @ p["w"]


def grad_np(w):
  return A @ w - B_VEC


def unit(v):
  return v / np.linalg.norm(v)


THETA = {"w": jnp.linspace(-1.0, 1.0, D)}


def _run(tx, params, loss_fn, steps, **extra):
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(None, s, p, loss_fn=loss_fn, **extra))
  outs = []
  for _ in range(steps):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
    outs.append(u)
  return params, outs, state


def _chain_run(head, params, loss_fn, steps, **extra):
  tx = optax.chain(head, optax.sgd(0.05))
  return _run(tx, params, loss_fn, steps, **extra)[0]


def test_looksam_with_period_one_is_sam():
  ours = _chain_run(zj.looksam(0.1, update_every=1), THETA, quadratic, 4)
  ref = _chain_run(zj.sam(0.1), THETA, quadratic, 4)
  chex.assert_trees_all_close(ours, ref, rtol=1e-6)


def test_looksam_reuse_between_refreshes_matches_hand_computation():
  rho, alpha, lr = 0.1, 0.7, 0.05
  tx = optax.chain(zj.looksam(rho, update_every=3, alpha=alpha), optax.sgd(lr))
  _, updates, _ = _run(tx, THETA, quadratic, 3)
  w = np.asarray(THETA["w"], np.float64)
  # Step 0 refreshes: SAM gradient, and keeps its part orthogonal to the plain gradient.
  g = grad_np(w)
  g_s = grad_np(w + rho * unit(g))
  g_v = g_s - (g_s @ g) / (g @ g) * g
  np.testing.assert_allclose(updates[0]["w"], -lr * g_s, rtol=1e-5)
  w = w - lr * g_s
  # Steps 1 and 2 reuse g_v, scaled by the current gradient norm.
  for t in (1, 2):
    g = grad_np(w)
    expected = g + alpha * np.linalg.norm(g) / np.linalg.norm(g_v) * g_v
    np.testing.assert_allclose(updates[t]["w"], -lr * expected, rtol=1e-5, atol=1e-6)
    w = w - lr * expected


def test_zo_looksam_refresh_is_zo_sam_and_reuse_orthogonalises_the_stored_gradient():
  rho, alpha = 0.1, 0.7
  tx = zj.looksam(
    rho,
    update_every=2,
    alpha=alpha,
    ascent="zeroth_order",
    zeroth_order=zj.ZerothOrderOptions(num_directions=3, smoothing=1e-3),
    seed=4,
  )
  state = tx.init(THETA)
  g0, state = tx.update(None, state, THETA, loss_fn=quadratic)
  _, probe_key = jax.random.split(jax.random.PRNGKey(4))
  _, expected = zj.zo_sam_gradient(
    quadratic, THETA, probe_key, rho=rho, num_directions=3, smoothing=1e-3
  )
  chex.assert_trees_all_close(g0, expected, rtol=1e-5)
  g1, _ = tx.update(None, state, THETA, loss_fn=quadratic)
  g = grad_np(np.asarray(THETA["w"]))
  g_s = np.asarray(g0["w"])
  v = g_s - (g_s @ g) / (g @ g) * g
  np.testing.assert_allclose(
    g1["w"], g + alpha * np.linalg.norm(g) / np.linalg.norm(v) * v, rtol=1e-4
  )


def test_gsam_with_alpha_zero_and_constant_rho_is_sam():
  ours = _chain_run(zj.gsam(0.1, alpha=0.0), THETA, quadratic, 4)
  ref = _chain_run(zj.sam(0.1), THETA, quadratic, 4)
  chex.assert_trees_all_close(ours, ref, rtol=1e-6)


def test_gsam_update_and_rho_schedule_match_hand_computation():
  schedule = optax.linear_schedule(0.1, 0.0, 10)
  tx = zj.gsam(0.2, rho_min=0.05, alpha=0.3, learning_rate=schedule)
  state = tx.init(THETA)
  state = state._replace(count=jnp.int32(5))  # lr = 0.05: halfway, rho = 0.125
  u, state = tx.update(None, state, THETA, loss_fn=quadratic)
  np.testing.assert_allclose(state.rho, 0.125, rtol=1e-6)
  w = np.asarray(THETA["w"], np.float64)
  g = grad_np(w)
  g_p = grad_np(w + 0.125 * unit(g))
  g_perp = g - (g @ g_p) / (g_p @ g_p) * g_p
  np.testing.assert_allclose(u["w"], g_p - 0.3 * g_perp, rtol=1e-5, atol=1e-6)


def _regression():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
  y = jnp.asarray(rng.normal(size=16), jnp.float32)
  params = {"w": jnp.asarray(rng.normal(size=4), jnp.float32), "b": jnp.zeros(())}

  def per_example(p, batch):
    xb, yb = batch
    return 0.5 * (xb @ p["w"] + p["b"] - yb) ** 2

  return params, (x, y), per_example


def test_esam_with_beta_and_gamma_one_is_sam():
  params, batch, per_example = _regression()
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  ours = _run(
    optax.chain(zj.esam(0.1, beta=1.0, gamma=1.0), optax.sgd(0.05)),
    params,
    None,
    4,
    per_example_loss_fn=per_example,
    batch=batch,
  )[0]
  ref = _chain_run(zj.sam(0.1), params, loss_fn, 4)
  chex.assert_trees_all_close(ours, ref, rtol=1e-5)


def test_esam_selects_the_top_gamma_examples_by_loss_increase():
  params, batch, per_example = _regression()
  rho, gamma = 0.3, 0.25
  tx = zj.esam(rho, beta=1.0, gamma=gamma)
  state = tx.init(params)
  grads, state = tx.update(None, state, params, per_example_loss_fn=per_example, batch=batch)
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  eps = zj.perturbation(params, jax.grad(loss_fn)(params), rho=rho)
  adv = jax.tree.map(jnp.add, params, eps)
  rise = np.asarray(per_example(adv, batch) - per_example(params, batch))
  top = np.argsort(-rise)[:4]  # ceil(0.25 * 16) = 4
  sub = jax.tree.map(lambda x: x[top], batch)
  expected = jax.grad(lambda p: jnp.mean(per_example(p, sub)))(adv)
  chex.assert_trees_all_close(grads, expected, rtol=1e-5)
  np.testing.assert_allclose(state.value, np.mean(np.asarray(per_example(adv, sub))), rtol=1e-5)


def test_esam_weight_perturbation_drops_whole_leaves_and_rescales():
  params, batch, per_example = _regression()
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  g = jax.grad(loss_fn)(params)
  tx = zj.esam(0.2, beta=0.5, gamma=1.0, seed=0)
  state = tx.init(params)
  seen = set()
  for _ in range(12):
    grads, state = tx.update(None, state, params, per_example_loss_fn=per_example, batch=batch)
    # Find which leaves were perturbed: try every subset and match the gradient exactly.
    for keep_w in (0.0, 1.0):
      for keep_b in (0.0, 1.0):
        # ESAM's mask is one draw per leaf; the public perturbation takes it at leaf shape.
        pm = {"w": jnp.full(params["w"].shape, keep_w), "b": jnp.full((), keep_b)}
        eps = zj.perturbation(params, g, rho=0.4, perturbation_mask=pm)
        cand = jax.grad(loss_fn)(jax.tree.map(jnp.add, params, eps))
        if all(
          np.allclose(a, b, rtol=1e-5, atol=1e-7)
          for a, b in zip(jax.tree.leaves(cand), jax.tree.leaves(grads), strict=True)
        ):
          seen.add((keep_w, keep_b))
  assert len(seen) >= 3, seen  # several leaf subsets occur, each with radius rho / beta


def test_zo_esam_and_zo_looksam_train_in_a_chain():
  params, batch, per_example = _regression()
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  start = float(loss_fn(params))
  p1 = _run(
    optax.chain(
      zj.esam(0.05, ascent="zeroth_order", zeroth_order=zj.ZerothOrderOptions(num_directions=2)),
      optax.sgd(0.05),
    ),
    params,
    None,
    60,
    per_example_loss_fn=per_example,
    batch=batch,
  )[0]
  zo_looksam = zj.looksam(
    0.05, ascent="zeroth_order", zeroth_order=zj.ZerothOrderOptions(num_directions=2)
  )
  p2 = _chain_run(zo_looksam, params, loss_fn, 60)
  assert float(loss_fn(p1)) < 0.6 * start
  assert float(loss_fn(p2)) < 0.6 * start


def _noisy_quadratic(sigma):
  w_rand = jax.random.normal(jax.random.PRNGKey(9), (D,))

  def loss(p):
    # Evaluation noise that differs between the two probes of a direction.
    return quadratic(p) + sigma * jnp.sin(1e4 * jnp.dot(p["w"], w_rand))

  return loss


def test_adaptive_m_stays_in_bounds_and_rises_with_probe_noise():
  final_m = {}
  for sigma in (0.0, 1e-3, 1e-2):
    tx = optax.chain(
      zj.adaptive_zo_sam(0.05, 6, num_directions=1, smoothing=1e-3, seed=0),
      optax.sgd(0.02),
    )
    _, _, state = _run(tx, THETA, _noisy_quadratic(sigma), 25)
    m = int(optax.tree_utils.tree_get(state, "num_directions"))
    assert 1 <= m <= 6
    final_m[sigma] = m
  assert final_m[0.0] == 1, final_m
  assert final_m[1e-2] == 6, final_m
  assert final_m[0.0] <= final_m[1e-3] <= final_m[1e-2], final_m


def test_adaptive_m_probes_only_the_active_directions():
  calls = []

  def counted(p):
    jax.debug.callback(lambda: calls.append(1))
    return quadratic(p)

  tx = zj.adaptive_zo_sam(0.05, max_directions=5, num_directions=2, seed=0)
  state = tx.init(THETA)
  jax.block_until_ready(jax.jit(lambda s: tx.update(None, s, THETA, loss_fn=counted))(state))
  assert len(calls) == 1 + 2 * 2 + 1  # L0, two probes per active direction, the exact pass


@pytest.mark.parametrize(
  "factory, match",
  [
    (lambda: zj.looksam(0.1, update_every=0), "update_every must be an integer >= 1, got 0"),
    (lambda: zj.looksam(0.1, alpha=-1.0), "alpha must be a finite number >= 0, got -1.0"),
    (lambda: zj.looksam(-0.1), "rho must be .*, got -0.1"),
    (lambda: zj.looksam(0.1, ascent="random"), "ascent must be one of .*, got 'random'"),
    (
      lambda: zj.looksam(
        0.1, ascent="zeroth_order", zeroth_order=zj.ZerothOrderOptions(num_directions=0)
      ),
      "num_directions must be .*, got 0",
    ),
    (lambda: zj.looksam(0.1, zeroth_order=(4, 1e-3)), "zeroth_order must be"),
    (lambda: zj.looksam(0.1, seed=None), "seed must be an integer, got None"),
    (lambda: zj.gsam(rho_max=-1), "rho_max must be a finite number >= 0, got -1"),
    (lambda: zj.gsam(0.1, rho_min=-0.1), "rho_min must be .*, got -0.1"),
    (lambda: zj.gsam(0.1, rho_min=0.2), "rho_min must be <= rho_max .*, got 0.2"),
    (lambda: zj.gsam(0.1, rho_min=0.05), "learning_rate must be .*, got None"),
    (lambda: zj.gsam(0.1, alpha=-0.5), "alpha must be .*, got -0.5"),
    (
      lambda: zj.gsam(0.1, rho_min=0.05, learning_rate=0.1, lr_max=0.0),
      "lr_max must be > lr_min .*, got 0.0",
    ),
    (lambda: zj.esam(0.1, beta=0.0), r"beta must be in \(0, 1\], got 0.0"),
    (lambda: zj.esam(0.1, gamma=1.5), r"gamma must be in \(0, 1\], got 1.5"),
    (lambda: zj.esam(-0.1), "rho must be .*, got -0.1"),
    (lambda: zj.esam(0.1, ascent="random"), "ascent must be one of .*, got 'random'"),
    (lambda: zj.esam(0.1, zeroth_order="jvp"), "zeroth_order must be"),
    (
      lambda: zj.adaptive_zo_sam(0.1, 2, num_directions=4),
      r"max_directions must be >= num_directions \(4\), got 2",
    ),
    (lambda: zj.adaptive_zo_sam(0.1, 0), "max_directions must be an integer >= 1, got 0"),
    (lambda: zj.adaptive_zo_sam(0.1, num_directions=0), "num_directions must be .*, got 0"),
    (lambda: zj.adaptive_zo_sam(0.1, smoothing=-1.0), "smoothing must be .*, got -1.0"),
    (lambda: zj.adaptive_zo_sam(0.1, noise_decay=1.0), r"noise_decay must be in \[0, 1\), got 1.0"),
    (
      lambda: zj.adaptive_zo_sam(0.1, zeroth_order=zj.ZerothOrderOptions(scheme="forward")),
      "scheme must be one of .*central.*, got 'forward'",
    ),
    (lambda: zj.adaptive_zo_sam(0.1, zeroth_order=1), "zeroth_order must be .*, got 1"),
    (lambda: zj.adaptive_zo_sam(0.1, seed=0.5), "seed must be an integer, got 0.5"),
  ],
)
def test_bad_arguments_raise(factory, match):
  with pytest.raises(ValueError, match=match):
    factory()


def test_esam_without_per_example_losses_raises():
  tx = zj.esam(0.1)
  with pytest.raises(ValueError, match="per_example_loss_fn"):
    tx.update(None, tx.init(THETA), THETA, loss_fn=quadratic)
