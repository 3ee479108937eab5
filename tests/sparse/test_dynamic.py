"""SET, RigL, MEST and DSR: hand-computed mask updates, exact counts, moment resets."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.sparse._helpers import active_set, mlp_apply, mlp_params, xent
from zosam_jax import sparse

# Shared tiny case: one prunable (2, 3) kernel and a bias. Flat kernel values:
#   idx:    0     1     2     3     4     5
#   w:    0.1  -0.5   0.3   0.9  -0.2  0.05
# At 50% uniform sparsity a magnitude initial mask keeps {1, 2, 3}.
W0 = jnp.array([[0.1, -0.5, 0.3], [0.9, -0.2, 0.05]])
PARAMS = {"w": W0, "b": jnp.array([1.0, 2.0, 3.0])}


def _one_update_case(method, grads, lr=0.0, momentum=None, steps=2):
  """Runs `steps` jitted steps with constant gradients; returns params and states per step."""
  tx = method.wrap(optax.sgd(lr, momentum=momentum), PARAMS)
  state = tx.init(PARAMS)
  step = jax.jit(tx.update)
  p, history = PARAMS, []
  for _ in range(steps):
    u, state = step(grads, state, p)
    p = optax.apply_updates(p, u)
    history.append((p, state))
  return history


def _kw(**extra):
  base = dict(
    sparsity=0.5,
    sparsity_distribution="uniform",
    init="magnitude",
    update_every=1,
    end_step=10,
    drop_fraction=0.34,  # round(0.34 * 3) = 1 weight dropped and grown per update
    drop_schedule="constant",
  )
  base.update(extra)
  return base


def test_rigl_hand_case_drop_smallest_grow_largest_gradient():
  # Step 0: no update (first one at start_step + update_every = 1); pruned weights -> 0.
  # Step 1: drop the smallest |w| among {1, 2, 3}: index 2 (0.3). Grow the largest |g| among
  # inactive {0, 2, 4, 5}: |g| = [0, 0.5, 2, 3] -> index 5. lr = 0 so kept weights are unchanged.
  g = {"w": jnp.array([[0.0, 1.0, 0.5], [0.0, 2.0, -3.0]]), "b": jnp.zeros(3)}
  (p0, s0), (p1, s1) = _one_update_case(sparse.rigl(**_kw()), g)
  assert active_set(s0.weight_mask["w"]) == {1, 2, 3}
  np.testing.assert_array_equal(p0["w"], np.float32([[0.0, -0.5, 0.3], [0.9, 0.0, 0.0]]))
  assert active_set(s1.weight_mask["w"]) == {1, 3, 5}
  np.testing.assert_array_equal(p1["w"], np.float32([[0.0, -0.5, 0.0], [0.9, 0.0, 0.0]]))
  np.testing.assert_array_equal(p1["b"], PARAMS["b"])


def test_rigl_grown_weights_start_at_zero_with_reset_momentum():
  # SGD lr 0.1, momentum 0.9, constant grads. After step 0 (no update):
  # w1 = -0.5 - 0.1 * 1 = -0.6, w2 = 0.3 - 0.1 * 0.5 = 0.25, w3 = 0.9; so step 1 drops w2
  # (0.25 smallest) and grows w5 (|g| = 3). At step 1 the grown w5 stays exactly 0 and its
  # momentum is reset; at step 2 its trace is just g5 = -3, so w5 = 0 - 0.1 * (-3) = 0.3.
  g = {"w": jnp.array([[0.0, 1.0, 0.5], [0.0, 2.0, -3.0]]), "b": jnp.zeros(3)}
  # end_step=1: step 1 is the only mask update.
  hist = _one_update_case(sparse.rigl(**_kw(end_step=1)), g, lr=0.1, momentum=0.9, steps=3)
  (_, _), (p1, s1), (p2, s2) = hist
  assert active_set(s1.weight_mask["w"]) == {1, 3, 5}
  w1 = np.asarray(p1["w"]).ravel()
  assert w1[5] == 0.0 and w1[2] == 0.0
  trace = np.asarray(s1.inner_state[0].trace["w"]).ravel()
  assert trace[5] == 0.0 and trace[2] == 0.0
  assert trace[1] == pytest.approx(1.0 + 0.9 * 1.0)  # kept weights keep their momentum
  np.testing.assert_allclose(np.asarray(p2["w"]).ravel()[5], 0.3, rtol=1e-6)


def test_rigl_resets_adam_moments():
  g = {"w": jnp.array([[0.0, 1.0, 0.5], [0.0, 2.0, -3.0]]), "b": jnp.zeros(3)}
  method = sparse.rigl(**_kw())
  tx = method.wrap(optax.adam(0.01), PARAMS)
  state = tx.init(PARAMS)
  p = PARAMS
  for _ in range(2):
    u, state = jax.jit(tx.update)(g, state, p)
    p = optax.apply_updates(p, u)
  adam = state.inner_state[0]
  mu, nu = np.asarray(adam.mu["w"]).ravel(), np.asarray(adam.nu["w"]).ravel()
  assert mu[5] == 0.0 and nu[5] == 0.0  # grown
  assert mu[1] != 0.0 and nu[1] != 0.0  # kept
  assert np.asarray(p["w"]).ravel()[5] == 0.0


def test_rigl_computes_gradient_from_loss_fn_when_no_updates():
  # loss = sum(c * w): dense gradient = c, same hand case as above via loss_fn (has_aux too).
  c = jnp.array([[0.0, 1.0, 0.5], [0.0, 2.0, -3.0]])

  def loss_fn(p):
    return jnp.sum(c * p["w"]), {"note": jnp.zeros(())}

  tx = sparse.rigl(**_kw(has_aux=True)).wrap(
    optax.chain(_grad_head(has_aux=True), optax.sgd(0.0)), PARAMS
  )
  state = tx.init(PARAMS)
  p = PARAMS
  for _ in range(2):
    u, state = jax.jit(lambda p, s: tx.update(None, s, p, loss_fn=loss_fn))(p, state)
    p = optax.apply_updates(p, u)
  assert active_set(state.weight_mask["w"]) == {1, 3, 5}


def _grad_head(has_aux=False):
  """Minimal head: replaces updates with grad loss_fn(params) (stands in for zj heads)."""

  def init_fn(params):
    return optax.EmptyState()

  def update_fn(updates, state, params=None, *, loss_fn=None, weight_mask=None, **extra):
    g = jax.grad(loss_fn, has_aux=has_aux)(params)
    return (g[0] if has_aux else g), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def test_set_drops_smallest_and_grows_at_random():
  g = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  tx = sparse.set_(**_kw()).wrap(optax.sgd(0.0), PARAMS)
  step = jax.jit(tx.update)
  grown_seen = set()
  for seed in range(12):  # same compiled step, different growth keys
    state = tx.init(PARAMS)._replace(sparse_rng=jax.random.PRNGKey(100 + seed))
    p = PARAMS
    for _ in range(2):
      u, state = step(g, state, p)
      p = optax.apply_updates(p, u)
    act = active_set(state.weight_mask["w"])
    assert len(act) == 3 and {1, 3} <= act  # 1 and 3 survive: index 2 is the smallest
    new = (act - {1, 3}).pop()
    # A new connection starts at 0; index 2 dropped and regrown keeps its value (lr 0).
    assert np.asarray(p["w"]).ravel()[new] == (0.3 if new == 2 else 0.0)
    grown_seen.add(new)
  # the grown weight is any of the inactive {0, 2, 4, 5} (2 may be regrown): random, not fixed
  assert grown_seen <= {0, 2, 4, 5} and len(grown_seen) >= 3


def test_mest_drops_by_importance_not_magnitude():
  # importance |w| + gamma |g| with gamma = 1 on active {1, 2, 3}: g = [0, 1, 0] there, so
  # scores are [0.5, 1.3, 0.9]: index 1 is dropped (SET/RigL would drop index 2).
  g = {"w": jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]), "b": jnp.zeros(3)}
  (_, _), (p1, s1) = _one_update_case(sparse.mest(**_kw(gamma=1.0)), g)
  act = active_set(s1.weight_mask["w"])
  assert len(act) == 3 and {2, 3} <= act
  grown = (act - {2, 3}).pop()
  w1 = np.asarray(p1["w"]).ravel()
  assert w1[grown] == 0.0 and w1[2] == pytest.approx(0.3) and w1[3] == pytest.approx(0.9)


def test_mest_soft_memory_bound_counts():
  # Updates at steps 1, 2, 3 (= end_step). Step 1 grows round(0.34 * 3) = 1 extra (4 active);
  # step 2 prunes back to 3 by importance and grows 1 (4); step 3 prunes to 3, grows nothing.
  g = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  hist = _one_update_case(sparse.mest(**_kw(end_step=3, soft_memory_bound=True)), g, steps=6)
  counts = [int(s.weight_mask["w"].sum()) for _, s in hist]
  assert counts == [3, 4, 4, 3, 3, 3]
  # with end_step off the update grid the final prune still happens at end_step
  hist = _one_update_case(
    sparse.mest(**_kw(end_step=4, update_every=3, soft_memory_bound=True)), g, steps=6
  )
  assert [int(s.weight_mask["w"].sum()) for _, s in hist] == [3, 3, 3, 4, 3, 3]


def test_dsr_threshold_and_proportional_reallocation():
  # Two (1, 4) kernels at 25% uniform sparsity, magnitude init:
  #   a = [0.05, 0.5, 0.06, 0.7] keeps {1, 2, 3};  c = [0.3, 0.4, 0.02, 0.8] keeps {0, 1, 3}.
  # Threshold H = 0.1 prunes a[2] (0.06): K = 1. Surviving: a 2, c 3 -> shares 0.4, 0.6;
  # floors 0, 0; the remainder goes to the largest fraction (c), whose only free slot is 2.
  # Target prune count N_p = round(0.5 * 6) = 3; K = 1 < 0.9 * 3 so H doubles to 0.2.
  params = {"a": jnp.array([[0.05, 0.5, 0.06, 0.7]]), "c": jnp.array([[0.3, 0.4, 0.02, 0.8]])}
  method = sparse.dsr(
    sparsity=0.25,
    sparsity_distribution="uniform",
    init="magnitude",
    update_every=1,
    end_step=10,
    drop_fraction=0.5,
    threshold_init=0.1,
  )
  tx = method.wrap(optax.sgd(0.0), params)
  state = tx.init(params)
  g = jax.tree.map(jnp.zeros_like, params)
  p = params
  for _ in range(2):
    u, state = jax.jit(tx.update)(g, state, p)
    p = optax.apply_updates(p, u)
  assert active_set(state.weight_mask["a"]) == {1, 3}
  assert active_set(state.weight_mask["c"]) == {0, 1, 2, 3}
  assert float(state.method_state) == pytest.approx(0.2)
  np.testing.assert_array_equal(p["c"], np.float32([[0.3, 0.4, 0.0, 0.8]]))


# ----------------------------------------------------------------------------- properties

_X = jax.random.normal(jax.random.PRNGKey(10), (16, 12))
_Y = jnp.arange(16) % 5
_BIG = mlp_params(jax.random.PRNGKey(11), sizes=(12, 40, 30, 5))


def _loss(p):
  return xent(mlp_apply(p, _X), _Y)


def _make_step(tx):
  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(_loss)(p), s, p)
    p = optax.apply_updates(p, u)
    m_leaves = jax.tree.leaves(s.weight_mask)
    counts = jnp.stack([jnp.count_nonzero(m) for m in m_leaves])
    stray = sum(
      jnp.count_nonzero(jnp.where(m, 0.0, x))
      for m, x in zip(m_leaves, jax.tree.leaves(p), strict=True)
    )
    # a signature of the mask, to see that it changes
    sig = sum(jnp.sum(jnp.where(m.ravel(), jnp.arange(m.size), 0)) for m in m_leaves)
    return p, s, counts, stray, sig

  return step


def _run_steps(tx, state, step=None, steps=24):
  """Trains `steps` jitted steps; per step: mask counts, nonzeros outside the mask, signature."""
  step = step or _make_step(tx)
  p, s = _BIG, state
  out = []
  for _ in range(steps):
    p, s, c, n, sig = step(p, s)
    out.append((np.asarray(c), int(n), int(sig)))
  counts, stray, sigs = zip(*out, strict=True)
  return np.stack(counts), np.asarray(stray), len(set(sigs))


def _run_scan(method, steps=24):
  tx = method.wrap(optax.sgd(0.05, momentum=0.9), _BIG)
  return _run_steps(tx, tx.init(_BIG), steps=steps)


# RigL's mask update is count-preserving whatever sparsity/distribution built the initial mask,
# so one compiled step serves every (sparsity, distribution): only the initial mask differs.
_RIGL_KW = dict(update_every=2, end_step=20, drop_fraction=0.5)
_RIGL_TX = sparse.rigl(sparsity=0.5, sparsity_distribution="uniform", **_RIGL_KW).wrap(
  optax.sgd(0.05, momentum=0.9), _BIG
)
_RIGL_STEP = _make_step(_RIGL_TX)


def _expected(method):
  flags = method.prunable_flags(_BIG)
  return flags, method.target_counts(_BIG)


@pytest.mark.parametrize("distribution", ["uniform", "erk", "global"])
@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_rigl_exact_counts_and_zero_pruned_every_step(distribution, sparsity):
  method = sparse.rigl(sparsity=sparsity, sparsity_distribution=distribution, **_RIGL_KW)
  state = _RIGL_TX.init(_BIG)._replace(weight_mask=method.initial_mask(_BIG, jax.random.PRNGKey(3)))
  counts, stray, n_masks = _run_steps(_RIGL_TX, state, step=_RIGL_STEP)
  assert (stray == 0).all()
  flags, target = _expected(method)
  pr = np.asarray(flags)
  sizes = np.array([int(np.prod(np.shape(x))) for x in jax.tree.leaves(_BIG)])
  assert (counts[:, ~pr] == sizes[~pr]).all()  # non-prunable leaves stay dense
  if distribution == "global":
    assert (counts[:, pr].sum(axis=1) == target).all()
    assert target == round((1 - sparsity) * sizes[pr].sum())
  else:
    assert (counts[:, pr] == np.asarray(target)).all()
  assert n_masks > 1  # the mask did change over the run


@pytest.mark.parametrize("name", ["set", "mest", "dsr"])
def test_other_dynamic_methods_exact_counts(name):
  method = sparse.get_method(
    name,
    sparsity=0.9,
    sparsity_distribution="erk",
    update_every=2,
    end_step=20,
    drop_fraction=0.5,
    **({"threshold_init": 0.05} if name == "dsr" else {}),
  )
  counts, stray, n_masks = _run_scan(method)
  assert (stray == 0).all() and n_masks > 1
  flags, target = _expected(method)
  pr = np.asarray(flags)
  if name == "dsr":  # DSR moves weights between leaves; the total is exact
    assert (counts[:, pr].sum(axis=1) == sum(target)).all()
    assert len({tuple(c) for c in counts[:, pr]}) > 1
  else:
    assert (counts[:, pr] == np.asarray(target)).all()


def test_mask_update_runs_inside_jit_without_retrace():
  # SET grows at random, so every update changes the mask (RigL may regrow what it dropped).
  method = sparse.set_(sparsity=0.8, sparsity_distribution="uniform", update_every=2, end_step=8)
  tx = method.wrap(optax.sgd(0.1), _BIG)
  traces = []

  @jax.jit
  def step(p, s):
    traces.append(1)
    u, s = tx.update(jax.grad(_loss)(p), s, p)
    return optax.apply_updates(p, u), s

  p, s = _BIG, tx.init(_BIG)
  masks = []
  for _ in range(9):
    p, s = step(p, s)
    masks.append(np.concatenate([np.ravel(m) for m in jax.tree.leaves(s.weight_mask)]))
  assert len(traces) == 1
  changed = [i for i in range(1, 9) if (masks[i] != masks[i - 1]).any()]
  assert changed == [2, 4, 6, 8]  # updates at steps 2, 4, 6, 8 (= end_step) only


def test_rigl_weight_dropped_and_regrown_keeps_value_and_momentum():
  # As the RigL reference: only weights inactive BEFORE an update are new connections.
  # SGD lr 0.1, momentum 0.9, constant g = [0, 1, 5, 0, 2, -3]. Step 0 (no update):
  # w1 = -0.5 - 0.1 = -0.6, w2 = 0.3 - 0.5 = -0.2, w3 = 0.9; traces g. Step 1 drops w2
  # (|-0.2| smallest of {1, 2, 3}) and grows the largest |g| of the inactive {0, 2, 4, 5}:
  # |g| = [0, 5, 2, 3], w2 again. So w2 is active before and after: it keeps its trace,
  # 5 + 0.9 * 5 = 9.5, and its value moves by the step, -0.2 - 0.1 * 9.5 = -1.15.
  g = {"w": jnp.array([[0.0, 1.0, 5.0], [0.0, 2.0, -3.0]]), "b": jnp.zeros(3)}
  (_, _), (p1, s1) = _one_update_case(sparse.rigl(**_kw(end_step=1)), g, lr=0.1, momentum=0.9)
  assert active_set(s1.weight_mask["w"]) == {1, 2, 3}
  w1 = np.asarray(p1["w"]).ravel()
  trace = np.asarray(s1.inner_state[0].trace["w"]).ravel()
  np.testing.assert_allclose(trace[[1, 2, 3]], [1.9, 9.5, 0.0], rtol=1e-6)
  np.testing.assert_allclose(w1[[1, 2, 3]], [-0.5 - 0.1 - 0.19, -1.15, 0.9], rtol=1e-6)


def test_rigl_channel_dropped_and_regrown_keeps_its_weights():
  # pattern="channel": output channels (columns) c0 = (0.1, 0.9), c1 = (-0.5, -0.2),
  # c2 = (0.3, 0.05); mean |w| 0.5, 0.35, 0.175, so 2 of 3 channels keep {c0, c1}. lr 0
  # (weights fixed), momentum 0.9, g = 4 on c1, 1 on c2. Step 1 drops c1 (lowest mean |w| of
  # the kept) and grows the highest mean |g| of {c1, c2}: c1. It keeps its weights and trace
  # (4 + 0.9 * 4 = 7.6).
  g = {"w": jnp.array([[0.0, 4.0, 1.0], [0.0, 4.0, 1.0]]), "b": jnp.zeros(3)}
  method = sparse.rigl(**_kw(end_step=1, sparsity=1 / 3, pattern="channel", drop_fraction=0.5))
  (_, s0), (p1, s1) = _one_update_case(method, g, lr=0.0, momentum=0.9)
  assert active_set(s0.weight_mask["w"]) == active_set(s1.weight_mask["w"]) == {0, 1, 3, 4}
  np.testing.assert_array_equal(p1["w"], np.float32([[0.1, -0.5, 0.0], [0.9, -0.2, 0.0]]))
  np.testing.assert_allclose(s1.inner_state[0].trace["w"][:, 1], [7.6, 7.6], rtol=1e-6)


@pytest.mark.parametrize("pattern", ["unstructured", "channel"])
@pytest.mark.parametrize("name", ["set_", "rigl", "mest", "dsr"])
def test_update_changes_only_weights_it_prunes_or_newly_grows(name, pattern):
  # Derived from the wrapper's rule: the inner step is computed on the mask before the update,
  # so on weights active before and after an update the parameters and momentum equal those of
  # the same run without that update; weights newly active are 0 with zero momentum; pruned
  # weights are 0.
  params = mlp_params(jax.random.PRNGKey(3))
  x = jax.random.normal(jax.random.PRNGKey(4), (16, 6))
  y = jnp.arange(16) % 3

  def loss_fn(p):
    return xent(mlp_apply(p, x), y)

  kw = dict(sparsity=0.5, sparsity_distribution="uniform", pattern=pattern, drop_fraction=0.5)
  runs = []
  for update_every in (2, 100):  # an update at step 2, or none before step 100
    extra = {"threshold_init": 0.3} if name == "dsr" else {}  # DSR: a threshold that prunes.
    method = getattr(sparse, name)(update_every=update_every, end_step=200, seed=1, **kw, **extra)
    tx = method.wrap(optax.sgd(0.1, momentum=0.9), params)
    state, p = tx.init(params), params
    step = jax.jit(lambda p, s, tx=tx: tx.update(jax.grad(loss_fn)(p), s, p, loss_fn=loss_fn))
    for _ in range(3):
      u, state = step(p, state)
      p = optax.apply_updates(p, u)
    runs.append((p, state))
  (p_up, s_up), (p_plain, s_plain) = runs
  old, new = s_plain.weight_mask, s_up.weight_mask
  changed = False
  for o, n, a, b, ta, tb in zip(
    jax.tree.leaves(old),
    jax.tree.leaves(new),
    jax.tree.leaves(p_up),
    jax.tree.leaves(p_plain),
    jax.tree.leaves(s_up.inner_state[0].trace),
    jax.tree.leaves(s_plain.inner_state[0].trace),
    strict=True,
  ):
    o, n, a, b, ta, tb = map(np.asarray, (o, n, a, b, ta, tb))
    np.testing.assert_array_equal(a[o & n], b[o & n])
    np.testing.assert_array_equal(ta[o & n], tb[o & n])
    assert np.all(a[~n] == 0.0) and np.all(a[n & ~o] == 0.0) and np.all(ta[n & ~o] == 0.0)
    changed |= bool(np.any(n != o))
  assert changed  # the update moved the mask
