"""Random gradient estimators: expectations and variances derived for a quadratic.

For L(theta) = 1/2 theta^T A theta - b^T theta the gradient is g = A theta - b, and the central
difference along u equals u^T g exactly, so the central RGE with one direction is (u^T g) u.
With E[u u^T] = I this has mean g. For u ~ N(0, I) its coordinate variance is ||g||^2 + g_j^2
(Isserlis); for Rademacher u it is ||g||^2 - g_j^2; with m directions both divide by m.
"""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zosam_jax as zj

D = 6
A = jnp.diag(jnp.arange(1.0, D + 1.0)) + 0.1
B = jnp.linspace(-1.0, 1.0, D)
THETA = {"w": jnp.linspace(0.5, -0.5, D - 2), "v": jnp.array([0.3, -0.2])}


def _vec(p):
  return jnp.concatenate([p["w"], p["v"]])


def quadratic(p):
  x = _vec(p)
  return 0.5 * x @ A @ x - B @ x


def _rge_of_quadratic(key, **options):
  """``rge`` of the quadratic at ``THETA`` (its exact gradient is ``A theta - b``)."""
  return zj.rge(quadratic, THETA, key, **options)


TRUE_GRAD = np.asarray(A @ _vec(THETA) - B)


@pytest.fixture(scope="module")
def many_estimates():
  """Central RGE samples for 4000 keys, per (distribution, m), vmapped over keys."""
  out = {}
  keys = jax.random.split(jax.random.PRNGKey(0), 4000)
  for dist in ("gaussian", "rademacher", "sphere"):
    for m in (1, 8):
      fn = jax.jit(
        jax.vmap(
          lambda k, dist=dist, m=m: _vec(
            _rge_of_quadratic(
              k,
              zeroth_order=zj.ZerothOrderOptions(
                num_directions=m, smoothing=0.1, distribution=dist
              ),
            )
          )
        )
      )
      out[dist, m] = np.asarray(fn(keys))
  return out


@pytest.mark.parametrize("dist", ["gaussian", "rademacher", "sphere"])
def test_mean_matches_true_gradient(many_estimates, dist):
  samples = many_estimates[dist, 1]
  n = samples.shape[0]
  g2 = np.sum(TRUE_GRAD**2)
  # Gaussian coordinate variance ||g||^2 + g_j^2 (also an upper bound for the sphere, whose fourth
  # moments are smaller, and for Rademacher).
  std_of_mean = np.sqrt((g2 + TRUE_GRAD**2) / n)
  np.testing.assert_array_less(np.abs(samples.mean(0) - TRUE_GRAD), 5 * std_of_mean)


def test_gaussian_and_rademacher_variances_match_theory(many_estimates):
  g2 = np.sum(TRUE_GRAD**2)
  for dist, var in (("gaussian", g2 + TRUE_GRAD**2), ("rademacher", g2 - TRUE_GRAD**2)):
    for m in (1, 8):
      emp = many_estimates[dist, m].var(0)
      # 4000 samples: the relative std of a variance estimate is about sqrt(2/n)*(kurtosis
      # factor) < 10%; allow 25% per coordinate.
      np.testing.assert_allclose(emp, var / m, rtol=0.25)


def test_variance_falls_like_one_over_m(many_estimates):
  for dist in ("gaussian", "rademacher", "sphere"):
    mse1 = np.sum((many_estimates[dist, 1] - TRUE_GRAD) ** 2, axis=1).mean()
    mse8 = np.sum((many_estimates[dist, 8] - TRUE_GRAD) ** 2, axis=1).mean()
    assert 8 * 0.8 < mse1 / mse8 < 8 * 1.25, (dist, mse1 / mse8)


@pytest.mark.parametrize("dist", ["gaussian", "rademacher", "sphere"])
def test_central_difference_is_exact_for_quadratics(dist):
  key = jax.random.PRNGKey(3)
  # A large smoothing radius changes nothing for a quadratic along each direction.
  est = _rge_of_quadratic(
    key,
    zeroth_order=zj.ZerothOrderOptions(num_directions=3, smoothing=0.7, distribution=dist),
  )
  expected = np.zeros(D)
  for k in jax.random.split(key, 3):
    u = _vec(zj.sample_direction(k, THETA, distribution=dist))
    expected += float(u @ TRUE_GRAD) * np.asarray(u) / 3
  np.testing.assert_allclose(_vec(est), expected, rtol=1e-4, atol=1e-5)


