"""Sparse SAM's implicit form: the ascent's backward pass computes only the perturbed coordinates.

Reference (the explicit computation of the same maths): the dense gradient ``g`` at ``theta``,
multiplied by the mask, normalised: ``eps = rho (g (.) m) / ||g (.) m||``; the head returns the
dense gradient at ``theta + eps``.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from zosam_jax._src import groups, implicit


class _CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(8, (3, 3))(x))
    x = nn.relu(nn.Conv(8, (3, 3))(x)).mean(axis=(1, 2))
    x = nn.relu(nn.Dense(8)(x))
    return nn.Dense(4)(x)


def _problem():
  model = _CNN()
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 6, 6, 4))
  y = jnp.arange(8) % 4
  params = model.init(jax.random.PRNGKey(0), x)["params"]

  def loss_fn(p):
    return optax.softmax_cross_entropy_with_integer_labels(model.apply({"params": p}, x), y).mean()

  def per_example(p, batch):
    logits = model.apply({"params": p}, batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1])

  return params, loss_fn, per_example, (x, y)


@jax.jit(static_argnums=0)
def _reference(loss_fn, params, mask, rho, weight_mask=None):
  g = jax.grad(loss_fn)(params)
  direction = jax.tree.map(lambda a, m: a * m, g, mask)
  eps = zj.perturbation(params, direction, rho=rho, weight_mask=weight_mask, perturbation_mask=mask)
  return jax.grad(loss_fn)(jax.tree.map(jnp.add, params, eps))


PATTERNS = [
  dict(pattern="channel"),
  dict(pattern="unstructured"),
  dict(pattern="n:m", n_m=(2, 4), perturb_leaves=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)),
]


@pytest.mark.parametrize(
  "method, kw",
  [("random", kw) for kw in PATTERNS]
  + [
    pytest.param("dynamic", PATTERNS[0], marks=pytest.mark.slow),
    pytest.param("fisher", PATTERNS[0], marks=pytest.mark.slow),
  ],
  ids=["channel", "unstructured", "n:m", "dynamic-channel", "fisher-channel"],
)
def test_implicit_form_equals_the_explicit_computation(method, kw):
  params, loss_fn, per_example, batch = _problem()
  rho = 0.2
  extra = {"dynamic": dict(end_step=10), "fisher": dict(num_fisher_samples=4)}.get(method, {})
  head = zj.sparse_sam(rho, 0.5, mask_method=method, update_every=2, form="implicit", **kw, **extra)
  tx = optax.chain(head, optax.sgd(0.1, momentum=0.9))
  state = tx.init(params)
  weight_mask = None
  if kw["pattern"] == "channel" and method == "random":  # as under a sparse-training wrapper
    keys = iter(jax.random.split(jax.random.PRNGKey(7), 16))
    weight_mask = jax.tree.map(lambda x: jax.random.uniform(next(keys), x.shape) < 0.7, params)
  extra_args = dict(loss_fn=loss_fn, weight_mask=weight_mask)
  if method == "fisher":
    extra_args.update(per_example_loss_fn=per_example, batch=batch)
  step = jax.jit(lambda s, p: tx.update(None, s, p, **extra_args))
  if method == "dynamic":  # SSAM-D ranks by the gradient: both forms must pick the same mask
    explicit = zj.sparse_sam(rho, 0.5, mask_method=method, update_every=2, **kw, **extra)
    e_update = jax.jit(lambda s, p: explicit.update(None, s, p, loss_fn=loss_fn))
    _, e_state = e_update(explicit.init(params), params)
  p = params
  for t in range(2):  # a refresh at step 0; step 1 keeps the mask
    updates, new_state = step(state, p)
    mask = new_state[0].perturbation_mask
    if method == "dynamic" and t == 0:
      assert jax.tree.all(jax.tree.map(np.array_equal, mask, e_state.perturbation_mask))
    expected = _reference(loss_fn, p, mask, rho, weight_mask)
    # The chain's update (SGD with momentum, from the same state) from the reference gradient.
    sgd_updates, _ = optax.sgd(0.1, momentum=0.9).update(expected, state[1], p)
    for a, b in zip(jax.tree.leaves(updates), jax.tree.leaves(sgd_updates), strict=True):
      np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)
    state, p = new_state, optax.apply_updates(p, updates)


def _kept_channels(key, leaves):
  kept, masks = [], []
  for i, leaf in enumerate(leaves):
    if leaf.ndim < 2:
      kept.append(None)
      masks.append(jnp.ones(leaf.shape, bool))
      continue
    c = leaf.shape[-1]
    idx = jnp.sort(jax.random.permutation(jax.random.fold_in(key, i), c)[: c // 2])
    kept.append(idx.astype(jnp.int32))
    masks.append(groups.expand_channels(jnp.zeros(c, bool).at[idx].set(True), leaf.shape))
  return kept, masks


def test_kept_channel_gradient_handles_shared_jitted_and_transposed_kernels():
  # w1 is used twice (once inside a jitted function), w2 as the LEFT operand of a matmul (not
  # rewritten: the dense path), and the conv kernel through lax directly.
  k = jax.random.split(jax.random.PRNGKey(0), 5)
  leaves = [
    jax.random.normal(k[0], (3, 3, 2, 4)),  # conv kernel, HWIO
    jax.random.normal(k[1], (4, 6)),  # w1
    jax.random.normal(k[2], (4, 6)),  # w2, the left operand
  ]
  x = jax.random.normal(k[3], (5, 7, 7, 2))

  @jax.jit
  def dense(h, w):
    return jnp.tanh(h @ w)

  def loss(conv, w1, w2):
    h = jax.lax.conv_general_dilated(
      x, conv, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    ).mean(axis=(1, 2))
    h = dense(h, w1) + 0.5 * jnp.sin(h @ w1)
    return jnp.sum(jnp.dot(w2, h.T) ** 2)

  kept, masks = _kept_channels(jax.random.PRNGKey(3), leaves)
  got = jax.jit(lambda *ls: implicit.kept_channel_grad(loss, ls, kept))(*leaves)
  dense_grads = jax.grad(loss, argnums=(0, 1, 2))(*leaves)
  for a, b, m in zip(got, dense_grads, masks, strict=True):
    np.testing.assert_allclose(a * m, b * m, rtol=1e-5, atol=1e-6)


def test_kept_channel_gradient_costs_fewer_flops_than_the_dense_one():
  # Measured, not assumed: XLA's cost analysis of the two compiled gradients (50% channels).
  params, loss_fn, _, _ = _problem()
  leaves, treedef = jax.tree.flatten(params)
  kept, masks = _kept_channels(jax.random.PRNGKey(3), leaves)

  def f(*ls):
    return loss_fn(jax.tree.unflatten(treedef, ls))

  def cost(fn, *args):
    analysis = jax.jit(fn).lower(*args).compile().cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    return None if not analysis else analysis.get("flops")

  sliced = cost(lambda ls, kp: implicit.kept_channel_grad(f, ls, kp), leaves, kept)
  full = cost(lambda ls: jax.grad(f, argnums=tuple(range(len(ls))))(*ls), leaves)
  if sliced is None or full is None:
    pytest.skip("this backend reports no flop count")
  assert sliced < 0.95 * full


def test_bad_form_is_refused():
  with pytest.raises(ValueError, match="form must be one of .*'sideways'"):
    zj.sparse_sam(0.1, form="sideways")
  with pytest.raises(ValueError, match="form='implicit' needs ascent='exact'"):
    zj.sparse_sam(0.1, form="implicit", ascent="zeroth_order")
