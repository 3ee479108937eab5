"""Small shared pieces for the tests of the heads."""

import jax
import optax


def train(tx, params, loss_fn, steps, state=None):
  """``steps`` jitted steps ``tx.update(None, state, params, loss_fn=loss_fn)`` + apply.

  Returns ``(params, state, step)``; ``step`` is the jitted step (for ``step._cache_size()``).
  """
  state = tx.init(params) if state is None else state

  @jax.jit
  def step(p, s):
    u, s = tx.update(None, s, p, loss_fn=loss_fn)
    return optax.apply_updates(p, u), s

  for _ in range(steps):
    params, state = step(params, state)
  return params, state, step
