"""Curvature, loss landscapes, gradient noise, ascent quality and robustness of trained runs.

    python -m experiments.analyze WORKDIR [WORKDIR ...] [--step N] [--out DIR] [--examples 4096]
        [--batches 10] [--skip hessian,spectrum,landscape,variance,ascent,corrupted]
        [--iterations 30] [--trace-samples 30] [--seed 0]

For each workdir: rebuild the run's model and state from its ``config.json`` (``train.build``),
restore its final checkpoint (or ``--step``) and measure, at those parameters and on real data
(``zosam_jax.diagnostics``; on the active weights only when the run is sparse, with the mask
from the optimizer state):

* ``hessian``: the top-5 Hessian eigenvalues (Lanczos), lambda_1/lambda_5 and Hutchinson's trace
  with its standard error, of the mean training loss over a fixed subset (the first
  ``--examples`` training examples, evaluation preprocessing, BatchNorm in inference mode);
* ``spectrum``: the eigenvalue density by stochastic Lanczos quadrature (PNG, log density);
* ``landscape``: 1-D and 2-D filter-normalised loss landscapes (line and contour PNGs);
* ``variance``: the variance across ``--batches`` training batches of the update direction of
  the SGD (exact gradient), SAM and ZO-SAM (m=1) heads (BatchNorm in training mode);
* ``ascent``: cosine to the gradient and loss increase of ZO-SAM's ascent direction for
  m = 1, 4, 16 (SAM's exact gradient as the reference), on one training batch;
* ``corrupted``: Fashion-MNIST-C accuracy per corruption x severity and their mean.

Writes ``WORKDIR/analysis/analysis.json`` and PNGs (``--out DIR`` instead, for one workdir).
With several workdirs, comparison figures (and ``comparison.json``) go to ``--out`` (default
``analysis_comparison/``). A bad workdir (missing, no ``config.json``, no checkpoint, no
checkpoint of ``--step``) or bad flag prints one ``error: ...`` line and exits with status 2
before anything is compiled. See ``docs/diagnostics.md`` ("The analysis command").
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import types
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from experiments import cli
from experiments.cli import UsageError

PARTS = ("hessian", "spectrum", "landscape", "variance", "ascent", "corrupted")
ASCENT_DIRECTIONS = (1, 4, 16)
NUM_EIGENVALUES = 5
# Which BatchNorm mode each part uses (also written to analysis.json).
BATCH_NORM = {
  "hessian": "inference (the run's running statistics)",
  "spectrum": "inference (the run's running statistics)",
  "landscape": "inference (the run's running statistics)",
  "variance": "training (statistics of each batch, as the trainer's loss; running statistics "
  "not updated)",
  "ascent": "training (statistics of the batch, as the trainer's loss; running statistics not "
  "updated)",
  "corrupted": "inference (the run's running statistics)",
}


# Parts whose compiled loops differentiate the model: on CPU they run convolutions as patches
# times a matrix (see conv_as_matmul); the forward-only parts keep XLA's convolution.
DIFFERENTIATED_PARTS = ("hessian", "spectrum", "variance")
CONV_MODES = ("auto", "lax", "im2col")


@dataclasses.dataclass(frozen=True)
class Settings:
  """What to measure and how much (the command-line flags)."""

  step: int | None = None
  examples: int = 4096
  landscape_examples: int = 1024
  landscape_points: int = 21
  landscape_points_2d: int = 11
  span: float = 1.0
  batches: int = 10
  iterations: int = 30
  trace_samples: int = 30
  spectrum_vectors: int = 1
  ascent_samples: int = 8
  ascent_directions: tuple[int, ...] = ASCENT_DIRECTIONS
  chunk_size: int = 1024
  conv: str = "auto"  # auto (im2col on CPU) | lax | im2col; see conv_as_matmul.
  seed: int = 0
  skip: frozenset[str] = frozenset()
  corruptions: str = ""  # "" = the run's config.dataset.corruptions.
  severities: str = ""  # "" = the run's config.dataset.severities.
  progress_bar: bool = True

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["skip"] = sorted(self.skip)
    out["ascent_directions"] = list(self.ascent_directions)
    return out


@dataclasses.dataclass
class Run:
  """A checked workdir: its config, the checkpoint step to analyse and its data."""

  workdir: str
  config: Any
  step: int
  data_dir: str = ""
  spec: Any = None
  train_split: Any = None
  eval_split: Any = None
  batches: Any = None

  @property
  def label(self) -> str:
    opt, sp = self.config.optimizer, self.config.sparse
    if sp.method == "dense":
      return f"{opt.name} / dense"
    return f"{opt.name} / {sp.method} {sp.sparsity:.0%}"


# ----------------------------------------------------------------------------- checks


def check_workdir(workdir: str, step: int | None) -> Run:
  """Reads ``workdir``'s config and picks the checkpoint; opens and compiles nothing.

  Raises:
    UsageError: no such folder, no readable ``config.json``, no checkpoint, or none of ``step``.
    errors.ConfigError: a config the trainer refuses.
  """
  import ml_collections

  from experiments import checks
  from experiments import workdir as workdir_lib

  if not os.path.isdir(workdir):
    raise UsageError(f"workdir {workdir} does not exist")
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise UsageError(f"workdir {workdir} has no config.json (is it a run's folder?)")
  try:
    with open(path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise UsageError(f"cannot read {path}: {e}") from None
  config = workdir_lib.with_defaults(config)  # Fields added since the run was written.
  checks.validate_config(config)
  steps = workdir_lib.checkpoint_steps(workdir)
  if not steps:
    raise UsageError(f"workdir {workdir} has no checkpoint (checkpoints/ is missing or empty)")
  if step is None:
    step = steps[-1]
  elif step not in steps:
    raise UsageError(
      f"workdir {workdir} has no checkpoint of step {step}; saved steps: "
      f"{', '.join(map(str, steps))}"
    )
  return Run(workdir=workdir, config=config, step=step)


def load_data(run: Run) -> None:
  """The run's training split, evaluation split and seeded training batches (no compile)."""
  from experiments import input_pipeline

  run.data_dir = run.config.dataset.data_dir or input_pipeline.default_data_dir()
  try:
    data = input_pipeline.load_run_data(run.config, run.data_dir)
  except ValueError as e:  # e.g. a batch larger than the training split
    raise UsageError(f"{run.workdir}: {e}") from None
  run.spec, run.train_split, run.eval_split, run.batches = data


