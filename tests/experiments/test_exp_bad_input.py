"""Bad input: one stderr line, exit status 2, nothing compiled, nothing in the workdir touched."""

from __future__ import annotations

import hashlib
import os

import jax
import pytest

from experiments import main as cli
from experiments import optimizers, train
from tests.experiments.conftest import cli_error, tiny_config


@pytest.fixture
def no_compile(monkeypatch):
  """Fails the test if anything is jit-compiled."""

  def boom(*args, **kwargs):
    raise AssertionError("compiled before rejecting bad input")

  monkeypatch.setattr(jax, "jit", boom)


def _snapshot(path):
  out = {}
  for root, _, files in os.walk(path):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
  return out


@pytest.fixture
def no_data(tmp_path):
  """Flags pointing the run at an empty folder: every refusal must come before any data is read
  (a run that reads data here fails with a different message, that the data is missing)."""
  empty = tmp_path / "no_data"
  empty.mkdir()
  return [f"--config.dataset.data_dir={empty}", f"--config.dataset.source_dir={empty}"]


def _fails(capsys, argv, expected):
  code = cli.run(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2
  assert len(err) == 1, err
  assert err[0].startswith("error: ") and expected in err[0], err[0]
  return err[0]


@pytest.mark.parametrize(
  "override,expected",
  [
    ("model.name=resnet33", "unknown model 'resnet33'; valid: cnn, resnet20, resnet32"),
    ("dataset.name=svhn", "unknown dataset 'svhn'; valid: fashion_mnist, mnist, cifar10"),
    ("optimizer.name=adamw", "unknown optimizer 'adamw'; valid: sgd, sam, zo_sam"),
    ("sparse.method=magic", "unknown sparse method 'magic'; valid: dense, "),
    ("optimizer.schedule=step", "unknown learning-rate schedule 'step'; valid: cosine, constant"),
    ("batch_size=0", "batch_size must be an integer >= 1, got 0"),
    ("eval_every_steps=-1", "eval_every_steps must be an integer >= 0 (0: evaluate at epoch"),
    ("no_such_field=1", "unknown config field 'no_such_field'"),
    ("optimizer.rho=abc", "--config.optimizer.rho=abc: could not convert string to float"),
    # Library rules, checked by the library (the message names the argument).
    ("optimizer.rho=-0.1", "rho must be a finite number >= 0, got -0.1"),
    ("optimizer.rho=nan", "rho must be a finite number >= 0, got nan"),
    ("optimizer.zeroth_order.num_directions=0", "num_directions must be an integer >= 1, got 0"),
    ("optimizer.zeroth_order.scheme=backward", "scheme must be one of ['central', 'forward'"),
    ("sparse.sparsity=1.0", "sparsity must be in [0, 1), got 1.0"),
    ("sparse.sparsity_distribution=random", "sparsity_distribution must be one of"),
  ],
)
def test_bad_config_values(tmp_path, capsys, no_compile, no_data, override, expected):
  workdir = tmp_path / "w"
  _fails(capsys, [f"--workdir={workdir}", *no_data, f"--config.{override}"], expected)
  assert not workdir.exists()


@pytest.mark.parametrize(
  "overrides,expected",
  [
    (["optimizer.name=gsam", "optimizer.rho=-1"], "rho_max must be a finite number >= 0"),
    (["optimizer.name=gsam", "optimizer.gsam.rho_min=0.1"], "rho_min must be <= rho_max"),
    (["optimizer.name=esam", "optimizer.esam.beta=0"], "beta must be in (0, 1], got 0"),
    (["optimizer.name=looksam", "optimizer.looksam.update_every=0"], "update_every must be an"),
    (["optimizer.name=sparse_sam", "optimizer.sparse_sam.sparsity=1.5"], "sparsity must be in"),
    (["optimizer.name=sparse_sam", "optimizer.sparse_sam.mask_method=x"], "mask_method must be"),
    # Sparse SAM's mask pattern and form: the library's rules, then the pattern against the model.
    (
      ["optimizer.name=sparse_sam", "optimizer.sparse_sam.pattern=blocky"],
      "pattern must be one of ['unstructured', 'channel', 'n:m'], got 'blocky'",
    ),
    (
      ["optimizer.name=sparse_sam", "optimizer.sparse_sam.pattern=structured"],
      "got 'structured' (whole output channels are called 'channel')",
    ),
    (
      [
        "optimizer.name=sparse_sam",
        "optimizer.sparse_sam.pattern=n:m",
        "optimizer.sparse_sam.n_m=(3,2)",
      ],
      "n_m must be two integers (N, M) with 1 <= N <= M, got (3, 2)",
    ),
    (
      ["optimizer.name=sparse_sam", "optimizer.sparse_sam.form=sparse"],
      "form must be one of ['explicit', 'implicit'], got 'sparse'",
    ),
    (
      [
        "optimizer.name=sparse_sam",
        "optimizer.sparse_sam.form=implicit",
        "optimizer.sparse_sam.ascent=zeroth_order",
      ],
      "form='implicit' needs ascent='exact'",
    ),
    (
      ["optimizer.name=sparse_sam", "optimizer.sparse_sam.pattern=n:m"],
      "'conv0/kernel' has shape (3, 3, 1, 16): leave it unperturbed with "
      "optimizer.sparse_sam.unperturbed_layers=conv0",
    ),
    (
      ["optimizer.name=sparse_sam", "optimizer.sparse_sam.unperturbed_layers=stem"],
      "optimizer.sparse_sam.unperturbed_layers names ['stem'], not top-level modules of the model",
    ),
    (
      [
        "optimizer.name=sparse_sam",
        "optimizer.sparse_sam.pattern=n:m",
        "optimizer.sparse_sam.unperturbed_layers=conv0,conv1,fc0,head",
      ],
      "leaves no kernel to perturb; name fewer modules",
    ),
    (
      ["optimizer.name=adaptive_zo_sam", "optimizer.adaptive_zo_sam.max_directions=0"],
      "max_directions must be an integer >= 1",
    ),
    (["optimizer.name=zosa", "optimizer.zeroth_order.scheme=jvp"], "zeroth_order.scheme must be"),
    (
      ["optimizer.name=zo_sam", "optimizer.guidance=prior"],
      "guidance must be one of [None, 'previous_gradient'], got 'prior'",
    ),
    (["optimizer.name=sam", "optimizer.guidance=previous_gradient"], "optimizer.guidance must be"),
    (
      ["optimizer.name=looksam", "optimizer.guidance=previous_gradient"],
      "optimizer.guidance must be unset (None) for a head without a zeroth-order ascent",
    ),
    # Sparsity patterns: names, then the library's rules against the model's kernels.
    (["sparse.method=rigl", "sparse.pattern=blocky"], "unknown sparse pattern 'blocky'; valid: "),
    (["sparse.method=dense", "sparse.pattern=n:m"], "sparse.pattern=n:m needs a sparse.method"),
    (["sparse.method=set", "sparse.pattern=channel"], "sparse.dense_layers=head"),
    (["sparse.method=rigl", "sparse.pattern=n:m"], "sparsity must be 1 - N/M = 0.5"),
    (
      ["sparse.method=snip", "sparse.pattern=n:m", "sparse.sparsity=0.5"],
      "n_m=(2, 4) needs the input axis (axis 2) of prunable leaf 'conv0/kernel' divisible by M=4",
    ),
    (
      ["sparse.method=mest", "sparse.pattern=channel", "sparse.dense_layers=head,stem"],
      "sparse.dense_layers names ['stem'], not top-level modules of the model (valid: bn0",
    ),
    # LTH runs rounds of training: its values are checked before the rounds' data, too.
    (["sparse.method=lth", "sparse.sparsity=1.0"], "sparsity must be in [0, 1), got 1.0"),
    (["sparse.method=lth", "optimizer.rho=-1"], "rho must be a finite number >= 0, got -1"),
    (["optimizer.name=zo_sam", "optimizer.probe_fraction=0"], "probe_fraction must be in (0, 1]"),
    (["optimizer.name=zo_sam", "optimizer.probe_fraction=1.5"], "probe_fraction must be in (0,"),
    (
      ["optimizer.name=gsam", "optimizer.probe_fraction=0.25"],
      "optimizer.probe_fraction must be 1 for optimizer.name=gsam, whose ascent cannot see a "
      "sub-batch (heads whose ascent can: sam, zo_sam, sparse_sam, looksam, zo_looksam, "
      "zo_esam, adaptive_zo_sam), got 0.25",
    ),
    (
      ["optimizer.name=esam", "optimizer.probe_fraction=0.5"],
      "optimizer.probe_fraction must be 1 for optimizer.name=esam",
    ),
    (
      ["optimizer.name=zosa", "optimizer.probe_fraction=0.5"],
      "optimizer.probe_fraction must be 1 for optimizer.name=zosa",
    ),
  ],
)
def test_bad_method_values_name_their_argument(
  tmp_path, capsys, no_compile, no_data, overrides, expected
):
  workdir = tmp_path / "w"
  argv = [f"--workdir={workdir}", *no_data, *(f"--config.{o}" for o in overrides)]
  _fails(capsys, argv, expected)
  assert not workdir.exists()


def test_batch_not_divisible_by_device_count():
  config = tiny_config("", "")
  config.batch_size = 66
  with pytest.raises(train.ConfigError, match="batch_size 66 is not divisible by the 4 devices"):
    train.validate_config(config, device_count=4)
  config.batch_size, config.eval_batch_size = 64, 90
  with pytest.raises(train.ConfigError, match="eval_batch_size 90 is not divisible"):
    train.validate_config(config, device_count=4)


def test_unknown_command_line_argument(capsys, no_compile):
  _fails(capsys, ["--learning_rate=3"], "unrecognised argument --learning_rate")


def test_missing_config_file(capsys, no_compile):
  _fails(
    capsys, ["--config=experiments/configs/nope.py"], "config file experiments/configs/nope.py"
  )


def test_missing_data_stops_before_training(tmp_path, capsys, no_compile):
  argv = [
    f"--workdir={tmp_path / 'w'}",
    f"--config.dataset.data_dir={tmp_path / 'tfds'}",
    f"--config.dataset.source_dir={tmp_path / 'empty'}",
  ]
  _fails(capsys, argv, "apt-get install dataset-fashion-mnist")
  assert not (tmp_path / "w").exists()
  _fails(
    capsys,
    argv[:2] + ["--config.dataset.name=cifar10", "--config.model.name=resnet20"],
    f"tfds build cifar10 --data_dir={tmp_path / 'tfds'} --file_format=array_record",
  )


def test_existing_workdir_needs_resume_and_same_config(
  tmp_path, capsys, data_dir, fmnist_subset_dir
):
  workdir = tmp_path / "w"
  base = [
    f"--workdir={workdir}",
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={fmnist_subset_dir}",
    "--config.optimizer.name=sgd",
    "--config.batch_size=64",  # As tiny_config: the compiled step is shared via the cache.
    "--config.eval_batch_size=128",
    "--config.num_epochs=1",
    "--config.progress_bar=false",
  ]
  assert cli.run(base) == 0
  capsys.readouterr()
  before = _snapshot(workdir)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(jax, "jit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("compiled")))
    _fails(capsys, base, "already holds a run; pass --resume")
    _fails(
      capsys,
      base + ["--resume", "--config.optimizer.learning_rate=0.1"],
      "holds a run with a different config (optimizer.learning_rate: 0.05 there vs 0.1 now)",
    )
    _fails(capsys, base + ["--resume", "--config.optimizer.name=zo_sam"], "optimizer.name")
  assert _snapshot(workdir) == before
  # Resuming a finished run with the same config is fine and changes no checkpoint.
  assert cli.run(base + ["--resume"]) == 0
  assert "final test accuracy" in capsys.readouterr().out


def test_cli_exit_status_in_a_fresh_process(tmp_path):
  workdir = tmp_path / "w"
  assert cli_error("experiments.main", f"--workdir={workdir}", "--config.optimizer.name=adam") == [
    "error: unknown optimizer 'adam'; valid: " + ", ".join(optimizers.HEADS)
  ]
  assert not (tmp_path / "w").exists()


def test_resume_accepts_fields_added_since_at_their_defaults(tmp_path):
  """A run started before a config field existed resumes while that field is at its default,
  and is refused once the field is set to something else."""
  import json

  from experiments import workdir as wd

  config = tiny_config("", "")
  stored = config.to_dict()
  del stored["sparse"]["lth"]  # as written by a trainer that had no LTH group
  del stored["dataset"]["validation_size"]
  (tmp_path / "config.json").write_text(json.dumps(stored))
  assert wd.check_workdir(config, str(tmp_path), resume=True) is False
  config.dataset.validation_size = 100
  with pytest.raises(train.ConfigError, match="dataset.validation_size: '<absent>' there vs 100"):
    wd.check_workdir(config, str(tmp_path), resume=True)
