"""Bad input raises ValueError naming the argument."""

import jax.numpy as jnp
import optax
import pytest

from zosam_jax import sparse

PARAMS = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.zeros(3)}}
DYN = dict(update_every=10, end_step=100)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan")])
@pytest.mark.parametrize("name", sparse.method_names())
def test_sparsity_outside_unit_interval(name, bad):
  kw = DYN if name in ("set", "rigl", "mest", "dsr") else {}
  with pytest.raises(ValueError, match="sparsity.*\\[0, 1\\)"):
    sparse.get_method(name, sparsity=bad, **kw)


@pytest.mark.parametrize("name", ["set", "rigl", "mest", "dsr"])
def test_schedule_arguments(name):
  with pytest.raises(ValueError, match="update_every"):
    sparse.get_method(name, update_every=0, end_step=100)
  with pytest.raises(ValueError, match="end_step"):
    sparse.get_method(name, update_every=10, start_step=50, end_step=50)
  with pytest.raises(ValueError, match="end_step.*required"):
    sparse.get_method(name, update_every=10)
  for bad in (0.0, 1.0, -0.2):
    with pytest.raises(ValueError, match="drop_fraction.*\\(0, 1\\)"):
      sparse.get_method(name, drop_fraction=bad, **DYN)
  with pytest.raises(ValueError, match="drop_schedule.*cosine"):
    sparse.get_method(name, drop_schedule="exp", **DYN)
  with pytest.raises(ValueError, match="sparsity_distribution must be one of .*erk.*'random'"):
    sparse.get_method(name, sparsity_distribution="random", **DYN)
  with pytest.raises(TypeError, match="distribution"):  # the old name is gone, not ignored
    sparse.get_method(name, distribution="erk", **DYN)
  with pytest.raises(ValueError, match="init"):
    sparse.get_method(name, init="zeros", **DYN)


def test_erk_without_prunable_leaf():
  only_biases = {"b1": jnp.zeros(3), "b2": jnp.zeros(4)}
  with pytest.raises(ValueError, match="erk.*prunable"):
    sparse.rigl(sparsity_distribution="erk", **DYN).wrap(optax.sgd(0.1), only_biases)
  with pytest.raises(ValueError, match="erk.*prunable"):
    sparse.erk_densities([], 0.5)


@pytest.mark.parametrize("name", sparse.method_names())
def test_no_prunable_leaf_is_an_error_not_dense_training(name):
  only_biases = {"b1": jnp.zeros(3), "b2": jnp.zeros(4)}
  kw = DYN if name in ("set", "rigl", "mest", "dsr") else {}
  method = sparse.get_method(name, sparsity_distribution="uniform", **kw)
  with pytest.raises(ValueError, match="no prunable leaf"):
    method.wrap(optax.sgd(0.1), only_biases, mask=sparse.dense_mask(only_biases)) if name in (
      "lth",
      "snip",
      "grasp",
    ) else method.wrap(optax.sgd(0.1), only_biases)


def test_mask_tree_mismatch():
  bad_structure = {"dense": {"kernel": jnp.ones((4, 3), bool)}}
  bad_shape = {"dense": {"kernel": jnp.ones((3, 4), bool), "bias": jnp.ones(3, bool)}}
  for bad, match in (
    (bad_structure, "mask must have the same tree structure as params"),
    (bad_shape, r"mask leaf \['dense'\]\['kernel'\] must have the parameter's shape \(4, 3\)"),
  ):
    with pytest.raises(ValueError, match=match):
      sparse.lth(sparsity=0.5).wrap(optax.sgd(0.1), PARAMS, mask=bad)
    with pytest.raises(ValueError, match=match):
      sparse.lth(sparsity=0.5).prune(PARAMS, bad, round=1)


def test_prunable_spec_mismatch_and_registry():
  with pytest.raises(ValueError, match="prunable"):
    sparse.rigl(prunable={"kernel": True}, **DYN).wrap(optax.sgd(0.1), PARAMS)
  with pytest.raises(ValueError, match="name.*rigl"):
    sparse.get_method("rigs")
  with pytest.raises(ValueError, match="rounds"):
    sparse.lth(rounds=0)
  with pytest.raises(ValueError, match="temperature"):
    sparse.grasp(temperature=0.0)
  with pytest.raises(ValueError, match="threshold_init"):
    sparse.dsr(threshold_init=0.0, **DYN)


def test_dynamic_method_needs_gradient_source():
  tx = sparse.rigl(sparsity=0.5, sparsity_distribution="uniform", **DYN).wrap(
    optax.sgd(0.1), PARAMS
  )
  state = tx.init(PARAMS)
  with pytest.raises(ValueError, match="loss_fn"):
    tx.update(None, state, PARAMS)
  with pytest.raises(ValueError, match="params"):
    tx.update(PARAMS, state)