# ----------------------------------------------------------------------------- convolutions


def im2col_conv(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  batch_group_count=1,
  precision=None,
  preferred_element_type=None,
):
  """``lax.conv_general_dilated`` as shifted slices of the input times the reshaped kernel.

  The same function (one sum over the same products, in a different order), for 2-D
  channel-last convolutions (``NHWC`` input, ``HWIO`` kernel; Flax's layout) with any strides,
  padding and kernel dilation; every other case (groups, input dilation, other layouts, negative
  padding) falls through to ``lax.conv_general_dilated``. Its derivatives are slices, pads and
  matrix products, which XLA:CPU runs at full speed inside loops (see :func:`conv_as_matmul`).
  """
  import jax

  def fallback():
    return jax.lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      batch_group_count=batch_group_count,
      precision=precision,
      preferred_element_type=preferred_element_type,
    )

  if lhs.ndim != 4 or rhs.ndim != 4 or feature_group_count != 1 or batch_group_count != 1:
    return fallback()
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    return fallback()
  channel_last = jax.lax.ConvDimensionNumbers((0, 3, 1, 2), (3, 2, 0, 1), (0, 3, 1, 2))
  if jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != channel_last:
    return fallback()
  kh, kw, cin, cout = rhs.shape
  n, height, width, channels = lhs.shape
  if channels != cin:
    return fallback()
  dh, dw = (1, 1) if rhs_dilation is None else tuple(rhs_dilation)
  sh, sw = tuple(window_strides)
  span_h, span_w = (kh - 1) * dh + 1, (kw - 1) * dw + 1
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads((height, width), (span_h, span_w), (sh, sw), padding)
  (top, bottom), (left, right) = padding
  if min(top, bottom, left, right) < 0:
    return fallback()
  padded = jax.lax.pad(
    lhs, jax.numpy.zeros((), lhs.dtype), ((0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0))
  )
  out_h = (height + top + bottom - span_h) // sh + 1
  out_w = (width + left + right - span_w) // sw + 1
  columns = [
    jax.lax.slice(
      padded,
      (0, i * dh, j * dw, 0),
      (n, i * dh + (out_h - 1) * sh + 1, j * dw + (out_w - 1) * sw + 1, cin),
      (1, sh, sw, 1),
    )
    for i in range(kh)
    for j in range(kw)
  ]
  patches = columns[0] if len(columns) == 1 else jax.numpy.concatenate(columns, axis=-1)
  return jax.lax.dot_general(
    patches,
    rhs.reshape(kh * kw * cin, cout),
    (((3,), (0,)), ((), ())),
    precision=precision,
    preferred_element_type=preferred_element_type,
  )


@contextlib.contextmanager
def conv_as_matmul(enabled: bool = True) -> Iterator[None]:
  """While active, Flax's ``nn.Conv`` calls :func:`im2col_conv` instead of
  ``lax.conv_general_dilated``; trace (jit) inside it.

  Why: XLA:CPU rewrites convolutions into the layout its fast (Eigen) kernels take only in the
  top-level computation, not inside loop bodies. The gradient of a convolution (JAX's transposed
  convolutions) is in another layout, so a gradient or Hessian-vector product inside
  ``lax.fori_loop``/``scan``/``map`` (Lanczos, Hutchinson, ``gradient_variance``) falls back to a
  naive kernel. For the small CNN on 512 images: one HVP 0.5 s at top level, 6.8 s inside a loop,
  0.8 s inside a loop with this substitution (forward alone: 0.06 s lax, 0.16 s im2col, so
  forward-only parts keep lax). Same values up to float32 rounding (2e-6 relative on that HVP).
  """
  if not enabled:
    yield
    return
  from unittest import mock

  import flax.linen.linear as flax_linear
  import jax

  class _Lax(types.ModuleType):
    def __getattr__(self, name):
      return getattr(jax.lax, name)

  proxy = _Lax("jax.lax")
  proxy.conv_general_dilated = im2col_conv
  with mock.patch.object(flax_linear, "lax", proxy):
    yield


# ----------------------------------------------------------------------------- losses


