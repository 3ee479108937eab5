"""The trainer's Sparse SAM head: mask patterns, the implicit form, and unperturbed layers."""

from __future__ import annotations

import jax
import numpy as np
import optax
import pytest

import zosam_jax as zj
from experiments import models, optimizers, train
from tests.experiments.conftest import tiny_config
from zosam_jax import sparse


def _cnn_param_shapes():
  model = models.create_model("cnn", 10)
  dummy = jax.numpy.zeros((1, 28, 28, 1))
  return jax.eval_shape(lambda k: model.init(k, dummy, train=False), jax.random.key(0))["params"]


def test_config_fields_reach_the_library(monkeypatch):
  """pattern, n_m (a list after a JSON round trip), form and the perturbed leaves are passed."""
  seen, library = {}, zj.sparse_sam

  def spy(*args, **kwargs):
    seen.update(kwargs)
    return library(*args, **kwargs)

  monkeypatch.setattr(optimizers.zj, "sparse_sam", spy)
  config = tiny_config("", "", optimizer__name="sparse_sam")
  ssam = config.optimizer.sparse_sam
  ssam.pattern, ssam.n_m, ssam.form, ssam.unperturbed_layers = "n:m", [1, 4], "implicit", "conv0"
  optimizers.create_optimizer(config, steps_per_epoch=8)
  assert (seen["pattern"], seen["n_m"], seen["form"]) == ("n:m", (1, 4), "implicit")
  params = _cnn_param_shapes()
  flags = jax.tree.leaves(seen["perturb_leaves"](params))
  chosen = dict(zip(sparse.leaf_paths(params), flags, strict=True))
  # n:m: kernels only (no input axis elsewhere), the named stem left out.
  assert sorted(p for p, on in chosen.items() if on) == [
    "conv1/kernel",
    "fc0/kernel",
    "head/kernel",
  ]

  # The defaults are the library's, and perturb every leaf as before these fields existed.
  seen.clear()
  optimizers.create_optimizer(tiny_config("", "", optimizer__name="sparse_sam"), 8)
  assert (seen["pattern"], seen["n_m"], seen["form"]) == ("unstructured", (2, 4), "explicit")
  assert seen["perturb_leaves"] is None


def _run(tmp_path, data_dir, source_dir, name, hook=None, **ssam):
  config = tiny_config(
    data_dir,
    source_dir,
    optimizer__name="sparse_sam",
    optimizer__sparse_sam__update_every=2,
    dataset__train_subset=256,  # 4 steps
  )
  config.optimizer.sparse_sam.update(ssam)
  return train.train_run(config, str(tmp_path / name), state_hook=hook)


@pytest.mark.slow  # two trainer runs (about 40 s of CPU)
def test_implicit_form_matches_explicit_with_a_full_channel_mask(
  tmp_path, data_dir, fmnist_subset_dir
):
  """With sparsity 0 every channel is kept, so g (.) m = g and the two forms are the same formula
  (eps = rho g/||g||); the implicit run still takes its kept-channel backward pass (a custom VJP
  through the traced model, BatchNorm statistics as aux). Below 100% kept channels they differ by
  design: the implicit perturbation has norm rho, the explicit one rho ||g (.) m||/||g||."""
  common = dict(pattern="channel", sparsity=0.0, mask_method="random")
  explicit = _run(tmp_path, data_dir, fmnist_subset_dir, "e", form="explicit", **common)
  implicit = _run(tmp_path, data_dir, fmnist_subset_dir, "i", form="implicit", **common)
  for a, b in zip(
    jax.tree.leaves(explicit["params"]), jax.tree.leaves(implicit["params"]), strict=True
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
  assert implicit["test_loss"] == pytest.approx(explicit["test_loss"], rel=1e-4)


@pytest.mark.slow  # a trainer run (about 15 s of CPU)
def test_n_m_masks_keep_exactly_n_of_every_m(tmp_path, data_dir, fmnist_subset_dir):
  """SSAM-D with 1:4, refreshed at steps 0 and 2: after every step each block of 4 consecutive
  weights along a perturbed kernel's input axis holds exactly one perturbed weight; the stem and
  every non-kernel leaf are never perturbed; the refresh moves the mask."""
  masks = {}

  def hook(step, state):
    if step:
      mask = optax.tree_utils.tree_get(state["opt_state"], "perturbation_mask")
      masks[step] = jax.device_get(mask)  # before the next step donates the state

  _run(
    tmp_path,
    data_dir,
    fmnist_subset_dir,
    "w",
    hook,
    pattern="n:m",
    n_m=(1, 4),
    mask_method="dynamic",
    unperturbed_layers="conv0",
  )
  assert sorted(masks) == [1, 2, 3, 4]
  for mask in masks.values():
    for name, leaf in mask.items():
      for kind, m in leaf.items():
        m = np.asarray(m)
        if name == "conv0" or m.ndim < 2:
          assert not m.any(), (name, kind)
          continue
        blocks = np.moveaxis(m, m.ndim - 2, -1).reshape(-1, 4).sum(-1)
        np.testing.assert_array_equal(blocks, 1, err_msg=name)
  moved = [
    not np.array_equal(masks[1][name]["kernel"], masks[3][name]["kernel"])
    for name in ("conv1", "fc0", "head")
  ]
  assert any(moved)  # SSAM-D's refresh at step 2 dropped and regrew some weights
