"""Sparse SAM masks: exact counts, hand-computed Fisher and SSAM-D updates, refresh in jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from tests._helpers import train
from zosam_jax import perturbation_masks as pm

SHAPES = [(3, 3, 8, 16), (16, 8), (8,)]  # conv kernel, dense kernel, bias


def _scores(seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), len(SHAPES))
  return [jax.random.uniform(k, s) for k, s in zip(keys, SHAPES, strict=True)]


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.98])
def test_unstructured_keeps_exactly_k_global_top_scores(sparsity):
  scores = _scores()
  masks = pm.top_k_mask(scores, sparsity=sparsity, pattern="unstructured")
  total = sum(int(np.prod(s)) for s in SHAPES)
  k = int(np.floor((1 - sparsity) * total + 0.5))
  assert sum(int(m.sum()) for m in masks) == k
  flat = np.concatenate([np.asarray(s).ravel() for s in scores])
  kept = np.concatenate([np.asarray(m).ravel() for m in masks])
  assert flat[kept].min() >= flat[~kept].max()


def test_ties_do_not_change_the_count():
  scores = [jnp.ones(s) for s in SHAPES]
  masks = pm.top_k_mask(scores, sparsity=0.75, pattern="unstructured")
  total = sum(int(np.prod(s)) for s in SHAPES)
  assert sum(int(m.sum()) for m in masks) == int(np.floor(0.25 * total + 0.5))


def test_channel_keeps_whole_output_channels():
  scores = _scores(1)
  masks = pm.top_k_mask(scores, sparsity=0.75, pattern="channel")
  for s, m in zip(scores, masks, strict=True):
    m = np.asarray(m)
    channels = s.shape[-1]
    per_channel = m.reshape(-1, channels)
    assert np.all(per_channel.all(0) | ~per_channel.any(0))  # each channel all-or-nothing
    kept = per_channel.all(0)
    assert kept.sum() == int(np.floor(0.25 * channels + 0.5))
    ch_score = np.asarray(s).reshape(-1, channels).sum(0)
    assert ch_score[kept].min() >= ch_score[~kept].max()


@pytest.mark.parametrize("n_m", [(2, 4), (1, 4), (4, 8)])
def test_n_m_keeps_n_in_every_group_of_m_along_the_input_axis(n_m):
  n, m = n_m
  scores = _scores(2)
  masks = pm.top_k_mask(scores, sparsity=0.0, pattern="n:m", n_m=n_m)
  for s, mk in zip(scores, masks, strict=True):
    axis = s.ndim - 2 if s.ndim >= 2 else 0
    moved = np.moveaxis(np.asarray(mk), axis, -1)
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // m, m))
    assert np.all(groups.sum(-1) == n)
    sc = np.moveaxis(np.asarray(s), axis, -1).reshape(groups.shape)
    assert np.all(np.where(groups, sc, np.inf).min(-1) >= np.where(groups, -np.inf, sc).max(-1))


def test_empirical_fisher_matches_hand_computation():
  # Linear regression, per-example loss 1/2 (w.x - y)^2: gradient (w.x - y) x.
  rng = np.random.default_rng(0)
  x, y, w = rng.normal(size=(10, 4)), rng.normal(size=10), rng.normal(size=4)
  expected = np.mean(((x @ w - y)[:, None] * x) ** 2, axis=0)
  fisher = pm.empirical_fisher(
    lambda p, b: 0.5 * (b[0] @ p["w"] - b[1]) ** 2,
    {"w": jnp.asarray(w, jnp.float32)},
    (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
    num_samples=10,
    chunk_size=3,  # 3 full chunks and a remainder of 1
  )
  np.testing.assert_allclose(fisher["w"], expected, rtol=1e-5)
  # ESAM's has_aux convention, (losses, aux), gives the same Fisher; aux is ignored.
  with_aux = pm.empirical_fisher(
    lambda p, b: (0.5 * (b[0] @ p["w"] - b[1]) ** 2, {"n": b[1].shape[0]}),
    {"w": jnp.asarray(w, jnp.float32)},
    (jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)),
    num_samples=10,
    chunk_size=3,
  )
  np.testing.assert_allclose(with_aux["w"], expected, rtol=1e-5)
  with pytest.raises(ValueError, match="num_fisher_samples=11"):
    pm.empirical_fisher(
      lambda p, ex: 0.0, {"w": jnp.zeros(4)}, (jnp.zeros((10, 4)),), num_samples=11
    )


def test_drop_and_regrow_hand_case():
  mask = [jnp.array([True, True, True, False, False, False])]
  grads = [jnp.array([0.5, -0.1, 0.3, 9.0, 9.0, 9.0])]
  new = np.asarray(pm.drop_and_regrow(jax.random.PRNGKey(0), mask, grads, jnp.int32(2))[0])
  # The two flattest kept coordinates (|g| = 0.1 and 0.3) are dropped; index 0 stays.
  assert new[0]
  assert new.sum() == 3
  # Two regrown among the unkept after the drop: {1, 2, 3, 4, 5}.
  assert new[1:].sum() == 2


def test_dynamic_update_drops_the_flattest_channel_and_regrows_whole_channels():
  # Kernel (2, 4): channels {0, 1} kept at 50%. Mean |g| per channel: [2, 0.1, 9, 9]; with f = 0.5,
  # N_drop = floor(0.5 * 2) = 1: channel 1 (flattest kept) goes, one of {1, 2, 3} regrows.
  mask = [jnp.array([[True, True, False, False]] * 2)]
  grads = [jnp.array([[2.0, 0.1, 9.0, 9.0], [-2.0, 0.1, 9.0, 9.0]])]
  for seed in range(4):
    new = np.asarray(
      pm.dynamic_update(
        jax.random.PRNGKey(seed), mask, grads, fraction=0.5, sparsity=0.5, pattern="channel"
      )[0]
    )
    assert (new.all(0) == new.any(0)).all()  # whole channels
    assert new.all(0).sum() == 2 and new[0, 0]


def test_dynamic_update_n_m_refills_every_block_to_n():
  # Kernel (4, 2), blocks of 4 along axis 0 (one per column), 2:4. Kept |g| (col 0: rows 0, 1 =
  # 5, 0.2; col 1: rows 2, 3 = 3, 4). N_drop = floor(0.25 * 4) = 1: (1, 0) goes, column 0 regrows
  # one of rows {1, 2, 3}; column 1 is untouched.
  mask = [jnp.array([[True, False], [True, False], [False, True], [False, True]])]
  grads = [jnp.array([[5.0, 1.0], [0.2, 1.0], [1.0, 3.0], [1.0, -4.0]])]
  for seed in range(4):
    new = np.asarray(
      pm.dynamic_update(
        jax.random.PRNGKey(seed), mask, grads, fraction=0.25, sparsity=0.5, pattern="n:m"
      )[0]
    )
    assert new.sum(0).tolist() == [2, 2] and new[0, 0]
    np.testing.assert_array_equal(new[:, 1], np.asarray(mask[0])[:, 1])


def test_cosine_drop_fraction_schedule():
  f = lambda t: float(pm.cosine_drop_fraction(jnp.int32(t), 0.4, 100))  # noqa: E731
  np.testing.assert_allclose([f(0), f(50), f(100), f(150)], [0.4, 0.2, 0.0, 0.0], atol=1e-7)


@pytest.mark.parametrize("end_step", [7, 100, 293])
def test_cosine_drop_fraction_is_ssams_formula_bit_for_bit(end_step):
  """It is optax's cosine decay; the float32 values are those of eq. 9 written out."""

  def formula(t):
    t = jnp.minimum(t.astype(jnp.float32), float(end_step))
    return 0.5 * 0.3 * (1.0 + jnp.cos(jnp.pi * t / end_step))

  steps = jnp.arange(end_step + 5, dtype=jnp.int32)
  got = jax.jit(lambda t: pm.cosine_drop_fraction(t, 0.3, end_step))(steps)
  np.testing.assert_array_equal(got, jax.jit(formula)(steps))


