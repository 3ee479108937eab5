"""ZOSA, the zeroth-order baselines and the synthetic functions.

Query counts are counted for real: the loss is wrapped with ``jax.debug.callback``, which runs once
per evaluation at run time (once per element under ``vmap``), inside a jitted ``lax.scan`` of
several steps.
"""

import dataclasses
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from zosam_jax import synthetic
from zosam_jax import zeroth_order as zo
from zosam_jax._src import trees

D = 6
A = jnp.diag(jnp.arange(1.0, D + 1.0)) + 0.1
B = jnp.linspace(-1.0, 1.0, D)
THETA = {"w": jnp.linspace(0.5, -0.5, D - 2), "v": jnp.array([0.3, -0.2]), "n": jnp.array(3)}


def quadratic(p):
  x = jnp.concatenate([p["w"], p["v"]])
  return 0.5 * x @ A @ x - B @ x


def run_steps(tx, loss_fn, params, steps):
  @jax.jit
  def go(params):
    state = tx.init(params)

    def body(carry, _):
      p, s = carry
      updates, s = tx.update(None, s, p, loss_fn=loss_fn)
      return (optax.apply_updates(p, updates), s), loss_fn(p)

    (params, state), losses = jax.lax.scan(body, (params, state), None, length=steps)
    return params, state, losses

  return go(params)


# ----------------------------------------------------------------------------- query counts


class Counter:
  def __init__(self, loss_fn):
    self.n = 0
    self.loss_fn = loss_fn

  def _tick(self, _):
    self.n += 1

  def __call__(self, p):
    jax.debug.callback(self._tick, p["v"][0])
    return self.loss_fn(p)


M = 5


def zosa_options(**fields):
  """ZOSA's own defaults (8 Rademacher directions, forward differences) with some fields set."""
  return dataclasses.replace(zo.ZOSA_OPTIONS, **fields)


CASES = [
  (
    "zosa forward",
    lambda pbs: zo.zosa(
      0.01, 0.01, zeroth_order=zosa_options(probe_batch_size=pbs), num_directions=M
    ),
    2 * (M + 1),
  ),
  (
    "zosa central",
    lambda pbs: zo.zosa(
      0.01,
      0.01,
      zeroth_order=zosa_options(num_directions=M, scheme="central", probe_batch_size=pbs),
    ),
    4 * M,
  ),
  (
    "zosa no sam",
    lambda pbs: zo.zosa(
      0.01, 0.01, zeroth_order=zosa_options(num_directions=M, probe_batch_size=pbs), sam=False
    ),
    M + 1,
  ),
  (
    "zo_sgd",
    lambda pbs: zo.zo_sgd(0.01, zeroth_order=zosa_options(num_directions=M, probe_batch_size=pbs)),
    M + 1,
  ),
  (
    "zo_sgd central",
    lambda pbs: zo.zo_sgd(
      0.01, zeroth_order=zosa_options(num_directions=M, scheme="central", probe_batch_size=pbs)
    ),
    2 * M,
  ),
  (
    "zo_adam",
    lambda pbs: zo.zo_adam(0.01, zeroth_order=zosa_options(num_directions=M, probe_batch_size=pbs)),
    M + 1,
  ),
  ("mezo", lambda pbs: zo.mezo(0.01, num_directions=M), 2 * M),
]


PBS = {"zosa forward": (1, 2, None), "zo_sgd": (1, None)}
COUNT_CASES = [(c, pbs) for c in CASES for pbs in PBS.get(c[0], (2,))]


@pytest.mark.parametrize(
  "case,probe_batch_size", COUNT_CASES, ids=[f"{c[0]}-pbs{p}" for c, p in COUNT_CASES]
)
def test_each_step_makes_exactly_the_stated_number_of_queries(case, probe_batch_size):
  name, make, per_step = case
  steps = 3
  counter = Counter(quadratic)
  _, state, _ = run_steps(make(probe_batch_size), counter, THETA, steps)
  jax.effects_barrier()
  # run_steps also evaluates loss_fn once per step for its curve: subtract those.
  assert counter.n - steps == steps * per_step
  assert int(zo.zo_state(state).queries) == steps * per_step


