"""Gradient accumulation: the head before ``optax.MultiSteps``.

``optax.chain(head, optax.MultiSteps(rest, k).gradient_transformation())`` called once per
micro-batch gives every micro-batch its own perturbation (as m-sharpness does) and hands the rest
of the chain the mean of the ``k`` perturbed gradients once every ``k`` calls. Expected values are
SAM written out with ``jax.grad`` at ``theta + eps_i``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import zosam_jax as zj

K, LR, RHO, MOMENTUM = 3, 0.1, 0.05, 0.9


def _problem():
  """A softmax regression and ``K`` micro-batches of 4 examples."""
  keys = jax.random.split(jax.random.key(0), 4)
  params = {"w": jax.random.normal(keys[0], (5, 3)) * 0.3, "b": jnp.zeros(3)}
  x = jax.random.normal(keys[1], (2 * K, 4, 5))  # two steps of K micro-batches
  y = jax.random.randint(keys[2], (2 * K, 4), 0, 3)

  def loss(p, i):
    logits = x[i] @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y[i]).mean()

  return params, loss


def _sam_gradient(loss, params):
  """``grad L(theta + eps)`` with ``eps = rho g/||g||``, written out."""
  g = jax.grad(loss)(params)
  norm = jnp.sqrt(sum(jnp.sum(v**2) for v in jax.tree.leaves(g)))
  return jax.grad(loss)(jax.tree.map(lambda p, d: p + RHO * d / norm, params, g))


def _mean(trees):
  return jax.tree.map(lambda *v: sum(v) / len(v), *trees)


def _close(a, b):
  jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=1e-7), a, b)


def test_k_micro_batch_steps_apply_the_mean_of_k_sam_gradients_once():
  params, loss = _problem()
  tx = optax.chain(
    zj.sam(RHO), optax.MultiSteps(optax.sgd(LR, momentum=MOMENTUM), K).gradient_transformation()
  )
  state = tx.init(params)
  step = jax.jit(lambda p, s, i: tx.update(None, s, p, loss_fn=lambda q: loss(q, i)))

  theta, history = params, [params]
  for i in range(2 * K):
    updates, state = step(theta, state, jnp.int32(i))
    theta = optax.apply_updates(theta, updates)
    history.append(theta)

  # Between the K-th calls nothing moves; each K-th call applies SGD-momentum to the mean of
  # the K per-micro-batch SAM gradients, each with its own eps_i = rho g_i/||g_i||.
  for i in (1, 2, K + 1, K + 2):
    _close(history[i], history[i - 1])
  g1 = _mean([_sam_gradient(lambda q, i=i: loss(q, i), params) for i in range(K)])
  theta1 = jax.tree.map(lambda p, g: p - LR * g, params, g1)
  _close(history[K], theta1)
  g2 = _mean([_sam_gradient(lambda q, i=i: loss(q, i), theta1) for i in range(K, 2 * K)])
  momentum = jax.tree.map(lambda a, b: a + MOMENTUM * b, g2, g1)
  _close(history[2 * K], jax.tree.map(lambda p, m: p - LR * m, theta1, momentum))


def test_each_micro_batch_gets_its_own_zeroth_order_perturbation():
  params, loss = _problem()
  head = zj.zo_sam(RHO, num_directions=2, seed=3)
  tx = optax.chain(head, optax.MultiSteps(optax.sgd(LR), K).gradient_transformation())
  same_batch = lambda q: loss(q, 0)  # noqa: E731  every micro-batch the same data

  step = jax.jit(lambda p, s: tx.update(None, s, p, loss_fn=same_batch))
  state, theta = tx.init(params), params
  for _ in range(K):
    updates, state = step(theta, state)
    theta = optax.apply_updates(theta, updates)

  # The head alone, called K times at the same theta: its key moves on at every call, so the
  # K gradients differ although the data does not; the accumulated step uses their mean.
  head_step = jax.jit(lambda s: head.update(None, s, params, loss_fn=same_batch))
  head_state, grads = head.init(params), []
  for _ in range(K):
    g, head_state = head_step(head_state)
    grads.append(g)
  assert not np.allclose(grads[0]["w"], grads[1]["w"])
  _close(theta, jax.tree.map(lambda p, g: p - LR * g, params, _mean(grads)))
