"""``python -m experiments.analyze`` on tiny trained runs (dense SGD and ZO-SAM + RigL): files,
keys, invariants of the numbers, the comparison figures, and bad input."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import analyze, train
from tests.experiments.conftest import cli_error, tiny_config

PNG = b"\x89PNG\r\n\x1a\n"
SMALL = [
  "--examples", "32", "--iterations", "8", "--trace-samples", "4", "--batches", "3",
  "--landscape-points", "5", "--landscape-points-2d", "5", "--landscape-examples", "16",
  "--ascent-samples", "2", "--chunk-size", "16", "--no-progress-bar",
]  # fmt: skip
KEYS = {
  "workdir", "label", "step", "run", "settings", "num_params", "active_coordinates",
  "weight_mask", "batch_norm", "convolution", "hessian", "spectrum", "landscape",
  "gradient_variance", "ascent", "corrupted", "files", "timings_s",
}  # fmt: skip
RUN_PNGS = ("spectral_density.png", "landscape_1d.png", "landscape_2d.png")
CURVATURE_FIGURES = ("eigenvalues.png", "trace.png", "spectral_density.png", "landscape_1d.png")
OTHER_FIGURES = ("gradient_variance.png", "ascent.png", "corrupted.png")
CORRUPTED = ["--corruptions", "contrast", "--severities", "5"]  # One set of 256 images.


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir, fmnist_subset_dir):
  """A dense SGD run and a 90%-sparse ZO-SAM + RigL run, one epoch (8 steps) each."""
  tmp = tmp_path_factory.mktemp("analyze_runs")
  out = {}
  for name, overrides in {
    "dense": {"optimizer__name": "sgd"},
    "rigl": {"optimizer__name": "zo_sam", "sparse__method": "rigl", "sparse__update_every": 2},
  }.items():
    out[name] = str(tmp / name)
    train.train_and_evaluate(tiny_config(data_dir, fmnist_subset_dir, **overrides), out[name])
  return out


@pytest.fixture(scope="module")
def curvature(runs, tmp_path_factory):
  """Both runs analysed in one call: Hessian, spectrum and landscapes (the other parts have
  tests of their own below)."""
  out = str(tmp_path_factory.mktemp("analyze_out") / "comparison")
  argv = [runs["dense"], runs["rigl"], "--out", out, *SMALL, "--skip", "variance,ascent,corrupted"]
  return dict(zip(("dense", "rigl"), analyze.main(argv), strict=True)), out


def _read(path):
  with open(path) as f:
    return json.load(f)


def _is_png(path):
  with open(path, "rb") as f:
    return f.read(8) == PNG


def _check_files(result, out_dir, parts):
  assert _read(os.path.join(out_dir, "analysis.json")) == result
  assert set(result) == KEYS
  pngs = [f for f in RUN_PNGS if ("spectrum" if "density" in f else "landscape") in parts]
  for png in pngs:
    assert _is_png(os.path.join(out_dir, png)), png
  assert result["files"] == ["analysis.json", *pngs]
  assert set(result["timings_s"]) == {"restore", *parts, "figures", "total"}
  assert all(t >= 0 for t in result["timings_s"].values()) and result["timings_s"]["total"] > 0
  for part in set(analyze.PARTS) - set(parts):
    key = "gradient_variance" if part == "variance" else part
    assert set(result[key]) == {"skipped"}


def _check_curvature(result):
  hess = result["hessian"]
  eig = hess["eigenvalues"]
  assert len(eig) == 5 and all(np.isfinite(eig))
  assert eig == sorted(eig, reverse=True)
  assert hess["lambda1_over_lambda5"] == pytest.approx(eig[0] / eig[4])
  assert hess["trace_standard_error"] > 0 and np.isfinite(hess["trace"])
  assert hess["examples"] == 32 and np.isfinite(hess["loss"])
  spec = result["spectrum"]
  assert len(spec["nodes"]) == 8 and sum(spec["weights"]) == pytest.approx(1.0, abs=1e-4)
  # Ritz values never exceed lambda_max; both runs estimate it from below, same loss.
  assert max(spec["nodes"]) <= 1.5 * eig[0]
  land = result["landscape"]
  assert land["one_dimensional"]["alphas"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
  assert land["examples"] == 16
  # The line is the plane's alpha axis (same key): the same losses at beta = 0.
  two = np.asarray(land["two_dimensional"]["losses"])
  assert two.shape == (5, 5)
  np.testing.assert_allclose(two[:, 2], land["one_dimensional"]["losses"], rtol=1e-4)
  for part, mode in result["batch_norm"].items():
    assert mode.startswith("training" if part in ("variance", "ascent") else "inference")


def test_curvature_files_and_numbers(runs, curvature):
  for name, workdir in runs.items():
    result = curvature[0][name]
    assert result["step"] == 8  # The final checkpoint.
    _check_files(result, os.path.join(workdir, "analysis"), ("hessian", "spectrum", "landscape"))
    _check_curvature(result)


def test_active_coordinates_are_the_mask_count(runs, curvature):
  dense, rigl = curvature[0]["dense"], curvature[0]["rigl"]
  assert dense["active_coordinates"] == dense["num_params"]
  assert dense["weight_mask"] == "dense (no mask)"
  # The mask, restored independently of experiments.analyze.
  from experiments import workdir as workdir_lib

  run = analyze.check_workdir(runs["rigl"], None)
  analyze.load_data(run)
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("batch",))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  _, _, state = train.build(
    run.config, run.spec, run.train_split, run.batches.steps_per_epoch, replicated
  )
  state = workdir_lib.Checkpoints(runs["rigl"], run.config).restore(state)
  mask = optax.tree_utils.tree_get(state["opt_state"], "weight_mask")
  count = sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(mask))
  assert rigl["active_coordinates"] == count
  assert rigl["num_params"] == dense["num_params"]
  assert count < 0.2 * rigl["num_params"]  # 90% sparse kernels (biases and BN stay dense).


def test_comparison_figures(curvature):
  out = curvature[1]
  for name in CURVATURE_FIGURES:
    assert _is_png(os.path.join(out, name)), name
  assert not any(os.path.exists(os.path.join(out, name)) for name in OTHER_FIGURES)
  summary = _read(os.path.join(out, "comparison.json"))
  assert [s["label"] for s in summary] == ["sgd / dense", "zo_sam / rigl 90%"]
  assert summary[1]["eigenvalues"] == curvature[0]["rigl"]["hessian"]["eigenvalues"]


def _check_variance_and_ascent(result, batches, directions):
  var = result["gradient_variance"]
  assert set(var["heads"]) == {"sgd", "sam", "zo_sam_m1"} and var["batches"] == batches
  for stats in var["heads"].values():
    assert stats["variance"] > 0 and stats["mean_norm_sq"] > 0
    assert stats["relative"] == pytest.approx(stats["variance"] / stats["mean_norm_sq"])
  asc = result["ascent"]["directions"]
  assert set(asc) == {"sam", *(f"zo_sam_m{m}" for m in directions)}
  assert asc["sam"]["cosine_mean"] == pytest.approx(1.0, abs=1e-4)
  assert asc["sam"]["increase_ratio"] == pytest.approx(1.0, abs=1e-4)
  for name, d in asc.items():
    # A cosine, up to float32 rounding (SAM's is 1 in exact arithmetic).
    assert abs(d["cosine_mean"]) <= 1 + 1e-6 and d["sam_increase"] == asc["sam"]["sam_increase"]
    if name != "sam":
      assert d["sqrt_m_over_d"] == pytest.approx(
        np.sqrt(d["num_directions"] / result["active_coordinates"])
      )


def test_variance_and_ascent_on_the_sparse_run(runs, tmp_path):
  out = str(tmp_path / "a")
  skip = "hessian,spectrum,landscape,corrupted"
  argv = [runs["rigl"], "--out", out, *SMALL, "--ascent-directions", "2", "--skip", skip]
  (result,) = analyze.main(argv)
  _check_files(result, out, ("variance", "ascent"))
  _check_variance_and_ascent(result, 3, [2])


def test_corrupted_accuracy(runs, tmp_path):
  out = str(tmp_path / "a")
  skip = "hessian,spectrum,landscape,variance,ascent"
  (result,) = analyze.main([runs["dense"], "--out", out, *SMALL, *CORRUPTED, "--skip", skip])
  _check_files(result, out, ("corrupted",))
  cor = result["corrupted"]
  assert set(cor["accuracy"]) == {"contrast_5"}
  assert cor["mean_accuracy"] == cor["accuracy"]["contrast_5"]
  assert 0 <= cor["mean_accuracy"] <= 1 and 0.3 < cor["clean_accuracy"] <= 1
  # metrics.jsonl stays the run's: nothing of the analysis is appended to it.
  assert all(r["kind"] != "corrupted" for r in train.read_metrics(runs["dense"]))


@pytest.mark.slow
def test_every_part_on_two_runs(runs, tmp_path):
  """The full command (every part, ZO-SAM m = 1, 4, 16) on both runs, and every figure."""
  out = str(tmp_path / "comparison")
  results = analyze.main([runs["dense"], runs["rigl"], "--out", out, *SMALL, *CORRUPTED])
  for workdir, result in zip(runs.values(), results, strict=True):
    _check_files(result, os.path.join(workdir, "analysis"), analyze.PARTS)
    _check_curvature(result)
    _check_variance_and_ascent(result, 3, analyze.ASCENT_DIRECTIONS)
  for name in CURVATURE_FIGURES + OTHER_FIGURES:
    assert _is_png(os.path.join(out, name)), name


def test_step_flag_and_skip_all(runs, tmp_path):
  out = str(tmp_path / "a")
  argv = [runs["dense"], "--step", "6", "--out", out, "--skip", ",".join(analyze.PARTS)]
  assert analyze.run(argv + ["--no-progress-bar"]) == 0
  with open(os.path.join(out, "analysis.json")) as f:
    result = json.load(f)
  assert result["step"] == 6 and set(result) == KEYS
  assert all("skipped" in result[k] for k in ("hessian", "spectrum", "corrupted"))
  assert result["files"] == ["analysis.json"]


@pytest.mark.parametrize(
  "kernel,strides,padding,dilation",
  [
    ((3, 3), (1, 1), "SAME", (1, 1)),
    ((3, 3), (2, 2), "SAME", (1, 1)),
    ((1, 1), (2, 2), "VALID", (1, 1)),
    ((5, 3), (1, 2), ((2, 1), (0, 3)), (1, 1)),
    ((3, 3), (1, 1), "SAME", (2, 2)),
    ((7, 7), (2, 2), ((3, 3), (3, 3)), (1, 1)),
  ],
)
def test_im2col_conv_is_the_convolution(kernel, strides, padding, dilation):
  kx, kw = jax.random.split(jax.random.key(0))
  x = jax.random.normal(kx, (3, 11, 12, 4))
  w = jax.random.normal(kw, (*kernel, 4, 5))
  args = (x, w, strides, padding)
  kwargs = {"rhs_dilation": dilation, "dimension_numbers": ("NHWC", "HWIO", "NHWC")}
  expected = jax.lax.conv_general_dilated(*args, **kwargs)
  got = analyze.im2col_conv(*args, **kwargs)
  assert got.shape == expected.shape
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_subset_loss_is_the_same_in_chunks():
  from experiments import input_pipeline, models

  spec = input_pipeline.SPECS["fashion_mnist"]
  # 20 examples: in one chunk, and in 3 chunks of 8 (the last padded). The lax HVP below runs
  # XLA:CPU's slow convolution gradients inside the chunks' scan: its time grows with n.
  n = 20
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 28, 28, 1), np.uint8)
  split = input_pipeline.Split(n, images, rng.integers(0, 10, n).astype(np.int32))
  model = models.create_model("cnn", 10)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)
  losses = []
  for chunk in (n, 8):
    data = analyze.chunked_subset(split, spec, n, chunk)
    assert data[0].shape[:2] == ((1, n) if chunk == n else (3, 8))
    assert data[2].sum() == pytest.approx(1.0)
    losses.append(
      float(analyze.subset_loss(model, variables["params"], variables["batch_stats"], data))
    )
  assert losses[1] == pytest.approx(losses[0], rel=1e-5)

  # A Hessian-vector product through im2col convolutions is the same as through XLA's.
  import zosam_jax.diagnostics as zd

  params, stats = variables["params"], variables["batch_stats"]

  def hvp_of(net):
    def hvp(p, d):
      return zd.hessian_vector_product(lambda q: analyze.subset_loss(net, q, stats, d), p, p)

    return jax.jit(hvp)

  lax_hvp = hvp_of(model)(params, data)
  im2col_hvp = hvp_of(model.clone(conv_general_dilated_cls=analyze.im2col_conv_cls))(params, data)
  for a, b in zip(jax.tree.leaves(im2col_hvp), jax.tree.leaves(lax_hvp), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * float(jnp.abs(b).max()))


@pytest.fixture
def no_compile(monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError("compiled before rejecting bad input")

  monkeypatch.setattr(jax, "jit", boom)


def _fails(capsys, argv, expected):
  code = analyze.run([*argv, "--no-progress-bar"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert len(err) == 1, err
  assert err[0].startswith("error: ") and expected in err[0], err[0]


def _listing(path):
  return sorted(
    (os.path.relpath(os.path.join(root, n), path), os.stat(os.path.join(root, n)).st_mtime_ns)
    for root, _, names in os.walk(path)
    for n in names
  )


def test_bad_workdirs_fail_before_compiling(tmp_path, capsys, runs, no_compile):
  empty = tmp_path / "empty"
  empty.mkdir()
  no_ckpt = tmp_path / "no_ckpt"
  no_ckpt.mkdir()
  with open(os.path.join(runs["dense"], "config.json")) as f:
    (no_ckpt / "config.json").write_text(f.read())
  good = runs["dense"]
  before = _listing(good)
  _fails(capsys, [str(tmp_path / "nope")], f"workdir {tmp_path / 'nope'} does not exist")
  _fails(capsys, [good, str(empty)], "has no config.json")  # Checked before the good one runs.
  _fails(capsys, [str(no_ckpt)], "has no checkpoint")
  _fails(capsys, [good, "--step", "3"], "has no checkpoint of step 3; saved steps: 6, 8")
  _fails(capsys, [good, "--skip", "hessian,curvature"], "unknown part(s) in --skip: curvature")
  _fails(capsys, [good, "--iterations", "4"], "argument --iterations: must be >= 5, got 4")
  _fails(capsys, [good, "--corruptions", "saturate"], "unknown corruption 'saturate'")
  _fails(capsys, [good, "--ascent-directions", "4,x"], "--ascent-directions must be positive")
  _fails(capsys, [good, "--conv", "fft"], "argument --conv: invalid choice: 'fft'")
  _fails(capsys, [], "the following arguments are required: WORKDIR")
  assert _listing(good) == before  # Nothing written either.


def test_cli_exit_status_in_a_fresh_process(tmp_path):
  missing = tmp_path / "missing"
  assert cli_error("experiments.analyze", str(missing)) == [
    f"error: workdir {missing} does not exist"
  ]