def test_queries_per_estimate():
  assert zo.queries_per_estimate(8, "forward") == 9
  assert zo.queries_per_estimate(8, "central") == 16


def test_each_optimizer_keeps_its_default_options():
  assert zo.ZOSA_OPTIONS == zj.ZerothOrderOptions(8, 1e-3, "rademacher", "forward", 1)
  assert zo.MEZO_OPTIONS == zj.ZerothOrderOptions(1, 1e-3, "gaussian", "central", 1)

  def first_step(tx):
    return tx.update(None, tx.init(THETA), THETA, loss_fn=quadratic)

  # The defaults are those options: the same directions with and without them spelled out.
  for make, options in (
    (zo.zosa, zo.ZOSA_OPTIONS),
    (zo.zo_sgd, zo.ZOSA_OPTIONS),
    (zo.zo_adam, zo.ZOSA_OPTIONS),
    (zo.mezo, zo.MEZO_OPTIONS),
  ):
    chex.assert_trees_all_equal(
      first_step(make(0.01, seed=3)), first_step(make(0.01, zeroth_order=options, seed=3))
    )


@pytest.mark.parametrize("scheme, extra", [("forward", 0), ("central", 1)])
def test_state_has_value_and_aux_of_the_loss_at_theta(scheme, extra):
  def with_aux(p):
    return quadratic(p), {"v": p["v"]}

  steps = 3
  counter = Counter(with_aux)
  tx = zo.zosa(0.01, 0.01, zeroth_order=zosa_options(num_directions=M, scheme=scheme), has_aux=True)
  state = tx.init(THETA)
  assert zo.zo_state(state).aux is None
  state = optax.tree_utils.tree_set(state, aux={"v": jnp.zeros(2)})

  @jax.jit
  def go(params, state):
    def body(carry, _):
      p, s = carry
      updates, s = tx.update(None, s, p, loss_fn=counter)
      return (optax.apply_updates(p, updates), s), p

    return jax.lax.scan(body, (params, state), None, length=steps)

  (_, state), seen = go(THETA, state)
  jax.effects_barrier()
  zs = zo.zo_state(state)
  np.testing.assert_allclose(zs.aux["v"], seen["v"][-1], rtol=1e-6)
  if scheme == "forward":
    np.testing.assert_allclose(zs.value, quadratic(jax.tree.map(lambda x: x[-1], seen)), rtol=1e-5)
  # The aux of the forward scheme's L(theta) is free; central pays one counted query for it.
  per_step = 2 * zo.queries_per_estimate(M, scheme) + extra
  assert int(zs.queries) == steps * per_step
  assert counter.n == steps * per_step


# ----------------------------------------------------------------------------- the estimator


@pytest.mark.parametrize("scheme,probe_batch_size", [("forward", 3), ("central", 1)])
def test_probe_gives_rge_and_the_probe_loss_std(scheme, probe_batch_size):
  key, m, mu = jax.random.PRNGKey(3), 7, 1e-2
  options = zosa_options(
    num_directions=m, smoothing=mu, scheme=scheme, probe_batch_size=probe_batch_size
  )
  flat = trees.flatten(THETA)
  pr = zo.probe(quadratic, flat, key, options)
  expected, coefs = zj.rge_with_coefficients(quadratic, THETA, key, zeroth_order=options)
  got = trees.to_params(flat, pr.estimate)
  chex.assert_trees_all_close(got, expected, rtol=1e-5, atol=1e-6)
  # The probe losses, recomputed by hand from the directions rge draws.
  losses = []
  for k in jax.random.split(key, m):
    u = zj.sample_direction(k, THETA, distribution="rademacher")
    shift = lambda s, u=u: jax.tree.map(  # noqa: E731
      lambda p, ui: p + s * ui if p.dtype == jnp.float32 else p, THETA, u
    )
    losses += [quadratic(shift(mu))] + ([quadratic(shift(-mu))] if scheme == "central" else [])
  losses = np.asarray(losses)
  np.testing.assert_allclose(pr.sigma, np.std(losses, ddof=1) / mu, rtol=1e-3)
  if scheme == "forward":
    np.testing.assert_allclose(pr.value, quadratic(THETA), rtol=1e-6)
    np.testing.assert_allclose(pr.sigma, np.std(coefs, ddof=1), rtol=1e-3)
  else:
    np.testing.assert_allclose(pr.value, np.mean(losses), rtol=1e-6)


