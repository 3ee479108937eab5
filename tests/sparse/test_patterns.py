"""Channel and N:M patterns of every sparse method: exact group counts, growth, bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from tests.sparse._helpers import xent
from zosam_jax import sparse

DYNAMIC = ("set", "rigl", "mest", "dsr")
STATIC = ("snip", "grasp", "lth")
# (pattern, keyword arguments): 50% and 75% channel sparsity, 2:4 and 1:4.
PATTERNS = [
  ("channel", dict(pattern="channel", sparsity=0.5)),
  ("channel", dict(pattern="channel", sparsity=0.75)),
  ("n:m", dict(pattern="n:m", n_m=(2, 4))),
  ("n:m", dict(pattern="n:m", n_m=(1, 4))),
]
PATTERN_IDS = ["channel50", "channel75", "2:4", "1:4"]
# Every method with every pattern; the 50% channel and 1:4 cases of the dynamic methods (the
# same code paths as 75% and 2:4, other counts) run with the slow tests, for the suite's time.
SLOW = pytest.mark.slow
DYNAMIC_PATTERNS = [
  pytest.param(*PATTERNS[0], marks=SLOW, id="channel50"),
  pytest.param(*PATTERNS[1], id="channel75"),
  pytest.param(*PATTERNS[2], id="2:4"),
  pytest.param(*PATTERNS[3], marks=SLOW, id="1:4"),
]


def _cnn_params(key):
  """A 3x3 conv (4 -> 8 channels) and a dense head (8 -> 4): both input axes divisible by 4."""
  k1, k2 = jax.random.split(key)
  return {
    "conv": {"kernel": jax.random.normal(k1, (3, 3, 4, 8)) / 6.0, "bias": jnp.zeros(8)},
    "head": {"kernel": jax.random.normal(k2, (8, 4)) / 3.0, "bias": jnp.zeros(4)},
  }


def _cnn_apply(p, x):
  h = jax.lax.conv_general_dilated(
    x, p["conv"]["kernel"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  h = jnp.tanh(h + p["conv"]["bias"]).mean(axis=(1, 2))
  return h @ p["head"]["kernel"] + p["head"]["bias"]


def _data():
  x = jax.random.normal(jax.random.PRNGKey(1), (16, 5, 5, 4))
  y = jnp.arange(16) % 4
  return x, y


def _loss_fn(x, y):
  return lambda p: xent(_cnn_apply(p, x), y)


def _kernels(tree):
  return [tree["conv"]["kernel"], tree["head"]["kernel"]]


def _check_layout(mask, params, kw, *, per_leaf_channels=None, total_channels=None):
  """Channels all-or-nothing with the expected counts, or exactly N per block; pruned == 0."""
  for m, p in zip(_kernels(mask), _kernels(params), strict=True):
    m = np.asarray(m)
    assert np.all(np.asarray(p)[~m] == 0.0)
    if kw["pattern"] == "channel":
      cols = m.reshape(-1, m.shape[-1])
      assert np.array_equal(cols.all(0), cols.any(0)), "a channel is partly kept"
    else:
      n, mm = kw["n_m"]
      moved = np.moveaxis(m, m.ndim - 2, -1)
      blocks = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // mm, mm))
      assert np.all(blocks.sum(-1) == n)
  if kw["pattern"] == "channel":
    kept = [int(np.asarray(m).reshape(-1, m.shape[-1]).all(0).sum()) for m in _kernels(mask)]
    if per_leaf_channels is not None:
      assert kept == per_leaf_channels
    if total_channels is not None:
      assert sum(kept) == total_channels


def _dynamic_sgd(name, params, learning_rate, **kw):
  """Dynamic method ``name`` (uniform layout, constant drop fraction 0.5) around SGD with
  momentum, and its initial state."""
  method = sparse.get_method(
    name, sparsity_distribution="uniform", drop_fraction=0.5, drop_schedule="constant", **kw
  )
  tx = method.wrap(optax.sgd(learning_rate, momentum=0.9), params)
  return tx, tx.init(params)


def _uniform_channels(sparsity):
  return [int(round((1 - sparsity) * 8)), int(round((1 - sparsity) * 4))]


@pytest.mark.parametrize("name", DYNAMIC)
@pytest.mark.parametrize("kind, kw", DYNAMIC_PATTERNS)
def test_dynamic_methods_keep_exact_group_counts_after_every_step(name, kind, kw):
  x, y = _data()
  loss_fn = _loss_fn(x, y)
  params = _cnn_params(jax.random.PRNGKey(0))
  dsr = dict(threshold_init=0.05) if name == "dsr" else {}  # so that DSR prunes early on
  tx, state = _dynamic_sgd(name, params, 0.2, update_every=2, end_step=16, **dsr, **kw)

  @jax.jit
  def step(p, s):
    u, s = tx.update(jax.grad(loss_fn)(p), s, p, loss_fn=loss_fn)
    return optax.apply_updates(p, u), s

  masks = [state.weight_mask]
  for _ in range(20):  # mask updates at steps 2, 4, ..., 16
    params, state = step(params, state)
    masks.append(state.weight_mask)
    if name == "dsr" and kind == "channel":
      # DSR moves channels between leaves; the total is exact.
      _check_layout(
        state.weight_mask, params, kw, total_channels=sum(_uniform_channels(kw["sparsity"]))
      )
    else:
      per_leaf = _uniform_channels(kw["sparsity"]) if kind == "channel" else None
      _check_layout(state.weight_mask, params, kw, per_leaf_channels=per_leaf)
  changed = any(
    not np.array_equal(a["conv"]["kernel"], b["conv"]["kernel"])
    or not np.array_equal(a["head"]["kernel"], b["head"]["kernel"])
    for a, b in zip(masks[1:], masks[2:], strict=False)
  )
  assert changed, "the mask never moved: the test would prove nothing"
  # N:M: the mask holds exactly N per block (checked above), so no block has more than N nonzero
  # weights; the head's weights all get gradient, so its blocks hold exactly N nonzeros (a conv
  # block may hold fewer: a filter that no kept head weight reads gets no gradient).
  if kind == "n:m":
    n, mm = kw["n_m"]
    for p, exact in zip(_kernels(params), (False, True), strict=True):
      moved = np.moveaxis(np.asarray(p), p.ndim - 2, -1)
      nonzero = (moved != 0).reshape(moved.shape[:-1] + (moved.shape[-1] // mm, mm)).sum(-1)
      assert np.all(nonzero == n) if exact else np.all(nonzero <= n)


def test_mest_soft_memory_bound_with_channels_returns_to_the_target():
  x, y = _data()
  loss_fn = _loss_fn(x, y)
  params = _cnn_params(jax.random.PRNGKey(0))
  kw = dict(pattern="channel", sparsity=0.5)
  method = sparse.mest(
    sparsity_distribution="uniform", update_every=2, end_step=9, soft_memory_bound=True, **kw
  )
  tx = method.wrap(optax.sgd(0.1), params)
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss_fn)(p), s, p, loss_fn=loss_fn))
  target = _uniform_channels(0.5)
  for t in range(12):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
    # Between updates each leaf holds the target plus round(alpha(t) n_l) channels; from
    # end_step on exactly the target.
    kept = [
      int(np.asarray(m).reshape(-1, m.shape[-1]).all(0).sum()) for m in _kernels(state.weight_mask)
    ]
    assert all(k >= c for k, c in zip(kept, target, strict=True))
    _check_layout(state.weight_mask, params, kw)
    if t >= 9:
      _check_layout(state.weight_mask, params, kw, per_leaf_channels=target)


def _static_mask(name, params, kw, distribution="uniform"):
  x, y = _data()
  if name == "snip":
    method = sparse.snip(sparsity_distribution=distribution, **kw)
    return method, method.compute_mask(params, loss_fn=_loss_fn(x, y))
  if name == "grasp":
    method = sparse.grasp(sparsity_distribution=distribution, samples_per_class=2, **kw)
    return method, method.compute_mask(params, apply_fn=_cnn_apply, inputs=x, labels=y)
  method = sparse.lth(sparsity_distribution=distribution, rounds=2, **kw)
  trained = jax.tree.map(lambda p: p + 0.01, params)
  mask = method.prune(trained, method.prune(trained, None, round=1), round=2)
  return method, mask


@pytest.mark.parametrize("name", STATIC)
@pytest.mark.parametrize("kind, kw", PATTERNS, ids=PATTERN_IDS)
def test_static_methods_keep_exact_group_counts(name, kind, kw):
  x, y = _data()
  loss_fn = _loss_fn(x, y)
  params = _cnn_params(jax.random.PRNGKey(0))
  method, mask = _static_mask(name, params, kw)
  tx = method.wrap(optax.sgd(0.2), params, mask=mask)
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss_fn)(p), s, p))
  per_leaf = _uniform_channels(kw["sparsity"]) if kind == "channel" else None
  for _ in range(3):
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
    _check_layout(state.weight_mask, params, kw, per_leaf_channels=per_leaf)


@pytest.mark.parametrize("name", ["snip", "lth"])
def test_global_channel_distribution_ranks_all_channels_together(name):
  params = _cnn_params(jax.random.PRNGKey(0))
  kw = dict(pattern="channel", sparsity=0.75)
  _, mask = _static_mask(name, params, kw, distribution="global")
  _check_layout(mask, jax.tree.map(jnp.zeros_like, params), kw, total_channels=round(0.25 * 12))


def test_lth_rounds_pass_through_n_r_of_m_and_nest():
  # 2:4 in R = 2 rounds: N_r = round(M (N/M)^(r/R)): round 1 keeps round(4 * 0.707) = 3 of 4.
  params = _cnn_params(jax.random.PRNGKey(0))
  method = sparse.lth(pattern="n:m", n_m=(2, 4), rounds=2)
  assert method.sparsity == 0.5
  m1 = method.prune(params, None, round=1)
  m2 = method.prune(params, m1, round=2)
  _check_layout(m1, jax.tree.map(jnp.zeros_like, params), dict(pattern="n:m", n_m=(3, 4)))
  _check_layout(m2, jax.tree.map(jnp.zeros_like, params), dict(pattern="n:m", n_m=(2, 4)))
  for a, b in zip(jax.tree.leaves(m1), jax.tree.leaves(m2), strict=True):
    assert not np.any(np.asarray(b) & ~np.asarray(a))  # nested


@pytest.mark.parametrize("kind, kw", [PATTERNS[1], PATTERNS[2]], ids=["channel75", "2:4"])
def test_grown_groups_start_at_zero_with_reset_moments(kind, kw):
  x, y = _data()
  loss_fn = _loss_fn(x, y)
  params = _cnn_params(jax.random.PRNGKey(0))
  tx, state = _dynamic_sgd("rigl", params, 0.1, update_every=3, end_step=3, **kw)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss_fn)(p), s, p, loss_fn=loss_fn))
  for _ in range(3):  # steps 0-2: no mask update, momentum builds up on active weights
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
  before = state.weight_mask
  u, state = step(params, state)  # step 3: the update
  params = optax.apply_updates(params, u)
  grown_any, kept_traces = False, []
  trace = state.inner_state[0].trace
  # Newly active groups restart; groups dropped and regrown keep theirs (test_dynamic.py).
  for old, new, p, tr in zip(
    _kernels(before), _kernels(state.weight_mask), _kernels(params), _kernels(trace), strict=True
  ):
    grown = np.asarray(new) & ~np.asarray(old)
    grown_any |= bool(grown.any())
    assert np.all(np.asarray(p)[grown] == 0.0)
    assert np.all(np.asarray(tr)[grown] == 0.0)
    kept_traces.append(np.asarray(tr)[np.asarray(new) & np.asarray(old)])
  assert grown_any
  assert np.any(np.concatenate(kept_traces) != 0.0)  # kept weights keep their momentum
  _check_layout(
    state.weight_mask,
    params,
    kw,
    per_leaf_channels=_uniform_channels(0.75) if kind == "channel" else None,
  )


@pytest.mark.parametrize(
  "name, kw",
  [
    ("rigl", dict(pattern="channel", sparsity=0.5)),
    ("dsr", dict(pattern="n:m", n_m=(1, 4))),  # DSR keeps per-leaf counts under N:M
  ],
)
def test_zeroth_order_heads_get_the_static_counts_of_the_pattern(name, kw):
  x, y = _data()
  loss_fn = _loss_fn(x, y)
  params = _cnn_params(jax.random.PRNGKey(0))
  method = sparse.get_method(
    name, sparsity_distribution="uniform", update_every=2, end_step=8, **kw
  )
  counts = method.static_mask_counts(params)
  assert counts is not None
  head = zj.zo_sam(0.05, num_directions=2, smoothing=1e-3, seed=0)
  tx = method.wrap(optax.chain(head, optax.sgd(0.1)), params)
  state = tx.init(params)
  step = jax.jit(lambda p, s: tx.update(jax.grad(loss_fn)(p), s, p, loss_fn=loss_fn))
  for _ in range(5):  # mask updates at steps 2 and 4
    u, state = step(params, state)
    params = optax.apply_updates(params, u)
    assert jax.tree.map(lambda m: int(m.sum()), state.weight_mask) == counts


DYN = dict(update_every=2, end_step=10)


def test_bad_patterns_are_refused_naming_the_argument():
  params = _cnn_params(jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match=r"n_m must be .*got \(4, 2\)"):
    sparse.rigl(pattern="n:m", n_m=(4, 2), **DYN)
  with pytest.raises(ValueError, match=r"n_m must be .*got \(2, 'four'\)"):
    sparse.snip(pattern="n:m", n_m=(2, "four"))
  with pytest.raises(ValueError, match="pattern must be one of .*'blocky'"):
    sparse.set_(pattern="blocky", **DYN)
  with pytest.raises(ValueError, match="pattern must be .*'structured'.*'channel'"):
    sparse.lth(pattern="structured")
  with pytest.raises(ValueError, match=r"sparsity must be 1 - N/M = 0.75 .*got 0.9"):
    sparse.rigl(pattern="n:m", n_m=(1, 4), sparsity=0.9, **DYN)
  with pytest.raises(ValueError, match="soft_memory_bound"):
    sparse.mest(pattern="n:m", soft_memory_bound=True, **DYN)
  # M = 8 does not divide the head's input axis (8 does; the conv's 4 does not).
  with pytest.raises(ValueError, match=r"n_m=\(2, 8\) .*prunable leaf 'conv/kernel'"):
    sparse.rigl(pattern="n:m", n_m=(2, 8), **DYN).wrap(optax.sgd(0.1), params)
  # 90% of the head's 4 channels rounds to none kept.
  with pytest.raises(ValueError, match=r"sparsity=0.9 with pattern='channel'.*head/kernel"):
    sparse.rigl(pattern="channel", sparsity=0.9, sparsity_distribution="uniform", **DYN).wrap(
      optax.sgd(0.1), params
    )
  with pytest.raises(ValueError, match=r"sparsity=0.9 with pattern='channel'.*head/kernel"):
    sparse.snip(pattern="channel", sparsity=0.9, sparsity_distribution="uniform").wrap(
      optax.sgd(0.1), params, loss_fn=_loss_fn(*_data())
    )
  # Keeping the head dense makes the same request valid.
  sparse.rigl(
    pattern="channel",
    sparsity=0.9,
    sparsity_distribution="uniform",
    last_layer_dense=True,
    prunable=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p),
    **DYN,
  ).wrap(optax.sgd(0.1), params)