def test_forward_scheme_has_the_second_order_term():
  key, delta = jax.random.PRNGKey(4), 0.5
  est = _rge_of_quadratic(
    key,
    zeroth_order=zj.ZerothOrderOptions(num_directions=2, smoothing=delta, scheme="forward"),
  )
  expected = np.zeros(D)
  for k in jax.random.split(key, 2):
    u = np.asarray(_vec(zj.sample_direction(k, THETA)))
    coef = u @ TRUE_GRAD + 0.5 * delta * u @ np.asarray(A) @ u
    expected += coef * u / 2
  np.testing.assert_allclose(_vec(est), expected, rtol=1e-4, atol=1e-4)


def test_jvp_scheme_is_the_exact_directional_derivative():
  def nonquadratic(p):
    return jnp.sum(jnp.sin(p["w"]) ** 2) + jnp.prod(jnp.cos(p["v"]))

  key = jax.random.PRNGKey(5)
  est = zj.rge(
    nonquadratic,
    THETA,
    key,
    zeroth_order=zj.ZerothOrderOptions(num_directions=2, smoothing=1.0, scheme="jvp"),
  )
  grad = _vec(jax.grad(nonquadratic)(THETA))
  expected = sum(
    float(_vec(zj.sample_direction(k, THETA)) @ grad) * _vec(zj.sample_direction(k, THETA)) / 2
    for k in jax.random.split(key, 2)
  )
  np.testing.assert_allclose(_vec(est), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["central", "forward", "jvp"])
def test_probe_batch_size_does_not_change_the_estimate(scheme):
  key = jax.random.PRNGKey(6)
  options = zj.ZerothOrderOptions(num_directions=7, smoothing=1e-2, scheme=scheme)
  ref = zj.rge(quadratic, THETA, key, zeroth_order=options)
  assert options.probe_batch_size == 1  # the default probes one direction at a time
  for pbs in (3, None):
    chex.assert_trees_all_close(
      zj.rge(
        quadratic, THETA, key, zeroth_order=dataclasses.replace(options, probe_batch_size=pbs)
      ),
      ref,
      rtol=1e-5,
      atol=1e-6,
    )


def test_mask_keeps_estimate_exactly_zero_and_directions_on_mask():
  mask = {"w": jnp.array([1, 0, 1, 0]), "v": jnp.array([0, 1])}
  key = jax.random.PRNGKey(7)
  for dist in ("gaussian", "rademacher", "sphere"):
    est = _rge_of_quadratic(
      key,
      zeroth_order=zj.ZerothOrderOptions(num_directions=5, smoothing=1e-2, distribution=dist),
      weight_mask=mask,
    )
    off = ~_vec(mask).astype(bool)
    assert np.all(np.asarray(_vec(est))[off] == 0.0)
    assert np.all(np.asarray(_vec(est))[~off] != 0.0)
  # Sphere directions have squared norm equal to the active dimension (3), not the full one.
  u = zj.sample_direction(key, THETA, distribution="sphere", weight_mask=mask)
  np.testing.assert_allclose(jnp.sum(_vec(u) ** 2), 3.0, rtol=1e-5)


@pytest.mark.parametrize(
  "perturb_leaves",
  [{"v": False, "w": True}, lambda p: {"v": False, "w": True}],
  ids=["pytree", "callable"],
)
def test_perturb_leaves_draws_nothing_for_unselected_leaves(perturb_leaves):
  est = _rge_of_quadratic(
    jax.random.PRNGKey(8),
    num_directions=4,
    smoothing=1e-2,
    perturb_leaves=perturb_leaves,
  )
  assert np.all(np.asarray(est["v"]) == 0.0)
  assert np.any(np.asarray(est["w"]) != 0.0)
  u = zj.sample_direction(jax.random.PRNGKey(8), THETA, perturb_leaves=perturb_leaves)
  assert np.all(np.asarray(u["v"]) == 0.0) and np.all(np.asarray(u["w"]) != 0.0)


def test_jit_matches_no_jit_and_aux_is_ignored():
  def with_aux(p):
    return quadratic(p), {"anything": jnp.ones(3)}

  key = jax.random.PRNGKey(9)
  kw = dict(num_directions=3, smoothing=1e-2, has_aux=True)
  eager = zj.rge(with_aux, THETA, key, **kw)
  jitted = jax.jit(lambda p, k: zj.rge(with_aux, p, k, **kw))(THETA, key)
  chex.assert_trees_all_close(eager, jitted, rtol=1e-6)


