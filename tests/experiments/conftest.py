"""Shared fixtures: a small real Fashion-MNIST folder (idx files) and tiny configs."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from experiments import local_datasets
from experiments.configs import default

DEBIAN_DIR = local_datasets.DEBIAN_FASHION_MNIST_DIR
HAVE_FASHION_MNIST = not local_datasets.missing_idx_files(DEBIAN_DIR)
needs_fashion_mnist = pytest.mark.skipif(
  not HAVE_FASHION_MNIST,
  reason=f"Fashion-MNIST idx files absent from {DEBIAN_DIR} "
  "(apt-get install dataset-fashion-mnist)",
)

SUBSET = {"train": 512, "test": 256}
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_idx(path: str, array: np.ndarray) -> None:
  """Writes a uint8 array as a gzipped idx file."""
  header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
    int(n).to_bytes(4, "big") for n in array.shape
  )
  with gzip.open(path, "wb") as f:
    f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@pytest.fixture(scope="package", autouse=True)
def _compilation_cache(tmp_path_factory):
  """Runs of one config compile the same step: a persistent cache compiles it once.

  Package-scoped: restored when the tests of this folder are done.
  """
  import jax

  old = (
    jax.config.jax_compilation_cache_dir,
    jax.config.jax_persistent_cache_min_compile_time_secs,
  )
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  yield
  jax.config.update("jax_compilation_cache_dir", old[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])


@pytest.fixture(scope="session")
def fmnist_subset_dir(tmp_path_factory) -> str:
  """A folder of idx files holding the first 512 train / 256 test real Fashion-MNIST images."""
  if not HAVE_FASHION_MNIST:
    pytest.skip(f"Fashion-MNIST idx files absent from {DEBIAN_DIR}")
  out = tmp_path_factory.mktemp("fmnist_subset")
  for split, (images_name, labels_name) in local_datasets.IDX_FILES.items():
    n = SUBSET[split]
    images = local_datasets.read_idx(os.path.join(DEBIAN_DIR, images_name))[:n]
    labels = local_datasets.read_idx(os.path.join(DEBIAN_DIR, labels_name))[:n]
    write_idx(str(out / images_name), images)
    write_idx(str(out / labels_name), labels)
  return str(out)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, fmnist_subset_dir) -> str:
  """A tfds data_dir in which the subset has been built once (as ``local_fashion_mnist``)."""
  from experiments import input_pipeline

  out = str(tmp_path_factory.mktemp("tfds_data"))
  input_pipeline.load_split("fashion_mnist", "train", out, fmnist_subset_dir)
  return out


def tiny_config(data_dir: str, source_dir: str, **overrides) -> ml_collections.ConfigDict:
  """Small CNN, 512 real Fashion-MNIST images, batch 64 (8 steps/epoch), no progress bar.

  ``overrides``: more settings, nested fields joined by ``__`` (``optimizer__name="sam"``).
  """
  settings = {
    "dataset__data_dir": data_dir,
    "dataset__source_dir": source_dir,
    "model__name": "cnn",
    "batch_size": 64,
    "eval_batch_size": 128,
    "num_epochs": 1,
    "log_every_steps": 4,
    "checkpoint_every_steps": 3,
    "progress_bar": False,
    **overrides,
  }
  config = default.get_config()
  for key, value in settings.items():
    node = config
    *parents, leaf = key.split("__")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def cli_error(module: str, *args: str, env: dict | None = None, timeout: int = 300) -> list[str]:
  """Runs ``python -m module args`` in a fresh process, which must exit with status 2 (a usage
  error, before any compile); returns the lines it wrote to stderr."""
  proc = subprocess.run(
    [sys.executable, "-m", module, *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=timeout,
    env={**(os.environ if env is None else env), "PYTHONPATH": REPO},
  )
  assert proc.returncode == 2, proc.stdout + proc.stderr
  return proc.stderr.strip().splitlines()