def test_zosa_step_follows_the_stated_formulas():
  """g at theta, s = std(l_i)/mu, eps = rho g / s, g' and s' at theta + eps, step g'/s'."""
  key = jax.random.PRNGKey(7)
  rho, mu, m = 0.1, 1e-2, 6
  kw = dict(zeroth_order=zosa_options(num_directions=m, smoothing=mu))
  inner_key, outer_key = jax.random.split(key)
  g, c = zj.rge_with_coefficients(quadratic, THETA, inner_key, **kw)
  s = np.std(c, ddof=1)
  pert = jax.tree.map(lambda p, gi: p + rho * gi / s if p.dtype == jnp.float32 else p, THETA, g)
  g2, c2 = zj.rge_with_coefficients(quadratic, pert, outer_key, **kw)
  expected = jax.tree.map(lambda x: x / np.std(c2, ddof=1), g2)
  step = zo.zosa_direction(quadratic, THETA, key, rho=rho, **kw)
  chex.assert_trees_all_close(step.direction, expected, rtol=2e-3, atol=1e-5)
  np.testing.assert_allclose(step.value, quadratic(THETA), rtol=1e-6)
  assert step.queries == 2 * (m + 1)
  assert int(step.direction["n"]) == 0  # integer leaves are never touched
  # sigma_normalize=False: eps = rho g / ||g||.
  gn = np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(g)))
  pert = jax.tree.map(lambda p, gi: p + rho * gi / gn if p.dtype == jnp.float32 else p, THETA, g)
  g2, _ = zj.rge_with_coefficients(quadratic, pert, outer_key, **kw)
  step = zo.zosa_direction(
    quadratic, THETA, key, rho=rho, sigma_normalize=False, adaptive_lr=False, **kw
  )
  chex.assert_trees_all_close(step.direction, g2, rtol=2e-3, atol=1e-5)


@pytest.mark.parametrize("adaptive_lr,scheme", [(True, "forward"), (False, "central")])
def test_without_sam_zosa_is_its_base_zo_optimizer(adaptive_lr, scheme):
  lr, m, mu, seed, steps = 0.05, 4, 1e-3, 11, 5
  options = zosa_options(num_directions=m, smoothing=mu, scheme=scheme)
  zosa = zo.zosa(lr, 0.3, zeroth_order=options, seed=seed, sam=False, adaptive_lr=adaptive_lr)
  base = zo.zo_sgd(lr, zeroth_order=options, seed=seed, sigma_step=adaptive_lr)
  p1, s1, l1 = run_steps(zosa, quadratic, THETA, steps)
  p2, s2, l2 = run_steps(base, quadratic, THETA, steps)
  chex.assert_trees_all_equal(p1, p2)
  np.testing.assert_array_equal(l1, l2)
  # And the first update against an independent computation with zosam_jax.rge.
  step_key = jax.random.split(jax.random.PRNGKey(seed))[1]
  outer_key = jax.random.split(step_key)[1]
  g, c = zj.rge_with_coefficients(quadratic, THETA, outer_key, zeroth_order=options)
  if adaptive_lr:
    sigma = zo.probe(quadratic, trees.flatten(THETA), outer_key, options).sigma
    g = jax.tree.map(lambda x: x / sigma, g)
  updates, _ = zosa.update(None, zosa.init(THETA), THETA, loss_fn=quadratic)
  chex.assert_trees_all_close(updates["w"], -lr * g["w"], rtol=1e-5, atol=1e-7)


def test_flat_loss_gives_zero_update_not_nan():
  for tx in (zo.zosa(0.1), zo.zo_sgd(0.1, sigma_step=True), zo.mezo(0.1, num_directions=3)):
    updates, _ = tx.update(None, tx.init(THETA), THETA, loss_fn=lambda p: jnp.float32(2.0))
    for u in jax.tree.leaves(updates):
      assert np.all(np.asarray(u) == 0)