def test_bf16_params_keep_their_dtype():
  params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), THETA)
  est = zj.rge(
    lambda p: quadratic(jax.tree.map(lambda x: x.astype(jnp.float32), p)),
    params,
    jax.random.PRNGKey(0),
    num_directions=2,
    smoothing=1e-1,
  )
  chex.assert_trees_all_equal_dtypes(est, params)


def test_zero_gradient_gives_zero_estimate_not_nan():
  est = zj.rge(
    lambda p: jnp.float32(1.0) + 0 * _vec(p).sum(),
    THETA,
    jax.random.PRNGKey(0),
    zeroth_order=zj.ZerothOrderOptions(num_directions=4, smoothing=1e-3, distribution="sphere"),
  )
  assert np.all(np.asarray(_vec(est)) == 0.0)


def _options(**kwargs):
  return lambda: zj.ZerothOrderOptions(**kwargs)


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(num_directions=0), "num_directions must be an integer >= 1, got 0"),
    (dict(num_directions=2.5), "num_directions must be an integer >= 1, got 2.5"),
    (dict(smoothing=0.0), "smoothing must be a finite number > 0, got 0.0"),
    (dict(smoothing=-1e-3), "smoothing must be a finite number > 0, got -0.001"),
    (dict(zeroth_order=_options(distribution="cauchy")), "distribution must be one of .*gaussian"),
    (dict(zeroth_order=_options(scheme="backward")), "scheme must be one of .*central"),
    (dict(zeroth_order=_options(probe_batch_size=0)), "probe_batch_size.* must be .*, got 0"),
    (dict(zeroth_order={"num_directions": 2}), "zeroth_order must be a .*ZerothOrderOptions"),
    (dict(zeroth_order=2), "zeroth_order must be a .*ZerothOrderOptions.*, got 2"),
    (dict(weight_mask={"w": jnp.ones(3), "v": jnp.ones(2)}), "weight_mask leaf .*'w'.* must"),
    (dict(weight_mask={"w": jnp.ones(4)}), "weight_mask must have the same tree structure"),
    (dict(perturb_leaves={"w": True}), "perturb_leaves must be a pytree of bools"),
    (dict(perturb_leaves={"w": True, "v": "yes"}), "perturb_leaves leaves must be bools"),
  ],
)
def test_bad_arguments_raise(kwargs, match):
  args = dict(num_directions=2, smoothing=1e-3) | kwargs
  with pytest.raises(ValueError, match=match):
    # Options are built inside the raises block: a bad field fails at construction.
    if callable(args.get("zeroth_order")):
      args["zeroth_order"] = args["zeroth_order"]()
    zj.rge(quadratic, THETA, jax.random.PRNGKey(0), **args)


def test_bad_distribution_of_sample_direction_names_it():
  with pytest.raises(ValueError, match="distribution must be one of .*got 'cauchy'"):
    zj.sample_direction(jax.random.PRNGKey(0), THETA, distribution="cauchy")


@pytest.mark.parametrize(
  "kwargs, match",
  [
    (dict(num_directions=0), "num_directions must be an integer >= 1, got 0"),
    (dict(num_directions=True), "num_directions must be an integer >= 1, got True"),
    (dict(smoothing=float("inf")), "smoothing must be a finite number > 0, got inf"),
    (dict(distribution="uniform"), "distribution must be one of .*, got 'uniform'"),
    (dict(scheme="backward"), "scheme must be one of .*, got 'backward'"),
    (dict(probe_batch_size=-1), "probe_batch_size.* must be an integer >= 1.*, got -1"),
  ],
)
def test_zeroth_order_options_name_the_bad_field(kwargs, match):
  with pytest.raises(ValueError, match=match):
    zj.ZerothOrderOptions(**kwargs)


def test_zeroth_order_options_are_frozen_revalidated_and_count_queries():
  options = zj.ZerothOrderOptions(num_directions=5, smoothing=1e-2)
  assert options == zj.ZerothOrderOptions(5, 1e-2, "gaussian", "central", 1)  # the defaults
  with pytest.raises(dataclasses.FrozenInstanceError):
    options.num_directions = 3
  # dataclasses.replace builds a new instance, so it is checked like a fresh one.
  with pytest.raises(ValueError, match="num_directions"):
    dataclasses.replace(options, num_directions=0)
  with pytest.raises(ValueError, match="scheme"):
    dataclasses.replace(options, scheme="backward")
  assert dataclasses.replace(options, scheme="jvp").num_directions == 5
  for m in (1, 5):
    assert dataclasses.replace(options, num_directions=m, scheme="central").queries == 2 * m
    assert dataclasses.replace(options, num_directions=m, scheme="forward").queries == m + 1
    assert dataclasses.replace(options, num_directions=m, scheme="jvp").queries == m
  # Short forms on top of the options override their fields.
  key = jax.random.PRNGKey(1)
  chex.assert_trees_all_equal(
    zj.rge(quadratic, THETA, key, zeroth_order=options, num_directions=3),
    zj.rge(quadratic, THETA, key, zeroth_order=dataclasses.replace(options, num_directions=3)),
  )