def _cross_entropy(logits, labels):
  import optax

  return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def subset_loss(model, params, batch_stats, data):
  """Mean cross-entropy over a chunked subset, BatchNorm in inference mode.

  ``data = (images [C, chunk, ...], labels [C, chunk], weights [C, chunk])`` with weights
  ``1/N`` on the ``N`` real examples and 0 on padding. One ``lax.scan`` over the chunks; with
  several chunks each is rematerialised (``jax.checkpoint``), so differentiating it holds the
  activations of one chunk at a time.
  """
  import jax
  import jax.numpy as jnp

  images, labels, weights = data

  def chunk_loss(p, stats, x, y, w):
    logits = model.apply({"params": p, "batch_stats": stats}, x, train=False)
    return jnp.sum(w * _cross_entropy(logits, y))

  if images.shape[0] > 1:
    chunk_loss = jax.checkpoint(chunk_loss)

  def body(total, xs):
    return total + chunk_loss(params, batch_stats, *xs), None

  total, _ = jax.lax.scan(body, jnp.zeros([], jnp.float32), (images, labels, weights))
  return total


def batch_loss(model, params, batch_stats, batch, dropout_key):
  """Mean cross-entropy of one training batch, BatchNorm in training mode (as the trainer's
  loss; the updated running statistics are discarded)."""
  from experiments import steps

  variables = {"params": params, "batch_stats": batch_stats}
  logits, _ = steps.training_logits(model, variables, batch["image"], dropout_key)
  return _cross_entropy(logits, batch["label"]).mean()


def chunked_subset(split, spec, n: int, chunk_size: int) -> tuple[np.ndarray, ...]:
  """The first ``n`` examples of ``split`` (evaluation preprocessing), as ``[C, chunk, ...]``
  chunks padded with zero-weight rows."""
  from experiments import input_pipeline

  n = min(n, split.size)
  images, labels = split.get(np.arange(n))
  images = input_pipeline.normalize_eval(images, spec).astype(np.float32)
  chunk = min(chunk_size, n)
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  weights = np.concatenate([np.full(n, 1.0 / n, np.float32), np.zeros(pad, np.float32)])
  images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), np.float32)])
  labels = np.concatenate([labels, np.zeros(pad, labels.dtype)])
  return (
    images.reshape(num_chunks, chunk, *images.shape[1:]),
    labels.reshape(num_chunks, chunk),
    weights.reshape(num_chunks, chunk),
  )


# ----------------------------------------------------------------------------- JSON helpers


def _num(x) -> float | None:
  """A finite float, or None (strict JSON has no NaN/inf)."""
  x = float(x)
  return x if math.isfinite(x) else None


def _nums(xs) -> list:
  return [_num(x) for x in np.asarray(xs).reshape(-1)]


def _ratio(a, b) -> float | None:
  if a is None or b is None or b == 0:
    return None
  return _num(a / b)


# ----------------------------------------------------------------------------- the parts