def _model():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  params = {"kernel": jax.random.normal(k1, (8, 4)), "bias": jnp.zeros(4)}
  x = jax.random.normal(k2, (16, 8))
  y = jax.random.normal(k3, (16, 4))

  def per_example(p, batch):  # (params, batch) -> one loss per example
    return 0.5 * jnp.sum((batch[0] @ p["kernel"] + p["bias"] - batch[1]) ** 2, axis=-1)

  return params, (x, y), per_example


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(mask_method="dynamic", end_step=20),
    dict(mask_method="dynamic", end_step=20, pattern="channel"),
    dict(mask_method="dynamic", end_step=20, pattern="n:m", n_m=(2, 4)),
    dict(mask_method="fisher", num_fisher_samples=8),
    dict(mask_method="random", pattern="channel"),
    dict(mask_method="fisher", pattern="n:m", n_m=(2, 4), num_fisher_samples=8),
  ],
)
def test_sparse_sam_mask_refreshes_in_jit_with_exact_counts(kwargs):
  params, batch, per_example = _model()
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  sparsity = 0.75
  tx = zj.sparse_sam(0.1, sparsity, update_every=2, **kwargs)
  state = tx.init(params)
  step = jax.jit(
    lambda s, p: tx.update(
      None, s, p, loss_fn=loss_fn, per_example_loss_fn=per_example, batch=batch
    )
  )
  masks = []
  for _ in range(5):
    _, state = step(state, params)
    masks.append(state.perturbation_mask)
  assert step._cache_size() == 1  # refreshes never retrace
  pattern = kwargs.get("pattern", "unstructured")
  for mk in masks:
    k, b = np.asarray(mk["kernel"]), np.asarray(mk["bias"])
    if pattern == "unstructured":
      assert k.sum() + b.sum() == int(np.floor(0.25 * 36 + 0.5))
    elif pattern == "channel":
      assert k.all(0).sum() == 1 and (k.any(0) == k.all(0)).all() and b.sum() == 1
    else:
      assert np.all(k.reshape(2, 4, 4).sum(1) == 2) and b.sum() == 2
  # Refresh steps are 0, 2, 4; steps 1 and 3 keep the mask.
  for a, b_ in ((0, 1), (2, 3)):
    assert jax.tree.all(jax.tree.map(np.array_equal, masks[a], masks[b_]))
  if kwargs["mask_method"] == "fisher" and pattern == "unstructured":
    fisher = pm.empirical_fisher(per_example, params, batch, num_samples=8)
    scores = np.concatenate(
      [np.asarray(fisher["bias"]).ravel(), np.asarray(fisher["kernel"]).ravel()]
    )
    kept = np.concatenate(
      [np.asarray(masks[0]["bias"]).ravel(), np.asarray(masks[0]["kernel"]).ravel()]
    )
    assert scores[kept].min() >= scores[~kept].max()


