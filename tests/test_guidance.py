"""Prior-guided zeroth-order ascents: ``rge(prior=)`` and the heads' ``guidance=``.

Expected values are derived from the estimator's definition: direction 0 is ``sqrt(d) p`` (``p``
the unit prior on the active coordinates), directions ``i >= 1`` are ``(I - p p^T) u_i`` with
``u_i`` what :func:`zosam_jax.sample_direction` regenerates from ``split(key, m)[i]``, and the
estimate is ``1/m sum_i c_i w_i``. On a quadratic, central differences (and jvp) are exact.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from tests._helpers import train
from tests.sparse._helpers import mlp_apply, mlp_params, xent
from zosam_jax import sparse

D = 6
A = jnp.diag(jnp.arange(1.0, D + 1.0))
B = jnp.ones(D)
THETA = {"w": jnp.linspace(-1.0, 1.0, D)}
GUIDED = "previous_gradient"


def quadratic(p):
  return 0.5 * p["w"] @ A @ p["w"] - B @ p["w"]


def grad_at(w):
  return np.asarray(A @ w - B, np.float64)


def cosine(a, b):
  a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
  return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# A prior that is neither the gradient nor orthogonal to it.
PRIOR = {"w": jnp.array([1.0, -2.0, 0.5, 0.0, 3.0, -1.0])}
KEYS = jax.random.split(jax.random.PRNGKey(0), 3)


def rge_over_keys(m=1, *, scheme="central", probe_batch_size=1, weight_mask=None, guided=True):
  """Jitted ``keys, prior -> [estimate["w"] for each key]`` (one compilation per setting)."""
  opts = zj.ZerothOrderOptions(num_directions=m, scheme=scheme, probe_batch_size=probe_batch_size)

  def one(key, prior):
    kw = {"prior": prior} if guided else {}
    est = zj.rge(quadratic, THETA, key, zeroth_order=opts, weight_mask=weight_mask, **kw)
    return est["w"]

  return jax.jit(jax.vmap(one, in_axes=(0, None)))


@pytest.mark.parametrize("m, scheme", [(1, "central"), (4, "central"), (2, "jvp")])
def test_an_exact_prior_gives_sams_direction(m, scheme):
  g = grad_at(THETA["w"])
  fn = rge_over_keys(m, scheme=scheme)
  # The sign comes from the probe, so a reversed and rescaled prior gives +g too.
  for scale in (1.0, -3.0):
    for est in fn(KEYS, {"w": jnp.asarray(scale * g, jnp.float32)}):
      assert cosine(est, g) > 1 - 1e-6


def _expected_estimate(key, m, prior, g, weight_mask=None):
  """``1/m sum_i c_i w_i`` rebuilt from the definition (float64)."""
  mask = np.ones(D) if weight_mask is None else np.asarray(weight_mask["w"], np.float64)
  d = mask.sum()
  p = np.asarray(prior["w"], np.float64) * mask
  p = p / np.linalg.norm(p)
  keys = jax.random.split(key, m)
  w0 = np.sqrt(d) * p
  total = (w0 @ g) * w0
  for i in range(1, m):
    u = np.asarray(zj.sample_direction(keys[i], THETA, weight_mask=weight_mask)["w"], np.float64)
    w = u - (u @ p) * p
    total += (w @ g) * w
  return total / m, p, d


def test_direction_zero_is_the_prior_and_the_rest_is_orthogonal_to_it():
  g, m = grad_at(THETA["w"]), 3
  fn = jax.jit(
    jax.vmap(lambda k: zj.rge_with_coefficients(quadratic, THETA, k, num_directions=m, prior=PRIOR))
  )
  ests, coefs = fn(KEYS)
  for key, est, coef in zip(KEYS, ests["w"], coefs, strict=True):
    est = {"w": est}
    expected, p, d = _expected_estimate(key, m, PRIOR, g)
    np.testing.assert_allclose(est["w"], expected, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(coef[0], np.sqrt(d) * (g @ p), rtol=1e-3)
    # Along p only direction 0 contributes: the random part is orthogonal to the prior.
    np.testing.assert_allclose(np.asarray(est["w"]) @ p, d * (g @ p) / m, rtol=1e-3)


def test_m1_probes_the_prior_alone():
  g = grad_at(THETA["w"])
  p = np.asarray(PRIOR["w"]) / np.linalg.norm(PRIOR["w"])
  for est in rge_over_keys(1)(KEYS, PRIOR):
    assert cosine(est, np.sign(g @ p) * p) > 1 - 1e-6


def test_expectation_over_keys_is_the_stated_one():
  # E[g_hat] = 1/m [d (g.p) p + (m - 1) h], h = (I - p p^T) g. Each random term (h.v) v with
  # v ~ N(0, P) (P = I - p p^T) has covariance |h|^2 P + h h^T (Isserlis), so coordinate j of
  # the mean over N keys has standard deviation sqrt((m - 1)(|h|^2 P_jj + h_j^2) / (m^2 N)).
  m, n = 3, 4000
  g = grad_at(THETA["w"])
  opts = zj.ZerothOrderOptions(num_directions=m, scheme="jvp")
  p = np.asarray(PRIOR["w"], np.float64)
  p /= np.linalg.norm(p)
  proj = np.eye(D) - np.outer(p, p)
  h = proj @ g
  expected = (D * (g @ p) * p + (m - 1) * h) / m
  std = np.sqrt((m - 1) * (h @ h * np.diag(proj) + h**2) / (m**2 * n))

  keys = jax.random.split(jax.random.PRNGKey(7), n)
  draws = jax.jit(
    jax.vmap(lambda k: zj.rge(quadratic, THETA, k, zeroth_order=opts, prior=PRIOR)["w"])
  )(keys)
  mean = np.asarray(draws, np.float64).mean(0)
  # 5 standard deviations per coordinate (a false failure has odds below 1e-5 over 6 of them).
  np.testing.assert_array_less(np.abs(mean - expected), 5 * std + 1e-5)
  # ... and the estimate is biased as stated: the orthogonal part is shrunk to (m-1)/m of h
  # against d/m along p, not the unbiased g.
  assert np.linalg.norm(mean - g) > 10 * np.linalg.norm(std)


def test_a_zero_prior_falls_back_to_the_plain_estimate():
  guided = rge_over_keys(3)(KEYS, {"w": jnp.zeros(D)})
  plain = rge_over_keys(3, guided=False)(KEYS, None)
  np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-5)


def test_batched_probes_give_the_same_guided_estimate():
  # Same directions (2 a chunk leaves a remainder of 1); the central differences' float32
  # rounding (about eps_32 L / delta in each coefficient) differs between programs, hence the
  # tolerance. The dynamic loop is covered by adaptive_zo_sam's twin test below.
  one = rge_over_keys(3)(KEYS, PRIOR)
  batched = rge_over_keys(3, probe_batch_size=2)(KEYS, PRIOR)
  np.testing.assert_allclose(batched, one, rtol=2e-3, atol=2e-4)


def test_weight_mask_restricts_the_prior_and_every_direction():
  mask = {"w": jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])}
  g = grad_at(THETA["w"])
  for key, est in zip(KEYS, rge_over_keys(3, weight_mask=mask)(KEYS, PRIOR), strict=True):
    assert np.all(np.asarray(est)[np.asarray(mask["w"]) == 0] == 0)
    expected, _, _ = _expected_estimate(key, 3, PRIOR, g, weight_mask=mask)
    np.testing.assert_allclose(est, expected, rtol=2e-3, atol=2e-4)


# ----------------------------------------------------------------------------- heads

ROWS = jnp.linspace(-1.0, 1.0, 4 * D).reshape(4, D)


def per_example(p, rows):
  diff = p["w"] - rows
  return 0.5 * jnp.einsum("bi,ij,bj->b", diff, A, diff)


def _exact_prior(state, loss_fn):
  return state._replace(prior=jax.grad(loss_fn)(THETA))


TWINS = {
  # name: (guided head, its exact-gradient twin)
  "zo_sam": (
    lambda: zj.zo_sam(0.1, num_directions=3, guidance=GUIDED),
    lambda: zj.sam(0.1),
  ),
  "sparse_sam": (
    lambda: zj.sparse_sam(
      0.1, 0.5, mask_method="random", ascent="zeroth_order", guidance=GUIDED, seed=1
    ),
    lambda: zj.sparse_sam(0.1, 0.5, mask_method="random", seed=1),
  ),
  "looksam": (
    lambda: zj.looksam(
      0.1, 1, ascent="zeroth_order", zeroth_order=zj.ZerothOrderOptions(2), guidance=GUIDED
    ),
    lambda: zj.looksam(0.1, 1),
  ),
  "adaptive_zo_sam": (
    lambda: zj.adaptive_zo_sam(0.1, 4, num_directions=2, guidance=GUIDED),
    lambda: zj.sam(0.1),
  ),
  "esam": (
    lambda: zj.esam(0.1, 1.0, 1.0, ascent="zeroth_order", guidance=GUIDED),
    lambda: zj.esam(0.1, 1.0, 1.0),
  ),
}


@pytest.mark.parametrize("name", sorted(TWINS))
def test_a_guided_head_with_an_exact_prior_takes_its_exact_twins_step(name):
  # Every head returns the gradient at theta + eps, A (theta + eps) - b for a quadratic with A
  # invertible, so equal updates mean equal eps: the guided ascent is SAM's.
  guided, exact = (f() for f in TWINS[name])
  if name == "esam":
    kwargs = {"per_example_loss_fn": per_example, "batch": ROWS}
    loss_fn = lambda p: jnp.mean(per_example(p, ROWS))  # noqa: E731
  else:
    kwargs = {"loss_fn": quadratic}
    loss_fn = quadratic
  state = _exact_prior(guided.init(THETA), loss_fn)
  got, new_state = jax.jit(lambda s: guided.update(None, s, THETA, **kwargs))(state)
  want, _ = exact.update(None, exact.init(THETA), THETA, **kwargs)
  np.testing.assert_allclose(got["w"], want["w"], rtol=1e-4, atol=1e-5)
  # The state now carries this step's exact gradient (the update itself here).
  np.testing.assert_allclose(new_state.prior["w"], got["w"], rtol=1e-6)


def test_the_first_guided_step_is_plain_zo_sams():
  guided = zj.zo_sam(0.1, num_directions=3, seed=4, guidance=GUIDED)
  plain = zj.zo_sam(0.1, num_directions=3, seed=4)
  a, _ = guided.update(None, guided.init(THETA), THETA, loss_fn=quadratic)
  b, _ = plain.update(None, plain.init(THETA), THETA, loss_fn=quadratic)
  np.testing.assert_allclose(a["w"], b["w"], rtol=1e-5, atol=1e-6)


def test_unguided_heads_keep_no_prior():
  for tx in (zj.zo_sam(0.1), zj.looksam(0.1), zj.adaptive_zo_sam(0.1), zj.esam(0.1)):
    assert tx.init(THETA).prior is None


_X = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
_Y = jnp.arange(8) % 3
_P = mlp_params(jax.random.PRNGKey(1), sizes=(5, 12, 3))


def _mlp_loss(p):
  return xent(mlp_apply(p, _X), _Y)


def test_under_rigl_the_prior_is_the_masked_exact_gradient_and_jit_traces_once():
  head = zj.zo_sam(0.05, num_directions=2, guidance=GUIDED)
  chain = optax.chain(head, optax.sgd(0.1, momentum=0.9))
  method = sparse.get_method("rigl", sparsity=0.8, update_every=2, end_step=6)
  tx = method.wrap(chain, _P)  # ERK: static counts, so directions are drawn sparsely

  @jax.jit
  def step(p, s):
    u, s = tx.update(None, s, p, loss_fn=_mlp_loss)
    return optax.apply_updates(p, u), s

  p, s = _P, tx.init(_P)
  for _ in range(5):  # mask updates at steps 2 and 4
    p, s = step(p, s)
    prior = s.inner_state[0].prior  # the head's state inside the wrapped chain
    for x, m in zip(jax.tree.leaves(prior), jax.tree.leaves(s.weight_mask), strict=True):
      assert np.all(np.asarray(x)[~np.asarray(m)] == 0)  # zero on pruned weights
  assert all(float(jnp.abs(x).sum()) > 0 for x in jax.tree.leaves(prior))
  assert step._cache_size() == 1


def test_the_state_keeps_the_exact_gradient_restricted_to_mask_and_leaves():
  params = {"a": jnp.linspace(-1.0, 1.0, 4), "b": jnp.linspace(0.5, 1.5, 3)}
  mask = {"a": jnp.array([1.0, 0.0, 1.0, 1.0]), "b": jnp.ones(3)}

  def loss(p):
    return jnp.sum(p["a"] ** 2 * jnp.arange(1.0, 5.0)) + jnp.sum(jnp.sin(p["b"])) * p["a"][0]

  head = zj.zo_sam(0.1, num_directions=2, guidance=GUIDED, perturb_leaves={"a": True, "b": False})
  state = head.init(params)

  @jax.jit
  def step(s):
    return head.update(None, s, params, loss_fn=loss, weight_mask=mask)

  for _ in range(3):
    grads, state = step(state)
    np.testing.assert_allclose(state.prior["a"], grads["a"] * mask["a"], rtol=1e-6)
    assert np.all(np.asarray(state.prior["b"]) == 0)  # not perturbed: never a direction
  assert step._cache_size() == 1


def test_training_with_guidance_traces_once_and_descends():
  head = zj.zo_sam(0.05, num_directions=2, guidance=GUIDED)
  tx = optax.chain(head, optax.sgd(0.05))
  params, state, step = train(tx, THETA, quadratic, 20)
  assert float(quadratic(params)) < float(quadratic(THETA))
  assert step._cache_size() == 1


@pytest.mark.parametrize(
  "build",
  [
    lambda: zj.zo_sam(guidance="prior"),
    lambda: zj.zo_sam(guidance=True),
    lambda: zj.sharpness_aware(0.1, guidance=GUIDED),
    lambda: zj.sharpness_aware(0.1, ascent="random", guidance=GUIDED),
    lambda: zj.sparse_sam(guidance=GUIDED),
    lambda: zj.looksam(guidance=GUIDED),
    lambda: zj.esam(guidance=GUIDED),
    lambda: zj.adaptive_zo_sam(guidance="gradient"),
  ],
)
def test_bad_guidance_is_refused_naming_the_argument(build):
  with pytest.raises(ValueError, match="guidance"):
    build()
