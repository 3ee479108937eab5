"""Masks, leaf selection and sparsity distributions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.sparse._helpers import active_set
from zosam_jax import sparse


def test_keep_top_k_is_exact_under_ties():
  scores = jnp.ones((4, 5))  # all tied
  for k in (0, 1, 7, 20):
    assert int(sparse.keep_top_k(scores, k).sum()) == k
  m = sparse.keep_top_k(jnp.array([0.1, 0.9, 0.5, 0.9]), 2)
  assert active_set(m) == {1, 3}


def test_select_lowest_dynamic_count_respects_eligibility_and_ties():
  scores = jnp.array([5.0, 1.0, 1.0, 1.0, 0.0, 3.0])
  eligible = jnp.array([True, True, True, True, False, True])

  @jax.jit
  def f(c):
    return sparse.select_lowest(scores, eligible, c)

  # ties broken by index: the two lowest eligible are 1 and 2; 4 (score 0) is ineligible.
  assert active_set(f(2)) == {1, 2}
  assert active_set(f(4)) == {1, 2, 3, 5}
  assert active_set(f(0)) == set()
  # more than eligible: all eligible, never an ineligible one
  assert active_set(f(10)) == {0, 1, 2, 3, 5}
  assert active_set(sparse.select_highest(scores, eligible, 2)) == {0, 5}


def _stable_sort_reference(scores, eligible, count):
  """The definition: the first ``count`` eligible entries of a stable ascending sort (numpy),
  NaN ranked last among eligible entries, -0.0 equal to 0.0."""
  s = np.where(np.isnan(scores), np.inf, scores).astype(np.float64)
  s = np.where(eligible, s, np.inf)
  order = [i for i in np.argsort(s, kind="stable") if eligible[i]]
  out = np.zeros(scores.shape, bool)
  out[order[: max(count, 0)]] = True
  return out


def test_select_lowest_equals_a_stable_sort_on_hard_inputs():
  # Ties, signed zeros, infinities, NaN, tiny and huge magnitudes, counts out of range. (No
  # subnormals: XLA:CPU compares them as zero, numpy does not.)
  rng = np.random.default_rng(0)
  special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 3.4e38, -3.4e38], np.float32)
  f = jax.jit(sparse.select_lowest)
  for trial in range(60):
    n = (1, 7, 64, 199)[trial % 5 % 4]  # few shapes: few compilations
    scores = [
      rng.normal(size=n),
      rng.integers(-3, 4, size=n),
      rng.choice(special, size=n),
      rng.normal(size=n) * 10.0 ** rng.integers(-36, 37, size=n),
    ][trial % 4].astype(np.float32)
    eligible = rng.random(n) < rng.random()
    count = int(rng.integers(-1, n + 3))
    np.testing.assert_array_equal(
      np.asarray(f(scores, eligible, count)), _stable_sort_reference(scores, eligible, count)
    )


def test_default_prunable_and_first_last():
  params = {
    "a": {"kernel": jnp.zeros((3, 3, 2, 4)), "bias": jnp.zeros(4)},
    "b": {"kernel": jnp.zeros((4, 5)), "scale": jnp.zeros(5)},
    "c": {"kernel": jnp.zeros((5, 2))},
  }
  spec = sparse.prunable_leaves(params)
  assert spec == {
    "a": {"kernel": True, "bias": False},
    "b": {"kernel": True, "scale": False},
    "c": {"kernel": True},
  }
  spec = sparse.prunable_leaves(params, first_layer_dense=True, last_layer_dense=True)
  assert spec["a"]["kernel"] is False and spec["b"]["kernel"] is True
  assert spec["c"]["kernel"] is False
  # callable and bool-pytree forms
  only_b = sparse.prunable_leaves(
    params, lambda p: jax.tree.map_with_path(lambda path, _: "b" in str(path[0]), p)
  )
  assert jax.tree.leaves(only_b) == [False, False, True, True, False]
  assert sparse.leaf_paths(params)[0] == "a/bias"


def test_uniform_and_global_counts():
  shapes = [(10, 10), (4, 5)]
  assert sparse.keep_counts(shapes, 0.9, "uniform") == [10, 2]
  assert sparse.keep_counts(shapes, 0.9, "global") == 12
  assert sparse.keep_counts(shapes, 0.0, "uniform") == [100, 20]


def test_erk_hand_computed_with_dense_capping():
  # Raw ERK densities r = sum(shape)/prod(shape): (2,2) -> 1.0, (10,10) -> 0.2, (20,20) -> 0.1.
  # Sparsity 0.5 over N = 4 + 100 + 400: target 252 kept.
  # Pass 1: eps = 252 / (1*4 + 0.2*100 + 0.1*400) = 3.9375 -> (2,2) would get 3.94 > 1: dense.
  # Pass 2: eps = (252 - 4) / (0.2*100 + 0.1*400) = 4.1333 -> densities 0.8267 and 0.4133.
  shapes = [(2, 2), (10, 10), (20, 20)]
  dens = sparse.erk_densities(shapes, 0.5)
  np.testing.assert_allclose(dens, [1.0, 0.2 * 248 / 60, 0.1 * 248 / 60], rtol=1e-12)
  assert sparse.keep_counts(shapes, 0.5, "erk") == [4, 83, 165]
  # Cascade: at 10% sparsity both small layers become dense one after the other.
  dens = sparse.erk_densities(shapes, 0.1)
  assert dens[0] == 1.0 and dens[1] == 1.0
  np.testing.assert_allclose(dens[2], (0.9 * 504 - 104) / 400)


def test_validate_mask():
  params = {"w": jnp.zeros((2, 3)), "b": jnp.zeros(3)}
  sparse.validate_mask({"w": jnp.ones((2, 3), bool), "b": jnp.ones(3, bool)}, params)
  with pytest.raises(ValueError, match="mask"):
    sparse.validate_mask({"w": jnp.ones((2, 3), bool)}, params)
  with pytest.raises(ValueError, match="mask.*'w'"):
    sparse.validate_mask({"w": jnp.ones((3, 2), bool), "b": jnp.ones(3, bool)}, params)
