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


# ESAM and SSAM-F also need per_example_loss_fn= and batch= (one loss per example).
PER_EXAMPLE_HEADS = ("sparse_sam", "esam")


def every_head(*, has_aux: bool = False, num_fisher_samples: int = 4) -> dict:
  """One small instance of each head of the library (the ones the trainer offers), by name."""
  import zosam_jax as zj

  return {
    "exact_gradient": zj.exact_gradient(has_aux=has_aux),
    "sam": zj.sam(0.05, has_aux=has_aux),
    "zo_sam": zj.zo_sam(0.05, num_directions=2, seed=1, has_aux=has_aux),
    "random_perturbation": zj.random_perturbation(0.05, seed=1, has_aux=has_aux),
    "sparse_sam": zj.sparse_sam(
      0.05, 0.5, num_fisher_samples=num_fisher_samples, seed=1, has_aux=has_aux
    ),
    "looksam": zj.looksam(0.05, 2, has_aux=has_aux),
    "esam": zj.esam(0.05, seed=1, has_aux=has_aux),
    "gsam": zj.gsam(0.05, has_aux=has_aux),
    "adaptive_zo_sam": zj.adaptive_zo_sam(0.05, 4, seed=1, has_aux=has_aux),
  }