def test_mezo_estimate_regenerates_its_directions_from_the_key():
  key, m, mu = jax.random.PRNGKey(5), 4, 1e-2
  value, est = zo.spsa_direction(quadratic, THETA, key, num_directions=m, smoothing=mu)
  total = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), THETA)
  losses = []
  for i in range(m):
    z = zj.sample_direction(jax.random.fold_in(key, jnp.uint32(i)), THETA)
    plus = quadratic(jax.tree.map(lambda p, zi: p + mu * zi, THETA, z))
    minus = quadratic(jax.tree.map(lambda p, zi: p - mu * zi, THETA, z))
    losses += [plus, minus]
    c = (plus - minus) / (2 * mu)
    total = jax.tree.map(lambda t, zi, c=c: t + c * zi, total, z)
  chex.assert_trees_all_close(
    {k: est[k] for k in ("w", "v")}, {k: total[k] / m for k in ("w", "v")}, rtol=1e-4, atol=1e-6
  )
  np.testing.assert_allclose(value, np.mean(losses), rtol=1e-6)


def _temp_bytes(tx, params, loss_fn):
  state = tx.init(params)
  fn = jax.jit(lambda s, p: tx.update(None, s, p, loss_fn=loss_fn))
  return fn.lower(state, params).compile().memory_analysis().temp_size_in_bytes


def test_mezo_memory_does_not_grow_with_the_number_of_directions():
  d = 200_000
  params = {"x": jnp.ones([d], jnp.float32)}
  loss = lambda p: jnp.sum(jnp.square(p["x"]))  # noqa: E731
  one, two, many = (_temp_bytes(zo.mezo(0.1, num_directions=m), params, loss) for m in (1, 2, 16))
  # m = 1 vs 16: XLA removes the length-1 loops and with them the loop's own buffers (carry,
  # direction, shifted point): a fixed difference of at most three buffers, far from the 15
  # directions that storing them would add.
  assert many - one < 3.5 * 4 * d, (one, many)
  assert abs(many - two) < 0.01 * 4 * d, (two, many)  # m = 2 vs 16: the same plan
  # The measurement does see m directions held at once when they are (vmapped probes):
  vm1, vm16 = (
    _temp_bytes(
      zo.zo_sgd(0.1, zeroth_order=zosa_options(num_directions=m, probe_batch_size=None)),
      params,
      loss,
    )
    for m in (2, 16)
  )
  assert vm16 - vm1 > 10 * 4 * d, (vm1, vm16)


# ----------------------------------------------------------------------------- synthetic


STATED_F0 = {
  "quadratic": lambda d: float(0.5 * np.sum(100.0 ** np.linspace(0, 1, d))),
  "rosenbrock": lambda d: d - 1.0,
  "rastrigin": lambda d: 26.25 * d,
  "ackley": lambda d: 20 + math.e - 20 * math.exp(-0.5) - math.exp(-1.0),
}


@pytest.mark.parametrize("name", synthetic.NAMES)
def test_synthetic_problems_are_as_documented(name):
  for d in synthetic.DIMENSIONS:
    p = synthetic.make_problem(name, d)
    assert p.x0.shape == (d,) and p.x_opt.shape == (d,) and p.dim == d
    np.testing.assert_allclose(p.fn(p.x_opt), p.f_opt, atol=1e-3)
    np.testing.assert_allclose(p.fn(p.x0), STATED_F0[name](d), rtol=1e-4)
    assert p.domain[0] < 0 < p.domain[1]


# ZOSA (rho=0.05, m=8, mu=1e-3, constant lr, probes vmapped) from the stated start for 100 steps
# (1 800 queries with the forward scheme, 3 200 with the central one): the loss must fall below
# the stated fraction of f(x_0). Rosenbrock uses central differences: at x_0 = 0 the forward
# scheme's curvature bias mu/2 u^T H u = mu/2 tr(H) (about 1e3 at d = 1e4) swamps u^T grad f.
DECREASE = {  # name: (lr, scheme, {d: max f(x_100) / f(x_0)})
  "quadratic": (0.1, "forward", {100: 0.1, 1000: 0.6, 10000: 0.95}),
  "rosenbrock": (3e-4, "central", {100: 0.998, 1000: 0.9995, 10000: 0.9999}),
  "rastrigin": (0.1, "forward", {100: 0.4, 1000: 0.6, 10000: 0.7}),
  "ackley": (0.1, "forward", {100: 0.8, 1000: 0.92, 10000: 0.97}),
}