SPARSE_MASK = {"w": jnp.array([1, 0, 1, 1]), "v": jnp.array([0, 1])}
SPARSE_COUNTS = {"w": 3, "v": 1}


@pytest.mark.parametrize("dist", ["gaussian", "rademacher", "sphere"])
def test_sparse_draw_lives_exactly_on_the_mask(dist):
  u = _vec(
    zj.sample_direction(
      jax.random.PRNGKey(2),
      THETA,
      distribution=dist,
      weight_mask=SPARSE_MASK,
      weight_mask_counts=SPARSE_COUNTS,
    )
  )
  on = np.asarray(_vec(SPARSE_MASK)).astype(bool)
  assert np.all(np.asarray(u)[~on] == 0.0) and np.all(np.asarray(u)[on] != 0.0)
  if dist == "sphere":
    np.testing.assert_allclose(np.sum(np.asarray(u) ** 2), 4.0, rtol=1e-5)


def test_sparse_draw_is_unbiased_for_the_masked_gradient():
  keys = jax.random.split(jax.random.PRNGKey(11), 4000)
  fn = jax.jit(
    jax.vmap(
      lambda k: _vec(
        _rge_of_quadratic(
          k,
          num_directions=1,
          smoothing=0.1,
          weight_mask=SPARSE_MASK,
          weight_mask_counts=SPARSE_COUNTS,
        )
      )
    )
  )
  samples = np.asarray(fn(keys))
  on = np.asarray(_vec(SPARSE_MASK)).astype(bool)
  g = TRUE_GRAD * on
  # With u Gaussian on the active set: coordinate variance ||g_on||^2 + g_j^2.
  std_of_mean = np.sqrt((np.sum(g**2) + g**2) / len(keys))
  np.testing.assert_array_less(np.abs(samples.mean(0) - g), 5 * std_of_mean + 1e-7)
  np.testing.assert_allclose(samples[:, on].var(0), np.sum(g**2) + g[on] ** 2, rtol=0.25)


@pytest.mark.parametrize(
  "counts, mask, match",
  [
    ({"w": 3, "v": 1}, None, "weight_mask_counts needs weight_mask"),
    ({"w": 5, "v": 1}, SPARSE_MASK, "weight_mask_counts leaves must be .*got 5"),
    ({"w": 3.0, "v": 1}, SPARSE_MASK, "weight_mask_counts leaves must be .*got 3.0"),
    ({"w": 3}, SPARSE_MASK, "weight_mask_counts must have one int per parameter leaf"),
  ],
)
def test_bad_mask_counts_raise(counts, mask, match):
  with pytest.raises(ValueError, match=match):
    _rge_of_quadratic(
      jax.random.PRNGKey(0),
      num_directions=1,
      smoothing=1e-3,
      weight_mask=mask,
      weight_mask_counts=counts,
    )


def test_rge_dynamic_averages_over_the_directions_it_probed():
  # The estimate is (1/n) sum_{i<n} c_i u_i over the n directions probed, and the loop probes at
  # most max_directions. So a count above it (7 of 3) is the 3-direction estimate, not 3/7 of
  # it. Checked through the sums n x est(n), which grow by one direction's term per direction.
  a = jnp.array([1.0, -2.0, 0.5, 3.0])
  loss = lambda p: jnp.dot(a, p)  # noqa: E731
  key = jax.random.key(0)

  def total(n):  # n x est(n): the sum of the probed directions' terms
    est, _ = zj.rge_dynamic(loss, jnp.zeros(4), key, max_directions=3, num_active=jnp.int32(n))
    return np.asarray(est, np.float64) * min(max(n, 1), 3)

  np.testing.assert_allclose(total(7) / 3, total(3) / 3, rtol=0, atol=0)
  np.testing.assert_array_equal(total(0), np.zeros(4))
  # Directions are the same whatever the count, so the sums nest: total(3) = total(2) + term 2.
  term = [total(1), total(2) - total(1), total(3) - total(2)]
  np.testing.assert_allclose(sum(term), total(7), rtol=1e-6)
  assert all(np.linalg.norm(t) > 0 for t in term)