class Analysis:
  """One restored run and the compiled measurements on it."""

  def __init__(self, run: Run, settings: Settings):
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from experiments import train
    from experiments import workdir as workdir_lib

    self.run, self.settings = run, settings
    self.mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("batch"))
    config = run.config
    self.model, _, state = train.build(
      config, run.spec, run.train_split, run.batches.steps_per_epoch, self.replicated
    )
    ckpt = workdir_lib.Checkpoints(run.workdir, config)
    try:
      try:
        self.state = ckpt.restore(state, step=run.step)
      except Exception:  # Another optimizer-state layout: the weights are all an analysis reads.
        self.state = ckpt.restore_weights(state, run.step)
    except Exception as e:  # Orbax raises several types for a checkpoint that does not fit.
      raise UsageError(
        f"cannot restore step {run.step} of {run.workdir} into the model its config builds "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
      ) from None
    self.params = self.state["params"]
    self.batch_stats = self.state["batch_stats"]
    import optax

    mask = optax.tree_utils.tree_get(self.state["opt_state"], "weight_mask")
    self.weight_mask = None if mask is None else jax.tree.map(lambda m: m.astype(bool), mask)
    self.num_params = int(sum(np.size(x) for x in jax.tree.leaves(self.params)))
    if self.weight_mask is None:
      self.active = self.num_params
    else:
      self.active = int(sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(self.weight_mask)))
    keys = jax.random.split(jax.random.PRNGKey(settings.seed), 6)
    conv = settings.conv
    if conv == "auto":
      conv = "im2col" if jax.default_backend() == "cpu" else "lax"
    self.conv = conv
    names = ("hessian", "trace", "spectrum", "landscape", "variance", "ascent")
    self.keys = dict(zip(names, keys, strict=True))
    self.dropout_key = jax.random.fold_in(jax.random.key(config.seed), run.step)

  # Data -------------------------------------------------------------------------------------

  def _subset(self, n: int):
    return chunked_subset(self.run.train_split, self.run.spec, n, self.settings.chunk_size)

  def _train_batches(self, count: int):
    """The ``count`` training batches the run would see after its checkpoint, stacked."""
    batches = [self.run.batches.batch(self.run.step + i) for i in range(count)]
    return {k: np.stack([b[k] for b in batches]) for k in ("image", "label")}

  # Parts ------------------------------------------------------------------------------------

  def hessian(self) -> dict[str, Any]:
    import jax

    import zosam_jax.diagnostics as zd

    s, model = self.settings, self.model
    data = self._subset(s.examples)
    k_eig, k_trace = self.keys["hessian"], self.keys["trace"]

    def measure(params, batch_stats, data, mask):
      def loss_fn(p):
        return subset_loss(model, p, batch_stats, data)

      eigenvalues = zd.hessian_eigenvalues(
        loss_fn,
        params,
        k_eig,
        k=NUM_EIGENVALUES,
        num_iterations=s.iterations,
        weight_mask=mask,
      )
      trace = zd.hessian_trace(
        loss_fn, params, k_trace, num_samples=s.trace_samples, weight_mask=mask
      )
      return loss_fn(params), eigenvalues, trace

    loss, eigenvalues, trace = jax.device_get(
      jax.jit(measure)(self.params, self.batch_stats, data, self.weight_mask)
    )
    eig = _nums(eigenvalues)
    return {
      "examples": int(np.sum(data[2] > 0)),
      "loss": _num(loss),
      "eigenvalues": eig,
      "lambda1_over_lambda5": _ratio(eig[0], eig[-1]),
      "trace": _num(trace.estimate),
      "trace_standard_error": _num(trace.standard_error),
      "lanczos_iterations": s.iterations,
      "trace_samples": s.trace_samples,
    }

  def spectrum(self) -> dict[str, Any]:
    import jax

    import zosam_jax.diagnostics as zd

    s, model, key = self.settings, self.model, self.keys["spectrum"]
    data = self._subset(s.examples)

    def measure(params, batch_stats, data, mask):
      return zd.hessian_spectrum(
        lambda p: subset_loss(model, p, batch_stats, data),
        params,
        key,
        num_iterations=s.iterations,
        num_vectors=s.spectrum_vectors,
        weight_mask=mask,
      )

    nodes, weights = jax.device_get(
      jax.jit(measure)(self.params, self.batch_stats, data, self.weight_mask)
    )
    return {
      "examples": int(np.sum(data[2] > 0)),
      "nodes": _nums(nodes),
      "weights": _nums(weights),
      "lanczos_iterations": s.iterations,
      "num_vectors": s.spectrum_vectors,
      # d * sum(w * theta): SLQ's own (Hutchinson) trace estimate over its start vectors.
      "slq_trace": _num(self.active * np.sum(weights * nodes)),
    }

  def landscape(self) -> dict[str, Any]:
    import jax

    import zosam_jax.diagnostics as zd

    s, model, key = self.settings, self.model, self.keys["landscape"]
    data = self._subset(min(s.landscape_examples, s.examples))

    def measure(params, batch_stats, data, mask):
      def loss_fn(p):
        return subset_loss(model, p, batch_stats, data)

      # The same key: the 1-D line is the alpha axis (beta = 0) of the 2-D plane.
      line = zd.loss_landscape(
        loss_fn, params, key, num_points=s.landscape_points, span=s.span, weight_mask=mask
      )
      plane = zd.loss_landscape(
        loss_fn,
        params,
        key,
        num_points=s.landscape_points_2d,
        span=s.span,
        two_dimensional=True,
        weight_mask=mask,
      )
      return line.alphas, line.losses, plane.alphas, plane.betas, plane.losses

    alphas, losses, alphas2, betas2, losses2 = jax.device_get(
      jax.jit(measure)(self.params, self.batch_stats, data, self.weight_mask)
    )
    return {
      "examples": int(np.sum(data[2] > 0)),
      "span": s.span,
      "one_dimensional": {"alphas": _nums(alphas), "losses": _nums(losses)},
      "two_dimensional": {
        "alphas": _nums(alphas2),
        "betas": _nums(betas2),
        "losses": [_nums(row) for row in losses2],  # losses[i][j] at (alphas[i], betas[j]).
      },
    }

  def _zeroth_order(self, num_directions: int):
    from experiments import optimizers

    opts = optimizers.zeroth_order_options(self.run.config.optimizer)
    return dataclasses.replace(opts, num_directions=num_directions)

  def _rho(self) -> tuple[float, str]:
    rho = float(self.run.config.optimizer.rho)
    if rho > 0:
      return rho, "the run's optimizer.rho"
    return 0.05, "0.05 (the run's optimizer.rho is 0)"

  def variance(self) -> dict[str, Any]:
    import jax

    import zosam_jax as zj
    import zosam_jax.diagnostics as zd

    s, model, key, dropout_key = self.settings, self.model, self.keys["variance"], self.dropout_key
    rho, rho_source = self._rho()
    adaptive = bool(self.run.config.optimizer.adaptive)
    heads = {
      "sgd": (zj.exact_gradient(), None),
      "sam": (zj.sam(rho, adaptive=adaptive), None),
      "zo_sam_m1": (
        zj.zo_sam(rho, zeroth_order=self._zeroth_order(1), adaptive=adaptive),
        key,
      ),
    }
    batches = self._train_batches(s.batches)
    out: dict[str, Any] = {
      "batches": s.batches,
      "batch_size": int(batches["label"].shape[1]),
      "rho": rho,
      "rho_source": rho_source,
      "adaptive": adaptive,
      "batch_norm": BATCH_NORM["variance"],
      "heads": {},
    }
    for name, (head, head_key) in heads.items():

      def measure(params, batch_stats, batches, mask, head=head, head_key=head_key):
        def loss_of_batch(p, b):
          return batch_loss(model, p, batch_stats, b, dropout_key)

        grad_fn = zd.head_gradient_fn(head, loss_of_batch, key=head_key, weight_mask=mask)
        return zd.gradient_variance(grad_fn, params, batches, weight_mask=mask)

      stats = jax.device_get(
        jax.jit(measure)(self.params, self.batch_stats, batches, self.weight_mask)
      )
      out["heads"][name] = {k: _num(v) for k, v in stats.items()}
    return out

  def ascent(self) -> dict[str, Any]:
    import jax

    import zosam_jax.diagnostics as zd

    s, model, key, dropout_key = self.settings, self.model, self.keys["ascent"], self.dropout_key
    rho, rho_source = self._rho()
    batch = {k: v[0] for k, v in self._train_batches(1).items()}
    directions = {"sam": None, **{f"zo_sam_m{m}": m for m in s.ascent_directions}}
    out: dict[str, Any] = {
      "rho": rho,
      "rho_source": rho_source,
      "num_samples": s.ascent_samples,
      "batch_size": int(batch["label"].shape[0]),
      "batch_norm": BATCH_NORM["ascent"],
      "directions": {},
    }
    for name, m in directions.items():

      def measure(params, batch_stats, batch, mask, m=m):
        def loss_fn(p):
          return batch_loss(model, p, batch_stats, batch, dropout_key)

        if m is None:
          ascent_fn = zd.gradient_ascent_fn(loss_fn)
        else:
          ascent_fn = zd.rge_ascent_fn(
            loss_fn, zeroth_order=self._zeroth_order(m), weight_mask=mask
          )
        return zd.ascent_quality(
          loss_fn,
          params,
          ascent_fn,
          rho=rho,
          key=key,
          weight_mask=mask,
          num_samples=s.ascent_samples,
        )

      q = jax.device_get(jax.jit(measure)(self.params, self.batch_stats, batch, self.weight_mask))
      entry = {
        "num_directions": m,
        "cosine_mean": _num(q.cosine_mean),
        "cosine_std": _num(q.cosine_std),
        "increase_mean": _num(q.increase_mean),
        "increase_std": _num(q.increase_std),
        "sam_increase": _num(q.sam_increase),
        "increase_ratio": _num(q.increase_ratio),
        "cosines": _nums(q.cosines),
      }
      if m is not None:  # The scale of a random direction's cosine: sqrt(m / d).
        entry["sqrt_m_over_d"] = math.sqrt(m / self.active)
      out["directions"][name] = entry
    return out

  def corrupted(self) -> dict[str, Any]:
    import jax
    import ml_collections

    from experiments import evaluation, steps
    from experiments import workdir as workdir_lib

    run, s = self.run, self.settings
    config = ml_collections.ConfigDict(run.config.to_dict())
    if s.corruptions:
      config.dataset.corruptions = s.corruptions
    if s.severities:
      config.dataset.severities = s.severities
    eval_step = jax.jit(steps.make_eval_step(self.model), out_shardings=self.replicated)
    split_name = "validation" if config.dataset.validation_size else "test"
    clean = evaluation.evaluate(
      eval_step, self.state, run.eval_split, run.spec, config, self.batch_sharding, split_name
    )
    results = evaluation.evaluate_corrupted(
      eval_step,
      self.state,
      config,
      run.data_dir,
      self.batch_sharding,
      workdir_lib.MetricWriter(run.workdir, enabled=False),  # Leaves metrics.jsonl alone.
      run.step,
    )
    mean = results.pop("mean")
    return {
      "dataset": f"{config.dataset.name}_corrupted",
      "corruptions": config.dataset.corruptions,
      "severities": config.dataset.severities,
      "test_subset": config.dataset.test_subset,
      "clean_split": split_name,
      "clean_accuracy": _num(clean[f"{split_name}_accuracy"]),
      "accuracy": {k: _num(v) for k, v in results.items()},
      "mean_accuracy": _num(mean),
      "batch_norm": BATCH_NORM["corrupted"],
    }


