"""RigL and MEST grow from the dense gradient the head already computed: one per step.

The wrapper requests the head state's ``gradient`` slot at ``init``; on a mask-update step it
reads the gradient of that step's exact pass instead of running a second forward-backward.
Expected masks are rebuilt from an explicitly computed dense gradient (``jax.grad``,
``zj.sam_gradient``, ``zj.zo_sam_gradient``) and the method's own ``update_mask``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zosam_jax as zj
from tests.sparse._helpers import mlp_apply, mlp_params, xent
from zosam_jax import sparse

_X = jax.random.normal(jax.random.PRNGKey(0), (16, 5))
_Y = jnp.arange(16) % 3
_P = mlp_params(jax.random.PRNGKey(1), sizes=(5, 12, 3))
RHO = 0.5  # large, so that the gradient at theta + eps grows other weights than the one at theta


def _loss(p):
  return xent(mlp_apply(p, _X), _Y)


def _where(mask, tree):
  return jax.tree.map(lambda m, x: jnp.where(m, x, 0.0), mask, tree)


def _method(distribution="uniform", name="rigl"):
  return sparse.get_method(
    name,
    sparsity=0.7,
    sparsity_distribution=distribution,
    update_every=1,  # step 1 is the first mask update
    end_step=5,
    drop_fraction=0.5,
    drop_schedule="constant",
  )


def _steps(tx, n):
  step = jax.jit(lambda p, s: tx.update(None, s, p, loss_fn=_loss))
  p, s = _P, tx.init(_P)
  out = [(p, s)]
  for _ in range(n):
    u, s = step(p, s)
    p = optax.apply_updates(p, u)
    out.append((p, s))
  return out


def _expected_mask(method, params, state, dense):
  """The mask ``method`` grows at ``state.sparse_step`` from the explicit gradient ``dense``."""
  flags = method.prunable_flags(params)
  masked = _where(state.weight_mask, params)
  _, key = jax.random.split(state.sparse_rng)
  res = method.update_mask(
    flags, state.sparse_step, state.weight_mask, masked, dense, key, state.method_state
  )
  return res.weight_mask


def _assert_masks_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _masks_differ(a, b):
  return any(
    bool(jnp.any(x != y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
  )


def _check(head, explicit, distribution="uniform", name="rigl"):
  method = _method(distribution, name)
  tx = method.wrap(optax.chain(head, optax.sgd(0.1, momentum=0.9)), _P)
  (_, _), (p1, s1), (_, s2) = _steps(tx, 2)
  assert int(s1.sparse_step) == 1  # the state before the first mask update
  masked = _where(s1.weight_mask, p1)
  dense = explicit(masked, s1)
  _assert_masks_equal(s2.weight_mask, _expected_mask(method, p1, s1, dense))
  assert _masks_differ(s2.weight_mask, s1.weight_mask)  # the update did grow weights
  return method, p1, s1, s2


def test_rigl_under_sgd_grows_from_the_gradient_at_theta():
  _check(zj.exact_gradient(), lambda masked, s: jax.grad(_loss)(masked))


@pytest.mark.parametrize("name", ["rigl", "mest"])
def test_rigl_and_mest_under_sam_use_the_gradient_at_theta_plus_eps(name):
  def explicit(masked, s):
    return zj.sam_gradient(_loss, masked, rho=RHO, weight_mask=s.weight_mask)[1]

  method, p1, s1, s2 = _check(zj.sam(RHO), explicit, name=name)
  if name == "rigl":
    # ... and not the one at theta: the two grow different weights here, so the test tells
    # which gradient was used.
    at_theta = _expected_mask(method, p1, s1, jax.grad(_loss)(_where(s1.weight_mask, p1)))
    assert _masks_differ(s2.weight_mask, at_theta)


def test_rigl_under_zo_sam_uses_its_gradient_at_theta_plus_eps():
  # "global" passes no static counts, so the pure function draws the head's directions.
  options = zj.ZerothOrderOptions(num_directions=2)

  def explicit(masked, s):
    head_key = optax.tree_utils.tree_get(s, "key")  # the head state's key before step 1
    probe_key = jax.random.split(jax.random.split(head_key)[1])[0]
    return zj.zo_sam_gradient(
      _loss, masked, probe_key, rho=RHO, zeroth_order=options, weight_mask=s.weight_mask
    )[1]

  _check(zj.zo_sam(RHO, zeroth_order=options, seed=3), explicit, distribution="global")


class _BackwardCounter:
  """``loss_fn`` whose backward pass counts how often it is traced (once per compiled pass)."""

  def __init__(self):
    self.count = 0

    @jax.custom_vjp
    def loss(p):
      return _loss(p)

    def fwd(p):
      return jax.vjp(_loss, p)

    def bwd(vjp_fn, g):
      self.count += 1
      return vjp_fn(g)

    loss.defvjp(fwd, bwd)
    self.loss = loss


def _backward_passes(tx):
  counter = _BackwardCounter()
  state = tx.init(_P)
  jax.jit(lambda p, s: tx.update(None, s, p, loss_fn=counter.loss)).lower(_P, state)
  return counter.count


ZO = zj.ZerothOrderOptions(num_directions=2)
HEADS = {
  "exact_gradient": lambda: zj.exact_gradient(),
  "sam": lambda: zj.sam(0.05),
  "zo_sam": lambda: zj.zo_sam(0.05, zeroth_order=ZO),
  "sparse_zo_sam": lambda: zj.sparse_sam(
    0.05, 0.5, mask_method="random", ascent="zeroth_order", zeroth_order=ZO
  ),
  "zo_looksam": lambda: zj.looksam(0.05, 2, ascent="zeroth_order", zeroth_order=ZO),
  "adaptive_zo_sam": lambda: zj.adaptive_zo_sam(0.05, 4, zeroth_order=ZO),
  "looksam": lambda: zj.looksam(0.05, 2),
  "gsam": lambda: zj.gsam(0.05),
}


@pytest.mark.parametrize("head", list(HEADS))
def test_a_rigl_step_adds_no_backward_pass_to_the_head(head):
  chain = lambda: optax.chain(HEADS[head](), optax.sgd(0.1))  # noqa: E731
  own = _backward_passes(chain())
  assert own >= 1
  assert _backward_passes(_method().wrap(chain(), _P)) == own


def test_a_fully_zeroth_order_head_makes_the_wrapper_compute_the_gradient():
  # zo_sgd keeps no exact gradient, so the wrapper falls back to its own jax.grad (in the cond).
  chain = optax.chain(zj.zeroth_order.scale_by_zo_gradient(zeroth_order=ZO), optax.sgd(0.1))
  assert _backward_passes(chain) == 0
  assert _backward_passes(_method().wrap(chain, _P)) == 1


def test_the_gradient_slot_is_requested_only_by_methods_that_grow_from_gradients():
  def slot(tx):
    return optax.tree_utils.tree_get(tx.init(_P), "gradient")

  chain = lambda: optax.chain(zj.zo_sam(0.05), optax.sgd(0.1))  # noqa: E731
  assert slot(chain()) is None  # dense: no copy of the gradient in the state
  assert slot(_method(name="set").wrap(chain(), _P)) is None
  assert slot(sparse.get_method("snip", sparsity=0.7).wrap(chain(), _P, loss_fn=_loss)) is None
  for name in ("rigl", "mest"):
    kept = slot(_method(name=name).wrap(chain(), _P))
    assert jax.tree.structure(kept) == jax.tree.structure(_P)


def test_the_slot_holds_the_dense_unmasked_gradient_and_never_retraces():
  # The head's gradient has entries on pruned weights (the growth needs them); the wrapper's
  # output is masked afterwards, not the gradient. (Read between mask updates: an update resets
  # every parameter-shaped part of the inner state, this slot too, outside the kept set.)
  method = sparse.rigl(sparsity=0.7, sparsity_distribution="uniform", update_every=10, end_step=20)
  tx = method.wrap(optax.chain(zj.exact_gradient(), optax.sgd(0.1)), _P)
  traces = []

  @jax.jit
  def step(p, s):
    traces.append(1)
    u, s = tx.update(None, s, p, loss_fn=_loss)
    return optax.apply_updates(p, u), s

  p, s = _P, tx.init(_P)
  for _ in range(3):
    before = s
    p_before = p
    p, s = step(p, s)
  assert len(traces) == 1
  kept = optax.tree_utils.tree_get(s, "gradient")
  expected = jax.grad(_loss)(_where(before.weight_mask, p_before))
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  pruned = [
    jnp.where(m, 0.0, g)
    for m, g in zip(jax.tree.leaves(before.weight_mask), jax.tree.leaves(kept), strict=True)
  ]
  assert any(bool(jnp.any(x != 0)) for x in pruned)
