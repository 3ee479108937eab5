"""Fashion-MNIST-C, the datasets: ``fashion_mnist_corrupted/<corruption>_<severity>``.

``build(data_dir, source_dir, ...)`` writes each ``(corruption, severity)`` as a local tfds
dataset (test split only, images corrupted by ``image_corruptions.corrupt``, labels = the clean
test labels, skipped when already prepared) through ``local_datasets.FashionMnistCorrupted``.
``input_pipeline.load_corrupted_split`` builds one on first use;
``python -m experiments.corruptions --data_dir=DIR`` builds all 90 ahead of time. The corruptions
themselves, and every parameter, are in ``experiments/image_corruptions.py``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

from experiments.image_corruptions import (
  BUILD_SEED,
  CORRUPTION_SEVERITIES,
  FASHION_MNIST_CORRUPTIONS,
  check,
  check_installed,
  corrupt,
)

__all__ = [
  "BUILD_SEED",
  "CORRUPTION_SEVERITIES",
  "FASHION_MNIST_CORRUPTIONS",
  "build",
  "builder",
  "check",
  "check_installed",
  "corrupt",
  "is_built",
  "tfds_name",
]


def tfds_name(corruption: str, severity: int) -> str:
  """``fashion_mnist_corrupted/<corruption>_<severity>``."""
  check(corruption, severity)
  return f"fashion_mnist_corrupted/{corruption}_{severity}"


def builder(corruption: str, severity: int, data_dir: str, source_dir: str):
  """The tfds builder of one corrupted test set (reads the clean idx files in ``source_dir``)."""
  from experiments import local_datasets  # Here: it imports tfds, slow to load.

  check(corruption, severity)
  return local_datasets.FashionMnistCorrupted(
    config=f"{corruption}_{severity}",
    data_dir=data_dir,
    source_dir=source_dir,
    file_format="array_record",
  )


def is_built(corruption: str, severity: int, data_dir: str) -> bool:
  """Whether ``fashion_mnist_corrupted/<corruption>_<severity>`` is prepared in ``data_dir``."""
  from absl import logging as absl_logging

  old = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)  # tfds warns about the folder it checks.
  try:
    return builder(corruption, severity, data_dir, source_dir="").is_prepared()
  finally:
    absl_logging.set_verbosity(old)


def build(
  data_dir: str,
  source_dir: str,
  corruptions: Sequence[str] = FASHION_MNIST_CORRUPTIONS,
  severities: Sequence[int] = CORRUPTION_SEVERITIES,
  verbose: bool = True,
) -> list[str]:
  """Writes the requested corrupted test sets into ``data_dir`` (skipping prepared ones).

  Args:
    data_dir: tfds data directory.
    source_dir: folder holding ``t10k-images-idx3-ubyte.gz`` / ``t10k-labels-idx1-ubyte.gz``
      (all images in it are corrupted).

  Returns:
    The tfds names built now (not those already present).
  """
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()
  built = []
  for corruption in corruptions:
    for severity in severities:
      if is_built(corruption, severity, data_dir):
        continue
      start = time.perf_counter()
      builder(corruption, severity, data_dir, source_dir).download_and_prepare()
      built.append(tfds_name(corruption, severity))
      if verbose:
        print(f"built {built[-1]} in {time.perf_counter() - start:.1f} s", flush=True)
  return built


def _main(argv: Sequence[str] | None = None) -> int:
  from experiments import local_datasets  # Here: it imports tfds, slow to load.

  parser = argparse.ArgumentParser(
    description="Build Fashion-MNIST-C (fashion_mnist_corrupted/<corruption>_<severity>) "
    "into a tfds data dir."
  )
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--source_dir", default=local_datasets.DEBIAN_FASHION_MNIST_DIR)
  parser.add_argument("--corruptions", default="all", help="'all' or comma-separated names")
  parser.add_argument("--severities", default="all", help="'all' or comma-separated levels")
  args = parser.parse_args(argv)
  corruptions = (
    FASHION_MNIST_CORRUPTIONS if args.corruptions == "all" else args.corruptions.split(",")
  )
  severities = (
    CORRUPTION_SEVERITIES
    if args.severities == "all"
    else tuple(int(s) for s in args.severities.split(","))
  )
  for c in corruptions:
    for s in severities:
      check(c, s)
  start = time.perf_counter()
  built = build(args.data_dir, args.source_dir, corruptions, severities)
  print(f"built {len(built)} datasets in {time.perf_counter() - start:.1f} s", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(_main())