def _corrupted_skip_reason(run: Run, settings: Settings) -> str | None:
  if "corrupted" in settings.skip:
    return "skipped (--skip corrupted)"
  if run.config.dataset.name != "fashion_mnist":
    return (
      f"skipped: the run's dataset is {run.config.dataset.name}; Fashion-MNIST-C is only for "
      "fashion_mnist runs"
    )
  return None


# ----------------------------------------------------------------------------- plots


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: str) -> str:
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  _pyplot().close(fig)
  return path


def _density(spectrum: dict[str, Any]):
  import zosam_jax.diagnostics as zd

  nodes = np.asarray([np.nan if v is None else v for v in spectrum["nodes"]], np.float32)
  weights = np.asarray([0.0 if v is None else v for v in spectrum["weights"]], np.float32)
  ok = np.isfinite(nodes)
  grid, density = zd.spectral_density(nodes[ok], weights[ok])
  return np.asarray(grid), np.asarray(density)


def plot_spectrum(ax, spectrum: dict[str, Any], label: str | None = None) -> None:
  grid, density = _density(spectrum)
  ax.semilogy(grid, density + 1e-7, label=label)  # PyHessian's plot: density + 1e-7, log y.
  ax.set_xlabel("eigenvalue")
  ax.set_ylabel("density (log scale)")


def plot_landscape_1d(ax, land: dict[str, Any], label: str | None = None) -> None:
  one = land["one_dimensional"]
  ax.plot(one["alphas"], one["losses"], "o-", markersize=3, label=label)
  ax.set_xlabel("alpha (filter-normalised direction)")
  ax.set_ylabel("training loss")
  ax.grid(alpha=0.3)


