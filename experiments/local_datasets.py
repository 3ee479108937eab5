"""Project-defined tfds builders that read MNIST-format idx files from a local folder.

tfds' own ``fashion_mnist``/``mnist`` builders download from the internet and verify
checksums of the upstream ``.gz`` files. Debian's ``dataset-fashion-mnist`` package ships
the same images but with different ``.gz`` bytes, so those builders reject it. The builders
here parse the idx files themselves and write a normal tfds dataset (array_record, readable
with ``tfds.data_source`` without TensorFlow) into ``data_dir``; later runs reuse it.

Features are ``tfds.features.Tensor`` (``uint8`` image ``HxWx1`` and ``int64`` label):
encoding ``tfds.features.Image`` would need TensorFlow.

``FashionMnistCorrupted`` writes Fashion-MNIST-C (``experiments.corruptions``): one builder
config ``<corruption>_<severity>`` per corrupted copy of the test split.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from experiments import image_corruptions

IDX_FILES = {
  "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
  "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# Where Debian's `dataset-fashion-mnist` installs the files (`dpkg -L dataset-fashion-mnist`).
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def read_idx(path: str) -> np.ndarray:
  """Parses one (optionally gzipped) idx file into a ``uint8`` array.

  The idx format: two zero bytes, a type code (0x08 = unsigned byte), the number of
  dimensions, then one big-endian int32 per dimension, then the raw data.
  """
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    data = f.read()
  if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
    raise ValueError(f"{path} is not an unsigned-byte idx file")
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
  array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if array.size != int(np.prod(shape)):
    raise ValueError(f"{path}: header says shape {shape} but holds {array.size} values")
  return array.reshape(shape)


def missing_idx_files(source_dir: str) -> list[str]:
  """The idx files this folder lacks (empty when it holds all four)."""
  names = [name for pair in IDX_FILES.values() for name in pair]
  return [n for n in names if not os.path.isfile(os.path.join(source_dir, n))]


class _LocalIdxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Builds an image classification dataset (``SPLITS``) from the idx files of ``source_dir``."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Built from local idx files."}
  NUM_CLASSES = 10
  DESCRIPTION = ""
  SPLITS = tuple(IDX_FILES)
  # tfds looks for checksums/metadata next to the builder's module and asks
  # importlib_resources (not installed: an optional dependency of etils) where that is.
  # Nothing is downloaded, so there are no checksums: point it at this folder directly.
  pkg_dir_path = epath.Path(os.path.dirname(os.path.abspath(__file__)))
  code_path = None

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
      builder=self,
      description=self.DESCRIPTION,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Tensor(shape=(28, 28, 1), dtype=np.uint8),
          "label": tfds.features.Tensor(shape=(), dtype=np.int64),
        }
      ),
      supervised_keys=("image", "label"),
      # Keep the idx files' order, so "the first N examples" means the same as in the files.
      disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing is downloaded.
    if not self._source_dir:
      raise ValueError(f"{self.name}: building needs source_dir (a folder of idx files)")
    return {split: self._generate_examples(split) for split in self.SPLITS}

  def _read_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images [N, 28, 28], labels [N])`` of ``split``'s idx files."""
    image_file, label_file = IDX_FILES[split]
    images = read_idx(os.path.join(self._source_dir, image_file))
    labels = read_idx(os.path.join(self._source_dir, label_file))
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (28, 28):
      raise ValueError(f"{self._source_dir}: unexpected shapes {images.shape}, {labels.shape}")
    return images, labels

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    images, labels = self._read_split(split)
    yield from _examples(images, labels)


def _examples(images: np.ndarray, labels: np.ndarray) -> Iterator[tuple[int, dict]]:
  for i in range(labels.shape[0]):
    yield i, {"image": images[i][..., None], "label": np.int64(labels[i])}


class LocalFashionMnist(_LocalIdxBuilder):
  """Fashion-MNIST (Xiao et al., 2017) built from local idx files."""

  DESCRIPTION = "Fashion-MNIST, 60k/10k 28x28 grayscale images of 10 clothing classes."


class LocalMnist(_LocalIdxBuilder):
  """MNIST (LeCun et al., 1998) built from local idx files."""

  DESCRIPTION = "MNIST, 60k/10k 28x28 grayscale images of handwritten digits."


class FashionMnistCorrupted(_LocalIdxBuilder, skip_registration=True):
  """Fashion-MNIST-C: the Fashion-MNIST test split under one corruption at one severity.

  Read back as ``fashion_mnist_corrupted/<corruption>_<severity>``; images are corrupted by
  ``experiments.image_corruptions.corrupt`` with seed ``BUILD_SEED``, labels are the
  clean test labels, order is the idx files' order.
  """

  name = "fashion_mnist_corrupted"
  RELEASE_NOTES = {"1.0.0": "18 corruptions x 5 severities, see experiments/corruptions.py."}
  BUILDER_CONFIGS = [
    tfds.core.BuilderConfig(name=f"{c}_{s}", description=f"{c}, severity {s}")
    for c in image_corruptions.FASHION_MNIST_CORRUPTIONS
    for s in image_corruptions.CORRUPTION_SEVERITIES
  ]
  DESCRIPTION = "Fashion-MNIST-C: the 10k Fashion-MNIST test images, corrupted."
  SPLITS = ("test",)

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    images, labels = self._read_split(split)
    corruption, severity = self.builder_config.name.rsplit("_", 1)
    corrupted = image_corruptions.corrupt(
      images, corruption, int(severity), image_corruptions.BUILD_SEED
    )
    yield from _examples(corrupted, labels)


LOCAL_BUILDERS: dict[str, type[_LocalIdxBuilder]] = {
  "fashion_mnist": LocalFashionMnist,
  "mnist": LocalMnist,
}
