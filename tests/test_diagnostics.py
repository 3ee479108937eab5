"""Diagnostics against quantities derived independently on models small enough for jax.hessian.

Reference values come from the explicit Hessian (``jax.hessian`` on the flattened parameters,
analysed in float64 numpy), from closed forms on quadratics, or from numpy Monte Carlo; nothing is
pinned to an earlier output of the code under test. Float32 throughout (x64 is never enabled).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import zosam_jax as zj
import zosam_jax.diagnostics as zd

KEY = jax.random.PRNGKey(0)

# ----------------------------------------------------------------------------- a tiny MLP

# Test data from numpy (device transfers, not eager jax ops: each eager op compiles a kernel).
_RNG = np.random.default_rng(42)


def _f32(*shape, scale=1.0):
  return jnp.asarray(scale * _RNG.normal(size=shape), jnp.float32)


def _bits(*shape, keep=0.55):
  return jnp.asarray(_RNG.uniform(size=shape) < keep, jnp.float32)


X = _f32(32, 5)
Y = _f32(32, 2)
PARAMS = {"w": _f32(5, 6, scale=0.6), "b": _f32(6, scale=0.5), "v": _f32(6, 2, scale=0.6)}
# 48 parameters in 3 leaves
MASK = {"w": _bits(5, 6), "b": _bits(6), "v": _bits(6, 2)}


def mlp_loss_on(p, x, y):
  hidden = jnp.tanh(x @ p["w"] + p["b"])
  return jnp.mean(jnp.square(hidden @ p["v"] - y))


def mlp_loss(p):
  return mlp_loss_on(p, X, Y)


FLAT, UNRAVEL = ravel_pytree(PARAMS)
DIM = FLAT.shape[0]
ACTIVE = np.asarray(ravel_pytree(MASK)[0]).astype(bool)


@pytest.fixture(scope="module")
def hessian():
  """The explicit Hessian of the MLP loss, float64 numpy, symmetrised."""
  h = np.asarray(jax.jit(jax.hessian(lambda f: mlp_loss(UNRAVEL(f))))(FLAT), np.float64)
  return 0.5 * (h + h.T)


def _jit(fn, *args, **kwargs):
  """``fn(*args, **kwargs)`` under one ``jax.jit`` (everything closed over): one compile instead
  of hundreds of eager op-by-op dispatches, which dominate the run time of these tiny models."""
  return jax.jit(lambda: fn(*args, **kwargs))()


def _flat(tree):
  return np.asarray(ravel_pytree(tree)[0], np.float64)


def _off_diagonal_sq(h):
  return np.sum(np.square(h - np.diag(np.diag(h))))


# ----------------------------------------------------------------------------- HVP and Lanczos


def test_hvp_matches_explicit_hessian(hessian):
  v = UNRAVEL(_f32(DIM))
  hv = _jit(zd.hessian_vector_product, mlp_loss, PARAMS, v)
  np.testing.assert_allclose(_flat(hv), hessian @ _flat(v), rtol=1e-4, atol=1e-5)
  # has_aux: the aux output is ignored
  hv_aux = _jit(
    zd.hessian_vector_product, lambda p: (mlp_loss(p), {"a": 1.0}), PARAMS, v, has_aux=True
  )
  np.testing.assert_allclose(_flat(hv_aux), _flat(hv), rtol=1e-6)


def test_top_k_eigenvalues_equal_eigvalsh(hessian):
  expected = np.linalg.eigvalsh(hessian)[::-1][:4]
  fn = jax.jit(lambda k: zd.hessian_eigenvalues(mlp_loss, PARAMS, k, k=4, num_iterations=DIM))
  got = np.asarray(fn(KEY))
  assert got.shape == (4,)
  np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_full_lanczos_recovers_repeated_eigenvalues():
  # A quadratic with a triple top eigenvalue and a double zero: one Krylov space sees each
  # eigenspace once, so exactness needs the restarts.
  d = 12
  q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))
  lam = np.array([3.0, 3.0, 3.0, 2.0, 1.5, 1.0, 0.5, 0.0, 0.0, -0.5, -1.0, -2.0])
  a = jnp.asarray(q @ np.diag(lam) @ q.T, jnp.float32)
  params = {"x": jnp.ones((3, 2)), "y": jnp.ones((6,))}

  def loss(p):
    x = ravel_pytree(p)[0]
    return 0.5 * x @ a @ x

  got = np.asarray(_jit(zd.hessian_eigenvalues, loss, params, KEY, k=d, num_iterations=d))
  np.testing.assert_allclose(got, np.sort(lam)[::-1], atol=1e-4)


def test_masked_eigenvalues_are_those_of_the_active_principal_submatrix(hessian):
  sub = hessian[np.ix_(ACTIVE, ACTIVE)]
  expected = np.linalg.eigvalsh(sub)[::-1]
  n_active = int(ACTIVE.sum())
  got = np.asarray(
    _jit(
      zd.hessian_eigenvalues,
      mlp_loss,
      PARAMS,
      KEY,
      k=n_active + 2,
      num_iterations=DIM,
      weight_mask=MASK,
    )
  )
  np.testing.assert_allclose(got[:n_active], expected, rtol=1e-4, atol=1e-4 * expected[0])
  assert np.all(np.isnan(got[n_active:]))  # there are only n_active eigenvalues


def test_eigenvectors_satisfy_the_eigen_equation_on_the_active_subspace(hessian):
  vals, vecs = _jit(
    zd.hessian_eigenvalues,
    mlp_loss,
    PARAMS,
    KEY,
    k=2,
    num_iterations=DIM,
    weight_mask=MASK,
    return_eigenvectors=True,
  )
  assert jax.tree.structure(vecs) == jax.tree.structure(PARAMS)
  sub = hessian * np.outer(ACTIVE, ACTIVE)
  for i in range(2):
    v = _flat(jax.tree.map(lambda x, i=i: x[i], vecs))
    np.testing.assert_allclose(np.linalg.norm(v), 1.0, rtol=1e-5)
    assert np.all(v[~ACTIVE] == 0.0)
    np.testing.assert_allclose(sub @ v, float(vals[i]) * v, atol=1e-4)


# ----------------------------------------------------------------------------- trace and SLQ


def test_hutchinson_trace_and_its_standard_error_are_honest(hessian):
  n = 400
  est, se = _jit(zd.hessian_trace, mlp_loss, PARAMS, KEY, num_samples=n)
  exact = np.trace(hessian)
  exact_se = np.sqrt(2.0 * _off_diagonal_sq(hessian) / n)  # Rademacher: Var = 2 sum_{i!=j} H_ij^2
  assert abs(float(est) - exact) < 4.0 * exact_se
  assert 0.6 < float(se) / exact_se < 1.6


def test_masked_hutchinson_trace(hessian):
  sub = hessian[np.ix_(ACTIVE, ACTIVE)]
  n = 300
  est, se = _jit(zd.hessian_trace, mlp_loss, PARAMS, KEY, num_samples=n, weight_mask=MASK)
  exact_se = np.sqrt(2.0 * _off_diagonal_sq(sub) / n)
  assert abs(float(est) - np.trace(sub)) < 4.0 * exact_se
  assert 0.6 < float(se) / exact_se < 1.6


def _separable(p):
  # Diagonal Hessian: every Rademacher z gives z^T H z = tr H exactly.
  x = ravel_pytree(p)[0]
  c = jnp.linspace(0.5, 2.0, x.shape[0])
  return jnp.sum(c * jnp.square(x) + 0.1 * jnp.square(jnp.square(x)))


def test_diagonal_hessian_trace_is_exact_for_hutchinson_and_slq():
  params = {
    "a": jnp.asarray(np.linspace(-1.0, 1.0, 8).reshape(2, 4), jnp.float32),
    "b": jnp.asarray(np.linspace(0.5, 1.5, 5), jnp.float32),
  }
  x = np.asarray(ravel_pytree(params)[0], np.float64)
  c = np.linspace(0.5, 2.0, x.size)
  exact = np.sum(2 * c + 1.2 * x**2)
  est, se = _jit(zd.hessian_trace, _separable, params, KEY, num_samples=4)
  np.testing.assert_allclose(float(est), exact, rtol=1e-5)
  assert float(se) < 1e-4 * exact
  # SLQ: d * sum(w * nodes) = z^T H z of the start vector (Gauss quadrature is exact for degree
  # 1), here tr H for every start.
  nodes, weights = _jit(
    zd.hessian_spectrum, _separable, params, KEY, num_iterations=6, num_vectors=3
  )
  assert nodes.shape == weights.shape == (18,)
  nodes, weights = np.asarray(nodes, np.float64), np.asarray(weights, np.float64)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.sum(weights * nodes) * x.size, exact, rtol=1e-4)


def test_slq_weights_sum_to_one_and_reproduce_the_trace(hessian):
  num_vectors = 64
  nodes, weights = _jit(
    zd.hessian_spectrum, mlp_loss, PARAMS, KEY, num_iterations=8, num_vectors=num_vectors
  )
  per_vector = np.asarray(weights).reshape(num_vectors, -1).sum(axis=1)
  np.testing.assert_allclose(per_vector, 1.0 / num_vectors, rtol=1e-5)
  estimate = np.sum(np.asarray(weights, np.float64) * np.asarray(nodes, np.float64)) * DIM
  exact_se = np.sqrt(2.0 * _off_diagonal_sq(hessian) / num_vectors)
  assert abs(estimate - np.trace(hessian)) < 4.0 * exact_se
  # Every node lies in the spectrum's range (Ritz values are interior).
  ev = np.linalg.eigvalsh(hessian)
  assert ev[0] - 1e-4 <= float(nodes.min()) and float(nodes.max()) <= ev[-1] + 1e-4


def test_full_slq_nodes_are_eigenvalues_of_the_masked_hessian(hessian):
  sub = hessian[np.ix_(ACTIVE, ACTIVE)]
  ev = np.linalg.eigvalsh(sub)
  nodes, weights = _jit(
    zd.hessian_spectrum, mlp_loss, PARAMS, KEY, num_iterations=DIM, weight_mask=MASK
  )
  nodes, weights = np.asarray(nodes), np.asarray(weights)
  np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-5)
  supported = nodes[weights > 1e-6]
  dist = np.min(np.abs(supported[:, None] - ev[None, :]), axis=1)
  assert np.all(dist < 1e-4 * np.abs(ev).max())


def test_spectral_density_has_pyhessian_width_and_the_right_mass():
  nodes = jnp.array([-1.0, 0.0, 2.0, 5.0])
  weights = jnp.array([0.1, 0.5, 0.3, 0.1])
  grid, density = _jit(zd.spectral_density, nodes, weights, num_points=200_000)
  assert grid.shape == density.shape == (200_000,)
  np.testing.assert_allclose(float(grid[0]), -1.01, rtol=1e-5)
  np.testing.assert_allclose(float(grid[-1]), 5.01, rtol=1e-5)
  # The grid ends 0.01 beyond the extreme nodes, so their kernels' tails (sigma = 0.0078) are cut:
  # the mass on the grid is sum_i w_i P(lo < N(node_i, var) < hi).
  var = 1e-5 * 6.02
  on_grid = sum(
    w
    * 0.5
    * (math.erf((5.01 - x) / math.sqrt(2 * var)) - math.erf((-1.01 - x) / math.sqrt(2 * var)))
    for x, w in zip([-1.0, 0.0, 2.0, 5.0], [0.1, 0.5, 0.3, 0.1], strict=True)
  )
  assert on_grid < 0.99
  # Trapezoid on the float64 grid: the float32 grid's spacing is uneven at the 1e-3 level.
  mass = np.trapezoid(np.asarray(density, np.float64), np.asarray(grid, np.float64))
  np.testing.assert_allclose(mass, on_grid, rtol=1e-4)
  # Default variance 1e-5 * max(1, width): the peak of the 0.5-weight node.
  np.testing.assert_allclose(float(density.max()), 0.5 / np.sqrt(2 * np.pi * var), rtol=1e-2)
  _, d2 = _jit(zd.spectral_density, nodes, weights, num_points=50, sigma_squared=1.0)
  assert np.all(np.asarray(d2) > 0)


# ----------------------------------------------------------------------------- gradient variance


def _batches(num):
  xs = _f32(num, 8, 5)
  ys = _f32(num, 8, 2)
  return xs, ys


def _numpy_variance(grads, mask_flat=None):
  g = np.stack([_flat(t) for t in grads])
  if mask_flat is not None:
    g = g * mask_flat
  mean = g.mean(axis=0)
  var = np.mean(np.sum((g - mean) ** 2, axis=1))
  return var, np.sum(mean**2)


@pytest.mark.parametrize("use_mask", [False, True])
def test_gradient_variance_matches_numpy(use_mask):
  xs, ys = _batches(6)
  grad_fn = jax.grad(lambda p, b: mlp_loss_on(p, *b))
  weight_mask = MASK if use_mask else None
  grads = [jax.jit(grad_fn)(PARAMS, (xs[i], ys[i])) for i in range(6)]
  var, mean_sq = _numpy_variance(grads, ACTIVE.astype(float) if use_mask else None)
  stacked = _jit(zd.gradient_variance, grad_fn, PARAMS, (xs, ys), weight_mask=weight_mask)
  listed = _jit(
    zd.gradient_variance,
    grad_fn,
    PARAMS,
    [(xs[i], ys[i]) for i in range(6)],
    weight_mask=weight_mask,
  )
  for out in (stacked, listed):
    np.testing.assert_allclose(float(out["variance"]), var, rtol=1e-5)
    np.testing.assert_allclose(float(out["mean_norm_sq"]), mean_sq, rtol=1e-5)
    np.testing.assert_allclose(float(out["relative"]), var / mean_sq, rtol=1e-5)


def _loss_of_batch(p, b):
  return mlp_loss_on(p, *b)


def test_head_gradient_fn_gives_sgd_and_sam_directions():
  xs, ys = _batches(2)
  b1 = (xs[1], ys[1])
  fns = {
    "sgd": zd.head_gradient_fn(zj.exact_gradient(), _loss_of_batch),
    "sam": zd.head_gradient_fn(zj.sam(0.1), _loss_of_batch),
    # extra keyword arguments reach update: weight_mask keeps SAM's perturbation on active weights
    "sam_masked": zd.head_gradient_fn(zj.sam(0.1), _loss_of_batch, weight_mask=MASK),
  }
  got = jax.jit(lambda p, b: {k: f(p, b) for k, f in fns.items()})(PARAMS, b1)

  def references(p, b):
    loss = lambda q: _loss_of_batch(q, b)  # noqa: E731
    return {
      "sgd": jax.grad(loss)(p),
      "sam": zj.sam_gradient(loss, p, rho=0.1)[1],
      "sam_masked": zj.sam_gradient(loss, p, rho=0.1, weight_mask=MASK)[1],
    }

  expected = jax.jit(references)(PARAMS, b1)
  for name in fns:
    np.testing.assert_allclose(_flat(got[name]), _flat(expected[name]), rtol=1e-5, atol=1e-7)


def test_head_gradient_fn_fixes_the_zo_sam_key_across_batches():
  xs, ys = _batches(4)

  @jax.jit
  def directions(key, p):
    head = zj.zo_sam(0.1, num_directions=4, smoothing=1e-3)
    grad_fn = zd.head_gradient_fn(head, _loss_of_batch, key=key)
    first = grad_fn(p, (xs[0], ys[0]))
    again = grad_fn(p, (xs[0], ys[0]))
    stats = zd.gradient_variance(grad_fn, p, (xs, ys), weight_mask=MASK)
    return first, again, stats

  first, again, stats = directions(jax.random.PRNGKey(3), PARAMS)
  other, _, _ = directions(jax.random.PRNGKey(4), PARAMS)
  np.testing.assert_array_equal(_flat(first), _flat(again))  # same state, same directions
  assert not np.allclose(_flat(first), _flat(other))  # the key reaches the directions
  assert np.isfinite(float(stats["variance"])) and float(stats["variance"]) > 0


def test_head_gradient_fn_rejects_a_key_for_a_keyless_state():
  fn = zd.head_gradient_fn(zj.gsam(0.1), _loss_of_batch, key=KEY)
  with pytest.raises(ValueError, match="key"):
    fn(PARAMS, (X, Y))


# ----------------------------------------------------------------------------- landscapes

CNN_PARAMS = {
  "conv": {"kernel": _f32(3, 3, 2, 4), "bias": jnp.ones((4,))},
  "dense": {"kernel": _f32(6, 5), "scale": jnp.ones((5,))},
}


@pytest.mark.parametrize("use_mask", [False, True])
def test_filter_normalized_direction_matches_filter_norms(use_mask):
  weight_mask = None
  if use_mask:
    weight_mask = jax.tree.map(lambda p: _bits(*p.shape, keep=0.5), CNN_PARAMS)
    # a fully pruned filter gets a zero direction
    conv = np.array(weight_mask["conv"]["kernel"])
    conv[..., 0] = 0.0
    weight_mask["conv"]["kernel"] = jnp.asarray(conv)
  d = _jit(zd.filter_normalized_direction, KEY, CNN_PARAMS, weight_mask=weight_mask)
  for layer in ("conv", "dense"):
    p = np.asarray(CNN_PARAMS[layer]["kernel"], np.float64)
    dk = np.asarray(d[layer]["kernel"], np.float64)
    if use_mask:
      m = np.asarray(weight_mask[layer]["kernel"])
      p = p * m
      assert np.all(dk[m == 0] == 0.0)
    axes = tuple(range(p.ndim - 1))
    np.testing.assert_allclose(
      np.sqrt(np.sum(dk**2, axis=axes)), np.sqrt(np.sum(p**2, axis=axes)), rtol=1e-5
    )
  assert np.all(np.asarray(d["conv"]["bias"]) == 0.0)
  assert np.all(np.asarray(d["dense"]["scale"]) == 0.0)


def test_landscape_centre_is_the_loss():
  out1 = _jit(zd.loss_landscape, mlp_loss, PARAMS, KEY, num_points=5, chunk_size=2)
  assert out1.losses.shape == (5,) and out1.betas is None
  assert float(out1.alphas[2]) == 0.0
  assert float(out1.losses[2]) == float(mlp_loss(PARAMS))
  out2 = jax.jit(
    lambda p: zd.loss_landscape(
      mlp_loss, p, KEY, num_points=3, two_dimensional=True, weight_mask=MASK
    )
  )(PARAMS)
  assert out2.losses.shape == (3, 3)
  np.testing.assert_allclose(float(out2.losses[1, 1]), float(mlp_loss(PARAMS)), rtol=1e-6)


def test_quadratic_landscape_has_its_closed_form():
  rng = np.random.default_rng(1)
  d = 12
  a = rng.normal(size=(d, d))
  a = a @ a.T / d
  b = rng.normal(size=d)
  params = {"k": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "bias": jnp.zeros((2,))}

  def loss(p):
    x = jnp.ravel(p["k"])
    return 0.5 * x @ jnp.asarray(a, jnp.float32) @ x - jnp.asarray(b, jnp.float32) @ x

  out = _jit(zd.loss_landscape, loss, params, KEY, num_points=7, span=0.5, two_dimensional=True)
  x = np.asarray(params["k"], np.float64).ravel()
  d1, d2 = (np.asarray(t["k"], np.float64).ravel() for t in out.directions)

  def f(v):
    return 0.5 * v @ a @ v - b @ v

  alphas = np.asarray(out.alphas)
  expected = np.array([[f(x + s * d1 + t * d2) for t in alphas] for s in alphas])
  np.testing.assert_allclose(np.asarray(out.losses), expected, rtol=1e-4, atol=1e-4)
  line = _jit(zd.loss_landscape, loss, params, KEY, num_points=9, span=0.5)
  dl = np.asarray(line.directions[0]["k"], np.float64).ravel()
  expected_line = [f(x + s * dl) for s in np.asarray(line.alphas)]
  np.testing.assert_allclose(np.asarray(line.losses), expected_line, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- ascent quality

QD = 40
_Q = np.random.default_rng(2).normal(size=(QD, QD))
QA = jnp.asarray(_Q @ _Q.T / QD + np.eye(QD), jnp.float32)
QPARAMS = {
  "w": jnp.asarray(np.linspace(-1.0, 1.0, 30).reshape(5, 6), jnp.float32),
  "u": jnp.asarray(np.linspace(0.3, 1.2, 10), jnp.float32),
}


def _q_mask(pruned_rows):
  w = np.ones((5, 6), np.float32)
  w[pruned_rows] = 0.0
  return {"w": jnp.asarray(w), "u": jnp.ones(10)}


def qloss(p):
  x = ravel_pytree(p)[0]
  return 0.5 * x @ QA @ x + jnp.sum(x)


@pytest.mark.parametrize("use_mask", [False, True])
def test_exact_gradient_ascent_has_cosine_one_and_ratio_one(use_mask):
  weight_mask = _q_mask(slice(0, 1)) if use_mask else None
  out = _jit(
    zd.ascent_quality,
    qloss,
    QPARAMS,
    zd.gradient_ascent_fn(qloss),
    rho=0.05,
    key=KEY,
    weight_mask=weight_mask,
    num_samples=2,
  )
  np.testing.assert_allclose(float(out.cosine_mean), 1.0, rtol=1e-5)
  np.testing.assert_allclose(float(out.increase_ratio), 1.0, rtol=1e-6)
  assert float(out.sam_increase) > 0
  assert out.cosines.shape == (2,)


def _expected_zo_cosine(m, d, n=100_000, seed=0):
  """E[cos(g_hat, g)] for g_hat = 1/m sum_i (u_i . g) u_i, u_i ~ N(0, I_d): by isotropy g = e_1."""
  u = np.random.default_rng(seed).normal(size=(n, m, d))
  g_hat = np.einsum("nm,nmd->nd", u[:, :, 0], u)
  return np.mean(g_hat[:, 0] / np.linalg.norm(g_hat, axis=1))


@pytest.mark.parametrize("use_mask", [False, True])
def test_zo_ascent_cosine_matches_its_monte_carlo_expectation(use_mask):
  m = 4
  weight_mask = None
  d = QD
  if use_mask:
    # Prune 18 coordinates (where the gradient is large): were they probed, the mean cosine
    # would be about 0.265 instead of 0.380 (numpy Monte Carlo with this gradient).
    weight_mask = _q_mask(slice(2, None))
    d = QD - 18
  ascent = zd.rge_ascent_fn(qloss, num_directions=m, smoothing=1e-2, weight_mask=weight_mask)
  num_samples = 400
  out = jax.jit(
    lambda p, k: zd.ascent_quality(
      qloss, p, ascent, rho=0.05, key=k, weight_mask=weight_mask, num_samples=num_samples
    )
  )(QPARAMS, KEY)
  expected = _expected_zo_cosine(m, d)  # 0.288 at d = 40, 0.380 at d = 22
  se = float(out.cosine_std) / np.sqrt(num_samples)
  assert abs(float(out.cosine_mean) - expected) < 4.0 * se + 2e-3
  assert 0 < float(out.increase_ratio) < 1


# ----------------------------------------------------------------------------- bad input


def _bad_mask():
  return {"w": jnp.ones((5, 5)), "b": jnp.ones((6,)), "v": jnp.ones((6, 2))}


@pytest.mark.parametrize(
  "call, name",
  [
    (lambda: zd.hessian_eigenvalues(mlp_loss, PARAMS, KEY, k=0), "k"),
    (lambda: zd.hessian_eigenvalues(mlp_loss, PARAMS, KEY, k=5, num_iterations=4), "num_iter"),
    (lambda: zd.hessian_eigenvalues(mlp_loss, PARAMS, KEY, weight_mask=_bad_mask()), "weight_mask"),
    (lambda: zd.hessian_eigenvalues(mlp_loss, PARAMS, KEY, weight_mask={"w": 1}), "weight_mask"),
    (lambda: zd.hessian_trace(mlp_loss, PARAMS, KEY, num_samples=1), "num_samples"),
    (lambda: zd.hessian_trace(mlp_loss, PARAMS, KEY, weight_mask=_bad_mask()), "weight_mask"),
    (lambda: zd.hessian_spectrum(mlp_loss, PARAMS, KEY, num_iterations=0), "num_iter"),
    (lambda: zd.hessian_spectrum(mlp_loss, PARAMS, KEY, num_vectors=0), "num_vectors"),
    (lambda: zd.spectral_density(jnp.ones(3), jnp.ones(3), num_points=1), "num_points"),
    (lambda: zd.gradient_variance(jax.grad(mlp_loss_on), PARAMS, []), "batches"),
    (
      lambda: zd.gradient_variance(jax.grad(mlp_loss_on), PARAMS, (jnp.ones((2, 3)), jnp.ones(3))),
      "batches",
    ),
    (
      lambda: zd.gradient_variance(jax.grad(mlp_loss_on), PARAMS, [1], weight_mask=_bad_mask()),
      "weight_mask",
    ),
    (lambda: zd.loss_landscape(mlp_loss, PARAMS, KEY, num_points=1), "num_points"),
    (lambda: zd.loss_landscape(mlp_loss, PARAMS, KEY, span=0.0), "span"),
    (lambda: zd.filter_normalized_direction(KEY, PARAMS, weight_mask=_bad_mask()), "weight_mask"),
    (
      lambda: zd.ascent_quality(
        mlp_loss, PARAMS, zd.gradient_ascent_fn(mlp_loss), rho=0.1, key=KEY, num_samples=0
      ),
      "num_samples",
    ),
    (
      lambda: zd.ascent_quality(mlp_loss, PARAMS, zd.gradient_ascent_fn(mlp_loss), rho=0, key=KEY),
      "rho",
    ),
  ],
)
def test_bad_input_raises_value_error_naming_the_argument(call, name):
  with pytest.raises(ValueError, match=name):
    call()


def test_a_bool_mask_works_like_a_float_mask():
  bool_mask = jax.tree.map(lambda m: m > 0, MASK)
  a = _jit(zd.hessian_trace, mlp_loss, PARAMS, KEY, num_samples=3, weight_mask=MASK)
  b = _jit(zd.hessian_trace, mlp_loss, PARAMS, KEY, num_samples=3, weight_mask=bool_mask)
  np.testing.assert_allclose(float(a.estimate), float(b.estimate), rtol=1e-6)