def plot_landscape_2d(ax, land: dict[str, Any]) -> Any:
  two = land["two_dimensional"]
  losses = np.asarray(
    [[np.nan if v is None else v for v in row] for row in two["losses"]], np.float64
  )
  finite = losses[np.isfinite(losses)]
  lo, hi = float(finite.min()), float(finite.max())
  if lo > 0 and hi > lo * 1.01:  # Log-spaced levels resolve the basin and the walls.
    levels = np.geomspace(lo, hi, 20)
  else:
    levels = np.linspace(lo, hi + 1e-6, 20)
  a, b = np.meshgrid(two["alphas"], two["betas"], indexing="ij")
  filled = ax.contourf(a, b, losses, levels=levels, cmap="viridis")
  ax.contour(a, b, losses, levels=levels, colors="k", linewidths=0.3)
  ax.plot([0.0], [0.0], "r+", markersize=10)
  ax.set_xlabel("alpha")
  ax.set_ylabel("beta")
  ax.set_aspect("equal")
  return filled


def write_run_figures(result: dict[str, Any], out_dir: str) -> list[str]:
  """The PNGs of one analysis; returns their file names."""
  plt = _pyplot()
  title = f"{result['label']} (step {result['step']})"
  files = []
  if "nodes" in result["spectrum"]:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    plot_spectrum(ax, result["spectrum"])
    ax.set_title(f"Hessian eigenvalue density\n{title}", fontsize=9)
    files.append(_save(fig, os.path.join(out_dir, "spectral_density.png")))
  land = result["landscape"]
  if "one_dimensional" in land:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    plot_landscape_1d(ax, land)
    ax.set_title(f"1-D loss landscape ({land['examples']} training examples)\n{title}", fontsize=9)
    files.append(_save(fig, os.path.join(out_dir, "landscape_1d.png")))
    fig, ax = plt.subplots(figsize=(5, 4.2))
    filled = plot_landscape_2d(ax, land)
    fig.colorbar(filled, ax=ax, label="training loss")
    ax.set_title(f"2-D loss landscape\n{title}", fontsize=9)
    files.append(_save(fig, os.path.join(out_dir, "landscape_2d.png")))
  return [os.path.basename(f) for f in files]


def _bars(ax, groups: Sequence[str], series: dict[str, Sequence[float | None]], errors=None):
  """Grouped bars: one group per entry of ``groups``, one bar per series (run)."""
  width = 0.8 / max(len(series), 1)
  x = np.arange(len(groups))
  for i, (label, values) in enumerate(series.items()):
    vals = [np.nan if v is None else v for v in values]
    err = None
    if errors is not None:
      err = [0.0 if e is None else e for e in errors[label]]
    ax.bar(x + (i - (len(series) - 1) / 2) * width, vals, width, yerr=err, label=label, capsize=3)
  ax.set_xticks(x)
  ax.set_xticklabels(groups)
  ax.grid(alpha=0.3, axis="y")
  ax.legend(fontsize=8)


