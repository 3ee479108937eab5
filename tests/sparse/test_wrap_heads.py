"""Sparse wrappers around the SAM-family heads of zosam_jax, under jit."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from tests.sparse._helpers import mlp_apply, mlp_params, xent
from zosam_jax import sparse

_X = jax.random.normal(jax.random.PRNGKey(0), (8, 5))
_Y = jnp.arange(8) % 3
_P = mlp_params(jax.random.PRNGKey(1), sizes=(5, 12, 3))


def _loss(p):
  return xent(mlp_apply(p, _X), _Y)


def _train(tx, steps, loss_fn=_loss):
  @jax.jit
  def step(p, s):
    u, s = tx.update(None, s, p, loss_fn=loss_fn)
    return optax.apply_updates(p, u), s

  p, s = _P, tx.init(_P)
  out = []
  for _ in range(steps):
    p, s = step(p, s)
    out.append((p, s))
  return out


def _stray(p, mask):
  return sum(
    int(jnp.count_nonzero(jnp.where(m, 0.0, x)))
    for m, x in zip(jax.tree.leaves(mask), jax.tree.leaves(p), strict=True)
  )


HEADS = {
  "exact_gradient": lambda: zj.exact_gradient(),
  "sam": lambda: zj.sam(rho=0.05),
  "zo_sam": lambda: zj.zo_sam(rho=0.05, num_directions=2, smoothing=1e-3, seed=0),
  "random_perturbation": lambda: zj.random_perturbation(rho=0.05, seed=0),
  "sparse_sam": lambda: zj.sparse_sam(rho=0.05, sparsity=0.5, mask_method="random"),
}


def _wrap(method, chain):
  kw = dict(sparsity=0.8)
  if method in ("set", "rigl", "mest", "dsr"):
    kw.update(sparsity_distribution="erk", update_every=2, end_step=6)
  if method == "grasp":
    kw.update(samples_per_class=2)
  m = sparse.get_method(method, **kw)
  if method == "snip":
    return m.wrap(chain, _P, loss_fn=_loss)
  if method == "grasp":
    return m.wrap(chain, _P, apply_fn=mlp_apply, inputs=_X, labels=_Y)
  if method == "lth":
    return m.wrap(chain, _P, mask=m.prune(_P, None, round=1))
  return m.wrap(chain, _P)


def _check_head(head, method):
  chain = optax.chain(HEADS[head](), optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
  tx = _wrap(method, chain)
  hist = _train(tx, 7)
  masks = [s.weight_mask for _, s in hist]
  for p, s in hist:
    assert _stray(p, s.weight_mask) == 0
    assert int(sparse.count_active(s.weight_mask)) == int(sparse.count_active(masks[0]))
  # the head's loss (read through tree_get, the core's convention) is finite and the net trains
  value = optax.tree_utils.tree_get(hist[-1][1], "value")
  assert np.isfinite(float(value))
  assert float(_loss(hist[-1][0])) < float(_loss(_P))


@pytest.mark.parametrize(
  "head,method",
  [
    ("exact_gradient", "rigl"),
    ("sam", "rigl"),
    ("zo_sam", "rigl"),
    ("random_perturbation", "rigl"),
    ("sparse_sam", "rigl"),
    ("zo_sam", "snip"),
    ("sam", "dsr"),
  ],
)
def test_wrapping_sam_family_chains_under_jit(head, method):
  _check_head(head, method)


@pytest.mark.slow
@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("method", sparse.method_names())
def test_every_method_with_every_head(head, method):
  _check_head(head, method)


def test_head_receives_the_current_mask_and_masked_params():
  # A spy head stores the weight_mask and params it is given in its own state.
  def init_fn(params):
    return (sparse.dense_mask(params), params)

  def update_fn(updates, state, params=None, *, loss_fn=None, weight_mask=None, **extra):
    return jax.grad(loss_fn)(params), (weight_mask, params)

  spy = optax.GradientTransformationExtraArgs(init_fn, update_fn)
  tx = sparse.rigl(sparsity=0.8, sparsity_distribution="uniform", update_every=1, end_step=3).wrap(
    optax.chain(spy, optax.sgd(0.1)), _P
  )
  before = tx.init(_P).weight_mask
  changed = 0
  for _, s in _train(tx, 3):
    seen_mask, seen_params = s.inner_state[0]
    # the head sees the mask the wrapper held BEFORE this step's mask update: the update then
    # grows from the gradient of that same pass
    for a, b in zip(jax.tree.leaves(seen_mask), jax.tree.leaves(before), strict=True):
      np.testing.assert_array_equal(a, b)
    # the head evaluates at masked params (sparse even on the very first step)
    assert _stray(seen_params, before) == 0
    changed += sum(
      int(jnp.sum(a != b))
      for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(s.weight_mask), strict=True)
    )
    before = s.weight_mask
  assert changed > 0  # the masks did move, so the check above told the two orders apart


def test_has_aux_batchnorm_style_loss_with_rigl_and_sam():
  # loss_fn returns (loss, aux); the state's aux is set once for a jit-stable structure.
  def loss_fn(p):
    return _loss(p), {"stat": jnp.mean(p["layer0"]["kernel"])}

  chain = optax.chain(zj.sam(rho=0.05, has_aux=True), optax.sgd(0.1))
  tx = sparse.rigl(
    sparsity=0.7, sparsity_distribution="uniform", update_every=2, end_step=6, has_aux=True
  ).wrap(chain, _P)
  state = optax.tree_utils.tree_set(tx.init(_P), aux={"stat": jnp.zeros(())})

  @jax.jit
  def step(p, s):
    u, s = tx.update(None, s, p, loss_fn=loss_fn)
    return optax.apply_updates(p, u), s

  p = _P
  for _ in range(5):
    p, state = step(p, state)
  assert step._cache_size() == 1
  assert _stray(p, state.weight_mask) == 0
  aux = optax.tree_utils.tree_get(state, "aux")
  assert np.isfinite(float(aux["stat"]))