def test_sparse_sam_perturbs_only_masked_coordinates():
  params, batch, per_example = _model()
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  tx = zj.sparse_sam(0.3, 0.5, mask_method="random", update_every=1)
  state = tx.init(params)
  grads, state = tx.update(None, state, params, loss_fn=loss_fn)
  mask = state.perturbation_mask
  g = jax.grad(loss_fn)(params)
  eps = zj.perturbation(params, g, rho=0.3, perturbation_mask=mask)
  expected = jax.grad(loss_fn)(jax.tree.map(jnp.add, params, eps))
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  for e, m in zip(jax.tree.leaves(eps), jax.tree.leaves(mask), strict=True):
    assert np.all(np.asarray(e)[~np.asarray(m)] == 0.0)


def test_sparse_sam_with_zeroth_order_ascent_runs_in_a_chain():
  params, batch, per_example = _model()
  loss_fn = lambda p: jnp.mean(per_example(p, batch))  # noqa: E731
  tx = optax.chain(
    zj.sparse_sam(
      0.05,
      0.5,
      mask_method="dynamic",
      end_step=50,
      update_every=5,
      ascent="zeroth_order",
      zeroth_order=zj.ZerothOrderOptions(num_directions=2, smoothing=1e-3),
    ),
    optax.sgd(0.05),
  )
  start = float(loss_fn(params))
  params, _, _ = train(tx, params, loss_fn, 50)
  assert float(loss_fn(params)) < 0.5 * start