# The default suite runs the smallest dimension (the same code at every d, only the bounds
# differ); the larger ones run with -m slow.
@pytest.mark.parametrize(
  "d",
  [synthetic.DIMENSIONS[0]]
  + [pytest.param(d, marks=pytest.mark.slow) for d in synthetic.DIMENSIONS[1:]],
)
@pytest.mark.parametrize("name", synthetic.NAMES)
def test_zosa_decreases_every_synthetic_function(name, d):
  p = synthetic.make_problem(name, d)
  lr, scheme, bound = DECREASE[name]
  options = zosa_options(num_directions=8, smoothing=1e-3, scheme=scheme, probe_batch_size=None)
  tx = zo.zosa(lr, 0.05, zeroth_order=options, seed=0)
  loss = lambda x: p.fn(x["x"])  # noqa: E731
  params, state, _ = run_steps(tx, loss, {"x": p.x0}, 100)
  assert int(zo.zo_state(state).queries) == 100 * (18 if scheme == "forward" else 32)
  f0, f1 = float(p.fn(p.x0)), float(p.fn(params["x"]))
  assert f1 < bound[d] * f0, (name, d, f1 / f0)


# ----------------------------------------------------------------------------- bad arguments


BAD = [
  ("learning_rate", lambda: zo.zosa(-1.0)),
  ("learning_rate", lambda: zo.zo_sgd("fast")),
  ("rho", lambda: zo.zosa(0.1, rho=-0.1)),
  ("num_directions", lambda: zo.zosa(0.1, num_directions=0)),
  ("num_directions", lambda: zo.zosa(0.1, num_directions=1)),  # std of 1 probe loss
  ("num_directions", lambda: zo.mezo(0.1, num_directions=2.5)),
  ("num_directions", lambda: zo.zo_sgd(0.1, num_directions=1, sigma_step=True)),
  ("smoothing", lambda: zo.zosa(0.1, smoothing=0.0)),
  ("smoothing", lambda: zo.mezo(0.1, smoothing=-1e-3)),
  ("scheme", lambda: zo.zosa(0.1, zeroth_order=zosa_options(scheme="jvp"))),
  ("scheme", lambda: zo.mezo(0.1, zeroth_order=zj.ZerothOrderOptions(scheme="forward"))),
  ("distribution", lambda: zo.zo_sgd(0.1, zeroth_order=zosa_options(distribution="uniform"))),
  ("probe_batch_size", lambda: zo.zosa(0.1, zeroth_order=zosa_options(probe_batch_size=0))),
  ("zeroth_order", lambda: zo.zosa(0.1, zeroth_order={"num_directions": 8})),
  ("zeroth_order", lambda: zo.mezo(0.1, zeroth_order="central")),
  ("rho", lambda: zo.zosa_direction(quadratic, THETA, jax.random.PRNGKey(0), rho=-1.0)),
  ("has_aux", lambda: zo.zo_adam(0.1, has_aux=1)),
  ("nesterov", lambda: zo.zo_sgd(0.1, nesterov="no")),
  ("sam", lambda: zo.zosa(0.1, sam="yes")),
  ("sigma_normalize", lambda: zo.zosa(0.1, sigma_normalize=1)),
  ("adaptive_lr", lambda: zo.zosa(0.1, adaptive_lr=None)),
  ("momentum", lambda: zo.zo_sgd(0.1, momentum=1.0)),
  ("b2", lambda: zo.zo_adam(0.1, b2=1.5)),
  ("seed", lambda: zo.zosa(0.1, seed=1.5)),
  ("name", lambda: synthetic.make_problem("sphere", 10)),
  ("dim", lambda: synthetic.make_problem("ackley", 1)),
  ("condition_number", lambda: synthetic.make_problem("quadratic", 10, condition_number=0.5)),
]


@pytest.mark.parametrize("arg,make", BAD, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_arguments_raise_value_error_naming_them(arg, make):
  with pytest.raises(ValueError, match=rf"(^|\W){arg}\W.*must"):
    make()


def test_update_without_loss_fn_raises():
  tx = zo.zosa(0.1)
  with pytest.raises(ValueError, match="loss_fn"):
    tx.update(None, tx.init(THETA), THETA)