def write_comparison(results: Sequence[dict[str, Any]], out_dir: str) -> list[str]:
  """One figure per quantity over several analyses, and ``comparison.json``; returns the file
  names."""
  plt = _pyplot()
  os.makedirs(out_dir, exist_ok=True)
  labels = [r["label"] for r in results]
  if len(set(labels)) < len(labels):  # Same optimizer and sparse method: add the folder.
    labels = [f"{r['label']} ({os.path.basename(os.path.normpath(r['workdir']))})" for r in results]
  files = []

  def having(key, field):
    return [(lab, r[key]) for lab, r in zip(labels, results, strict=True) if field in r[key]]

  hess = having("hessian", "eigenvalues")
  if hess:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    names = [f"lambda_{i + 1}" for i in range(NUM_EIGENVALUES)]
    _bars(ax, names, {lab: h["eigenvalues"] for lab, h in hess})
    ax.set_title("top Hessian eigenvalues")
    files.append(_save(fig, os.path.join(out_dir, "eigenvalues.png")))
    fig, ax = plt.subplots(figsize=(5, 3.8))
    _bars(
      ax,
      ["trace"],
      {lab: [h["trace"]] for lab, h in hess},
      errors={lab: [h["trace_standard_error"]] for lab, h in hess},
    )
    ax.set_title("Hessian trace (Hutchinson, +- standard error)")
    files.append(_save(fig, os.path.join(out_dir, "trace.png")))
  for key, field, draw, title, name in (
    ("spectrum", "nodes", plot_spectrum, "Hessian eigenvalue density (SLQ)", "spectral_density"),
    (
      "landscape",
      "one_dimensional",
      plot_landscape_1d,
      "1-D filter-normalised loss landscapes",
      "landscape_1d",
    ),
  ):
    curves = having(key, field)
    if curves:  # One curve per run on one axis.
      fig, ax = plt.subplots(figsize=(6, 3.8))
      for lab, data in curves:
        draw(ax, data, lab)
      ax.legend(fontsize=8)
      ax.set_title(title)
      files.append(_save(fig, os.path.join(out_dir, f"{name}.png")))
  var = having("gradient_variance", "heads")
  if var:
    heads = list(var[0][1]["heads"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _bars(axes[0], heads, {lab: [v["heads"][h]["variance"] for h in heads] for lab, v in var})
    axes[0].set_title("update-direction variance across batches")
    _bars(axes[1], heads, {lab: [v["heads"][h]["relative"] for h in heads] for lab, v in var})
    axes[1].set_title("relative variance (variance / |mean|^2)")
    files.append(_save(fig, os.path.join(out_dir, "gradient_variance.png")))
  asc = having("ascent", "directions")
  if asc:
    names = [n for n in asc[0][1]["directions"] if n != "sam"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    _bars(
      axes[0],
      names,
      {lab: [a["directions"][n]["cosine_mean"] for n in names] for lab, a in asc},
      errors={lab: [a["directions"][n]["cosine_std"] for n in names] for lab, a in asc},
    )
    axes[0].set_title("ascent cosine to the gradient (+- std over keys)")
    _bars(
      axes[1],
      names,
      {lab: [a["directions"][n]["increase_ratio"] for n in names] for lab, a in asc},
    )
    axes[1].set_title("loss increase / SAM's")
    files.append(_save(fig, os.path.join(out_dir, "ascent.png")))
  cor = having("corrupted", "mean_accuracy")
  if cor:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    _bars(
      ax,
      ["clean", "corrupted (mean)"],
      {lab: [c["clean_accuracy"], c["mean_accuracy"]] for lab, c in cor},
    )
    ax.set_title("accuracy: clean and Fashion-MNIST-C")
    files.append(_save(fig, os.path.join(out_dir, "corrupted.png")))
  summary = [
    {
      "label": lab,
      "workdir": r["workdir"],
      "step": r["step"],
      "active_coordinates": r["active_coordinates"],
      "eigenvalues": r["hessian"].get("eigenvalues"),
      "trace": r["hessian"].get("trace"),
      "trace_standard_error": r["hessian"].get("trace_standard_error"),
      "relative_variance": {
        h: v["relative"] for h, v in r["gradient_variance"].get("heads", {}).items()
      },
      "ascent_cosine": {n: d["cosine_mean"] for n, d in r["ascent"].get("directions", {}).items()},
      "corrupted_mean_accuracy": r["corrupted"].get("mean_accuracy"),
    }
    for lab, r in zip(labels, results, strict=True)
  ]
  path = os.path.join(out_dir, "comparison.json")
  with open(path, "w") as f:
    json.dump(summary, f, indent=2, allow_nan=False)
  files.append(path)
  return [os.path.basename(f) for f in files]


# ----------------------------------------------------------------------------- driver


def analyze_run(run: Run, settings: Settings, out_dir: str) -> dict[str, Any]:
  """Every requested part on ``run``; writes ``out_dir/analysis.json`` and the PNGs."""
  from tqdm.auto import tqdm

  os.makedirs(out_dir, exist_ok=True)
  corrupted_skip = _corrupted_skip_reason(run, settings)
  todo = [p for p in PARTS if p not in settings.skip and not (p == "corrupted" and corrupted_skip)]
  bar = tqdm(
    total=len(todo) + 2, desc=run.label, disable=not settings.progress_bar, file=sys.stderr
  )
  timings: dict[str, float] = {}
  start = t0 = time.perf_counter()
  bar.set_postfix_str("restore")
  analysis = Analysis(run, settings)
  timings["restore"] = time.perf_counter() - t0
  bar.update(1)
  opt, sp = run.config.optimizer, run.config.sparse
  result: dict[str, Any] = {
    "workdir": os.path.abspath(run.workdir),
    "label": run.label,
    "step": run.step,
    "run": {
      "dataset": run.config.dataset.name,
      "model": run.config.model.name,
      "optimizer": opt.name,
      "rho": opt.rho,
      "num_directions": opt.zeroth_order.num_directions,
      "sparse_method": sp.method,
      "sparsity": None if sp.method == "dense" else sp.sparsity,
      "batch_size": run.config.batch_size,
      "seed": run.config.seed,
    },
    "settings": settings.to_json(),
    "num_params": analysis.num_params,
    "active_coordinates": analysis.active,
    "weight_mask": "dense (no mask)" if analysis.weight_mask is None else "opt_state weight_mask",
    "batch_norm": dict(BATCH_NORM),
    "convolution": (
      f"{analysis.conv}: hessian, spectrum and variance run convolutions as im2col (patches "
      "times kernel), the other parts with XLA's convolution"
      if analysis.conv == "im2col"
      else "lax: XLA's convolution in every part"
    ),
  }
  keys = {"hessian": "hessian", "variance": "gradient_variance"}
  for part in PARTS:
    key = keys.get(part, part)
    if part not in todo:
      result[key] = {
        "skipped": corrupted_skip if part == "corrupted" else f"skipped (--skip {part})"
      }
      continue
    bar.set_postfix_str(part)
    t0 = time.perf_counter()
    with conv_as_matmul(analysis.conv == "im2col" and part in DIFFERENTIATED_PARTS):
      result[key] = getattr(analysis, part)()
    timings[part] = time.perf_counter() - t0
    bar.update(1)
  bar.set_postfix_str("figures")
  t0 = time.perf_counter()
  result["files"] = ["analysis.json", *write_run_figures(result, out_dir)]
  timings["figures"] = time.perf_counter() - t0
  timings["total"] = time.perf_counter() - start
  result["timings_s"] = {k: round(v, 3) for k, v in timings.items()}
  with open(os.path.join(out_dir, "analysis.json"), "w") as f:
    json.dump(result, f, indent=2, allow_nan=False)
  bar.update(1)
  bar.close()
  return result


class _Parser(argparse.ArgumentParser):
  def error(self, message):  # One line, raised to run() (argparse would print usage too).
    raise UsageError(message)


def _positive(name: str, minimum: int = 1):
  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < minimum:
      raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value

  parse.__name__ = name
  return parse


def parse_args(argv: Sequence[str]) -> tuple[list[str], Settings, str | None]:
  """``(workdirs, settings, out)``."""
  d = Settings()
  p = _Parser(
    prog="python -m experiments.analyze",
    description=__doc__,
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )
  p.add_argument("workdirs", nargs="+", metavar="WORKDIR")
  p.add_argument("--step", type=_positive("step", 0), default=None, help="default: the latest")
  p.add_argument("--out", default=None, help="output folder (see above)")
  p.add_argument("--examples", type=_positive("examples"), default=d.examples)
  p.add_argument("--landscape-examples", type=_positive("landscape-examples"),
                 default=d.landscape_examples)  # fmt: skip
  p.add_argument("--landscape-points", type=_positive("landscape-points", 2),
                 default=d.landscape_points, help="1-D grid points")  # fmt: skip
  p.add_argument("--landscape-points-2d", type=_positive("landscape-points-2d", 2),
                 default=d.landscape_points_2d, help="2-D grid points per axis")  # fmt: skip
  p.add_argument("--span", type=float, default=d.span, help="landscape grid: [-span, span]")
  p.add_argument("--batches", type=_positive("batches", 2), default=d.batches)
  p.add_argument("--iterations", type=_positive("iterations", NUM_EIGENVALUES),
                 default=d.iterations, help="Lanczos steps (eigenvalues, SLQ)")  # fmt: skip
  p.add_argument("--trace-samples", type=_positive("trace-samples", 2), default=d.trace_samples)
  p.add_argument("--spectrum-vectors", type=_positive("spectrum-vectors"),
                 default=d.spectrum_vectors, help="SLQ start vectors")  # fmt: skip
  p.add_argument("--ascent-samples", type=_positive("ascent-samples"), default=d.ascent_samples)
  p.add_argument("--ascent-directions", default=",".join(map(str, d.ascent_directions)),
                 help="ZO-SAM direction counts m, comma-separated")  # fmt: skip
  p.add_argument("--chunk-size", type=_positive("chunk-size"), default=d.chunk_size,
                 help="examples per chunk of the subset loss")  # fmt: skip
  p.add_argument("--conv", choices=CONV_MODES, default=d.conv,
                 help="convolutions of the differentiated parts: auto = im2col on CPU")  # fmt: skip
  p.add_argument("--seed", type=_positive("seed", 0), default=d.seed)
  p.add_argument("--skip", default="", help=f"comma-separated parts of: {', '.join(PARTS)}")
  p.add_argument("--corruptions", default="", help="default: the run's config.dataset.corruptions")
  p.add_argument("--severities", default="", help="default: the run's config.dataset.severities")
  p.add_argument("--progress-bar", action=argparse.BooleanOptionalAction, default=True)
  args = p.parse_args(argv)
  skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
  unknown = sorted(skip - set(PARTS))
  if unknown:
    raise UsageError(f"unknown part(s) in --skip: {', '.join(unknown)}; valid: {', '.join(PARTS)}")
  try:
    ascent_directions = tuple(int(m) for m in args.ascent_directions.split(","))
  except ValueError:
    ascent_directions = ()
  if not ascent_directions or min(ascent_directions) < 1:
    raise UsageError(
      f"--ascent-directions must be positive integers, comma-separated; got "
      f"{args.ascent_directions!r}"
    )
  if not (math.isfinite(args.span) and args.span > 0):
    raise UsageError(f"--span must be a finite number > 0, got {args.span}")
  # Every field of Settings is a flag of the same name; two are parsed above.
  flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(Settings)}
  settings = Settings(**{**flags, "ascent_directions": ascent_directions, "skip": skip})
  return list(args.workdirs), settings, args.out


def _check_corruption_flags(runs: Sequence[Run], settings: Settings) -> None:
  from experiments import checks, input_pipeline

  for run in runs:
    if _corrupted_skip_reason(run, settings):
      continue
    ds = run.config.dataset
    known = input_pipeline.CORRUPTIONS[ds.name]
    checks.parse_list(settings.corruptions or ds.corruptions, known, "corruption")
    checks.parse_list(
      settings.severities or ds.severities, input_pipeline.CORRUPTION_SEVERITIES, "severity"
    )


def main(argv: Sequence[str]) -> list[dict[str, Any]]:
  """Checks every workdir and its data first, then analyses each; returns the results."""
  workdirs, settings, out = parse_args(argv)
  runs = [check_workdir(w, settings.step) for w in workdirs]
  _check_corruption_flags(runs, settings)
  for run in runs:
    load_data(run)
  results = []
  for run in runs:
    out_dir = out if (out and len(runs) == 1) else os.path.join(run.workdir, "analysis")
    result = analyze_run(run, settings, out_dir)
    print(f"{run.label}: {os.path.join(out_dir, 'analysis.json')}", flush=True)
    results.append(result)
  if len(runs) > 1:
    comparison_dir = out or "analysis_comparison"
    write_comparison(results, comparison_dir)
    print(f"comparison: {comparison_dir}", flush=True)
  return results


def run(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status."""
  # From errors, not input_pipeline: that imports JAX, seconds that --help does not need.
  from experiments.errors import ConfigError, DataMissingError

  argv = sys.argv[1:] if argv is None else list(argv)
  return cli.exit_status(lambda: main(argv), ConfigError, DataMissingError)


if __name__ == "__main__":
  raise SystemExit(run())
