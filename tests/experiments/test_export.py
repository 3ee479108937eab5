"""The trainer's steps and the analysis' Hessian-vector product exported for GPU and TPU from
this CPU host (``jax.export``: lowered for platforms absent here; nothing compiles or runs).

Where the library picks code per platform (LookSAM's refresh, ``zosam_jax._src.control_flow``;
the analysis' im2col convolutions), the pick must follow the platform lowered for, not the
host's backend: the CPU lowering keeps the CPU workaround, the accelerators get the plain form.
Counted here as the conditionals (``stablehlo.case``) that hold convolutions.

Default suite: every head of the registry with the CNN, dense; RigL (unstructured, channel),
implicit Sparse SAM and ResNet-20 with one head each. The product of them all is ``slow``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import zosam_jax.diagnostics as zd
from experiments import analyze, input_pipeline, optimizers, train
from experiments.configs import default
from tests import _lowering

BATCH = 8  # Export cost barely depends on it; the Fisher takes min(128, batch) examples.
ACCELERATORS = ("cuda", "tpu")
HEADS = tuple(optimizers.HEADS)
SPARSE = ("dense", "rigl", "rigl_channel")
# LookSAM's refresh branch back-propagates: selected on CPU, a conditional elsewhere.
WORKAROUND_HEADS = ("looksam",)


def _config(head: str, model: str = "cnn", sparse: str = "dense", form: str = "explicit"):
  config = default.get_config()
  config.optimizer.name = head
  config.optimizer.sparse_sam.form = form
  config.model.name = model
  config.dataset.name = "fashion_mnist" if model == "cnn" else "cifar10"
  config.batch_size = BATCH
  if sparse != "dense":
    config.sparse.method = "rigl"
    if sparse == "rigl_channel":
      config.sparse.pattern = "channel"
      config.sparse.dense_layers = "head"  # else the channel pattern would prune classes
  return config


def _batch(spec) -> dict[str, jax.ShapeDtypeStruct]:
  return {
    "image": jax.ShapeDtypeStruct((BATCH, *spec.image_shape), jnp.float32),
    "label": jax.ShapeDtypeStruct((BATCH,), jnp.int32),
  }


@functools.cache
def _step(head: str, model: str = "cnn", sparse: str = "dense", form: str = "explicit"):
  """The trainer's jitted step (as ``train_run`` builds it) and its arguments' shapes; cached,
  so the exports of one case for several platforms trace it once."""
  config = _config(head, model, sparse, form)
  spec = input_pipeline.SPECS[config.dataset.name]
  net, tx, state = train.build_abstract(config, spec)
  return jax.jit(train.train_step_fn(config, net, tx)), (state, _batch(spec))


def _check_step(head: str, model: str = "cnn", sparse: str = "dense", form: str = "explicit"):
  step, args = _step(head, model, sparse, form)
  counts = {}
  for platform in ("cpu", *ACCELERATORS):
    counts[platform] = _lowering.conditionals(_lowering.export_text(step, args, platform))
  extra = 1 if head in WORKAROUND_HEADS else 0
  for platform in ACCELERATORS:
    assert counts[platform] == counts["cpu"] + extra, counts
  if head in WORKAROUND_HEADS:
    assert counts["cpu"] == 0  # LookSAM's only conditional is its refresh
  if head == "sparse_sam":
    # SSAM-F's Fisher refresh (per-example gradients) is a conditional in every lowering, CPU
    # included: it has no workaround (running it every step would cost more; docs/limits.md).
    assert counts["cpu"] >= 1


@pytest.mark.parametrize("head", HEADS)
def test_every_head_exports_for_accelerators(head):
  _check_step(head)


@pytest.mark.parametrize(
  "head, model, sparse, form",
  [
    ("looksam", "cnn", "rigl", "explicit"),
    ("sparse_sam", "cnn", "rigl_channel", "explicit"),
    ("sparse_sam", "cnn", "dense", "implicit"),
    ("looksam", "resnet20", "dense", "explicit"),
  ],
)
def test_variants_export_for_accelerators(head, model, sparse, form):
  _check_step(head, model, sparse, form)


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("model", ["cnn", "resnet20"])
@pytest.mark.parametrize("sparse", SPARSE)
def test_every_head_model_and_sparsity_exports(head, model, sparse):
  _check_step(head, model, sparse)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["cnn", "resnet20"])
@pytest.mark.parametrize("sparse", SPARSE)
def test_implicit_sparse_sam_exports(model, sparse):
  _check_step("sparse_sam", model, sparse, "implicit")


def test_looksam_sub_batch_ascent_is_a_conditional_on_accelerators():
  # optimizer.probe_fraction < 1: the refresh's ascent gradient (on the sub-batch) is what
  # back-propagates under the condition; selected on CPU, a conditional elsewhere.
  config = _config("looksam")
  config.optimizer.probe_fraction = 0.25
  spec = input_pipeline.SPECS[config.dataset.name]
  net, tx, state = train.build_abstract(config, spec)
  step = jax.jit(train.train_step_fn(config, net, tx))
  counts = {
    platform: _lowering.conditionals(_lowering.export_text(step, (state, _batch(spec)), platform))
    for platform in ("cpu", *ACCELERATORS)
  }
  assert counts == {"cpu": 0, "cuda": 1, "tpu": 1}


def test_one_export_for_every_platform():
  # One module for CPU, GPU and TPU: the platform is resolved when it is compiled.
  step, args = _step("looksam")
  exported = jax.export.export(step, platforms=("cpu", "cuda", "tpu"))(*args)
  assert exported.platforms == ("cpu", "cuda", "tpu")
  assert "_platform_index" in exported.mlir_module()


def test_build_abstract_matches_build():
  # build_abstract (used above) gives the shapes build initialises, RigL's channel masks included.
  config = _config("sgd", sparse="rigl_channel")
  spec = input_pipeline.SPECS[config.dataset.name]
  replicated = NamedSharding(Mesh(np.asarray(jax.devices()), ("batch",)), P())
  _, _, state = train.build(config, spec, None, 1, replicated)
  _, _, shapes = train.build_abstract(config, spec)
  expected = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  assert jax.tree.structure(shapes) == jax.tree.structure(expected)
  assert jax.tree.leaves(shapes) == jax.tree.leaves(expected)


def _hvp_case(model: str):
  """The analysis' Hessian-vector product (its subset loss, BatchNorm in inference mode, two
  chunks of 4 examples) and its arguments' shapes."""
  config = _config("sgd", model)
  spec = input_pipeline.SPECS[config.dataset.name]
  net, _, state = train.build_abstract(config, spec)
  data = (
    jax.ShapeDtypeStruct((2, 4, *spec.image_shape), jnp.float32),
    jax.ShapeDtypeStruct((2, 4), jnp.int32),
    jax.ShapeDtypeStruct((2, 4), jnp.float32),
  )

  def hvp_with(conv):
    cls = analyze.conv_cls(conv)  # The analysis's model for its differentiated parts.
    model = net if cls is None else net.clone(conv_general_dilated_cls=cls)

    def hvp(params, batch_stats, data, vector):
      loss_fn = lambda p: analyze.subset_loss(model, p, batch_stats, data)  # noqa: E731
      return zd.hessian_vector_product(loss_fn, params, vector)

    return hvp

  hvps = {conv: hvp_with(conv) for conv in analyze.CONV_MODES}
  return hvps, (state["params"], state["batch_stats"], data, state["params"])


@pytest.mark.parametrize("model", ["cnn", pytest.param("resnet20", marks=pytest.mark.slow)])
def test_analysis_hvp_convolutions_follow_the_platform(model):
  # --conv auto: im2col where lowered for the CPU (no convolution left), XLA's convolution for
  # the accelerators; im2col and lax are the same on every platform.
  hvp, args = _hvp_case(model)
  for mode in analyze.CONV_MODES:
    jitted = jax.jit(hvp[mode])
    for platform in ("cpu", *ACCELERATORS):
      text = _lowering.export_text(jitted, args, platform)
      im2col = mode == "im2col" or (mode == "auto" and platform == "cpu")
      assert ("stablehlo.convolution" in text) != im2col, (mode, platform)
