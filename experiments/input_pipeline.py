"""Input pipeline: tensorflow-datasets sources, seeded batching and the papers' augmentation.

Data are read with ``tfds.data_source`` (random access over array_record files, no
TensorFlow needed). Training batches come from a ``grain`` pipeline over the same random access
(``TrainBatches``): every batch is a pure function of ``(seed, step)``: the example order of
epoch ``e`` is grain's index shuffle seeded from ``(seed, e)`` and the augmentation of step ``s``
draws from a generator seeded with ``(seed, s)``. So a run resumed at step ``s`` sees exactly the
batches an uninterrupted run would, two runs with the same seed see the same data, and neither
depends on the number of worker processes (``dataset.workers``) or hosts. The iterator's
position is checkpointed with the train state (``TrainIterator.get_state``).

Augmentation (numpy, on the host):
* CIFAR (Mi et al. 2022, section 5.1): random crop with 4-pixel zero padding, random
  horizontal flip, per-channel normalisation, cutout (DeVries & Taylor 2017; 16x16 square).
* ImageNet: random-resized-crop to 224 and horizontal flip for training; resize to 256 and
  center-crop 224 for evaluation; per-channel normalisation.
* Fashion-MNIST / MNIST: normalisation only by default (the augmentation flags apply too).

Small datasets (everything but ImageNet) are read into memory once per process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from experiments import corruptions as corruption_lib
from experiments import label_noise
from experiments.errors import ConfigError, DataMissingError

DATASETS = ("fashion_mnist", "mnist", "cifar10", "cifar100", "imagenet2012")

# The 19 corruptions of CIFAR-10-C (Hendrycks & Dietterich, 2019), each at every severity.
CIFAR10_CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost", "frosted_glass_blur",
    "gaussian_blur", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur",
    "pixelate", "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)  # fmt: skip
# Fashion-MNIST-C: 18 of them (not "saturate"), built locally (experiments/corruptions.py).
FASHION_MNIST_CORRUPTIONS = corruption_lib.FASHION_MNIST_CORRUPTIONS
CORRUPTION_SEVERITIES = corruption_lib.CORRUPTION_SEVERITIES  # (1, 2, 3, 4, 5)
# Which corruptions each dataset's corrupted test sets (`<dataset>_corrupted/<c>_<s>`) have.
CORRUPTIONS: dict[str, tuple[str, ...]] = {
  "cifar10": CIFAR10_CORRUPTIONS,
  "fashion_mnist": FASHION_MNIST_CORRUPTIONS,
}


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """Static facts about one dataset."""

  tfds_name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # Model input shape (after crops).
  mean: tuple[float, ...]
  std: tuple[float, ...]
  train_split: str = "train"
  eval_split: str = "test"
  in_memory: bool = True


SPECS: dict[str, DatasetSpec] = {
    "fashion_mnist": DatasetSpec("local_fashion_mnist", 10, (28, 28, 1), (0.2860,), (0.3530,)),
    "mnist": DatasetSpec("local_mnist", 10, (28, 28, 1), (0.1307,), (0.3081,)),
    "cifar10": DatasetSpec(
        "cifar10", 10, (32, 32, 3), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetSpec(
        "cifar100", 100, (32, 32, 3), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "imagenet2012": DatasetSpec(
        "imagenet2012", 1000, (224, 224, 3), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225),
        eval_split="validation", in_memory=False,
    ),
}  # fmt: skip


def _how_to_get(name: str, data_dir: str) -> str:
  """The exact step that provides dataset ``name`` in ``data_dir``."""
  if name == "fashion_mnist" or name.startswith("fashion_mnist_corrupted/"):
    return (
      "install the Debian package (`sudo apt-get install dataset-fashion-mnist`) or put "
      "the four Fashion-MNIST idx .gz files in a folder and pass "
      "--config.dataset.source_dir=FOLDER"
    )
  if name == "mnist":
    return (
      "put the four MNIST idx .gz files (train-images-idx3-ubyte.gz, "
      "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) "
      "in a folder and pass --config.dataset.source_dir=FOLDER"
    )
  if name.startswith("imagenet2012"):
    return (
      "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org "
      f"into {os.path.join(data_dir, 'downloads', 'manual')} and run "
      f"`tfds build imagenet2012 --data_dir={data_dir} --file_format=array_record` "
      "(building needs TensorFlow installed)"
    )
  return (
    f"on a machine with internet run `tfds build {name} --data_dir={data_dir} "
    "--file_format=array_record` (building needs TensorFlow installed) and copy the "
    f"resulting {name.split('/')[0]}/ folder into {data_dir}"
  )


def default_data_dir() -> str:
  """tfds' default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``."""
  return os.environ.get("TFDS_DATA_DIR") or os.path.expanduser("~/tensorflow_datasets")


@contextlib.contextmanager
def _absl_errors_only() -> Iterator[None]:
  from absl import logging as absl_logging

  old = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(old)


def _prepare_local(name: str, data_dir: str, source_dir: str) -> None:
  """Builds the local Fashion-MNIST/MNIST tfds dataset once (a no-op when already built)."""
  from experiments import local_datasets

  if not source_dir and name == "fashion_mnist":
    source_dir = local_datasets.DEBIAN_FASHION_MNIST_DIR
  builder = local_datasets.LOCAL_BUILDERS[name](
    data_dir=data_dir, source_dir=source_dir, file_format="array_record"
  )
  with _absl_errors_only():  # tfds warns about the not-yet-built folder it is checking.
    if builder.is_prepared():
      return
  missing = local_datasets.missing_idx_files(source_dir) if source_dir else ["all four"]
  if missing:
    raise DataMissingError(
      f"dataset {name} is not built in {data_dir} and its idx files "
      f"({', '.join(missing)}) are missing from source_dir "
      f"'{source_dir or '(none given)'}': {_how_to_get(name, data_dir)}"
    )
  print(f"Building {name} from {source_dir} into {data_dir} (once)...", flush=True)
  import tensorflow_datasets as tfds

  tfds.disable_progress_bar()
  builder.download_and_prepare()


def _prepare_corrupted(name: str, data_dir: str, source_dir: str) -> None:
  """Builds one Fashion-MNIST-C test set (``fashion_mnist_corrupted/<c>_<s>``) once."""
  from experiments import local_datasets

  corruption, severity = _parse_corrupted(name)
  if corruption_lib.is_built(corruption, severity, data_dir):
    return
  source_dir = source_dir or local_datasets.DEBIAN_FASHION_MNIST_DIR
  test_files = local_datasets.IDX_FILES["test"]
  missing = [f for f in test_files if not os.path.isfile(os.path.join(source_dir, f))]
  if missing:
    raise DataMissingError(
      f"dataset {name} is not built in {data_dir} and the clean Fashion-MNIST test idx files "
      f"({', '.join(missing)}) it is made from are missing from source_dir '{source_dir}': "
      f"{_how_to_get(name, data_dir)}"
    )
  try:
    corruption_lib.check_installed()
  except ImportError as e:
    raise DataMissingError(f"dataset {name} is not built in {data_dir} and {e}") from None
  print(f"Building {name} from {source_dir} into {data_dir} (once)...", flush=True)
  corruption_lib.build(data_dir, source_dir, [corruption], [severity], verbose=False)


def _parse_corrupted(name: str) -> tuple[str, int]:
  """``<dataset>_corrupted/<corruption>_<severity>`` -> ``(corruption, severity)``."""
  corruption, _, severity = name.partition("/")[2].rpartition("_")
  if not corruption or not severity.isdigit():
    raise ValueError(f"{name!r} is not of the form <dataset>_corrupted/<corruption>_<severity>")
  return corruption, int(severity)


def open_source(name: str, split: str, data_dir: str, source_dir: str = "") -> Sequence[dict]:
  """Opens one split as a random-access sequence of ``{"image", "label"}`` dicts.

  Fashion-MNIST, MNIST and the Fashion-MNIST-C test sets are built into ``data_dir`` on first
  use (from idx files); everything else must already be prepared there.

  Args:
    name: one of ``DATASETS``, or ``<dataset>_corrupted/<corruption>_<severity>`` for a
      dataset of ``CORRUPTIONS`` (see ``corrupted_names``).
    split: tfds split name.
    data_dir: tfds data directory.
    source_dir: folder of idx files for the local Fashion-MNIST/MNIST builders ("" uses
      the Debian package's folder for Fashion-MNIST).

  Raises:
    DataMissingError: the data is neither prepared nor buildable offline.
  """
  import tensorflow_datasets as tfds

  tfds_name = SPECS[name].tfds_name if name in SPECS else name
  if name in ("fashion_mnist", "mnist"):
    _prepare_local(name, data_dir, source_dir)
  elif name.startswith("fashion_mnist_corrupted/"):
    corruption, severity = _parse_corrupted(name)
    corrupted_names("fashion_mnist", [corruption], [severity])  # Raises on unknown names.
    _prepare_corrupted(name, data_dir, source_dir)
  try:
    with _absl_errors_only():
      return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared here".
    raise DataMissingError(
      f"dataset {tfds_name} (split {split}) is not prepared in {data_dir} in a "
      f"random-access format ({type(e).__name__}): {_how_to_get(tfds_name, data_dir)}"
    ) from None


def _gather(source: Sequence[dict], indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
  keys = [int(i) for i in indices]
  try:  # Batched reads are several times faster than one record at a time.
    records = source.__getitems__(keys)
  except (AttributeError, TypeError):  # Sources without it (e.g. tfds' mock) read singly.
    records = [source[k] for k in keys]
  images = [np.asarray(r["image"]) for r in records]
  labels = np.asarray([int(r["label"]) for r in records], dtype=np.int32)
  return images, labels


@dataclasses.dataclass
class Split:
  """One split: either in-memory arrays, or a random-access source of variable-size images."""

  size: int
  images: np.ndarray | None = None  # uint8 [N, H, W, C] when in memory.
  labels: np.ndarray | None = None  # int32 [N] when in memory.
  source: Sequence[dict] | None = None
  # With label noise: the true labels, where ``labels`` holds the ones the run trains on.
  clean_labels: np.ndarray | None = None

  def get(self, indices: np.ndarray) -> tuple[Any, np.ndarray]:
    """Images (array, or list of arrays for sources) and labels at ``indices``."""
    if self.images is not None:
      return self.images[indices], self.labels[indices]
    return _gather(self.source, indices)


def load_split(
  name: str, split: str, data_dir: str, source_dir: str = "", subset: int = 0
) -> Split:
  """Loads a split; ``subset > 0`` keeps only its first ``subset`` examples."""
  source = open_source(name, split, data_dir, source_dir)
  size = len(source) if subset <= 0 else min(subset, len(source))
  base = name.split("/")[0].removesuffix("_corrupted")  # e.g. fashion_mnist_corrupted/fog_3.
  spec = SPECS.get(base, SPECS["cifar10"])
  if not spec.in_memory:
    return Split(size=size, source=source)
  images, labels = _gather(source, range(size))
  return Split(size=size, images=np.stack(images).astype(np.uint8), labels=labels)


def hold_out(split: Split, size: int) -> tuple[Split, Split]:
  """``(rest, held_out)``: the first ``split.size - size`` examples and the last ``size``.

  A validation set carved from the training split, for tuning without touching the test set.
  """
  if split.images is None:
    raise ValueError("dataset.validation_size needs an in-memory dataset (not imagenet2012)")
  if not 0 < size < split.size:
    raise ValueError(
      f"dataset.validation_size must be in (0, {split.size}) for {split.size} training examples, "
      f"got {size}"
    )
  n = split.size - size
  rest = Split(n, split.images[:n], split.labels[:n])
  return rest, Split(size, split.images[n:], split.labels[n:])


def _normalize(images: np.ndarray, spec: DatasetSpec) -> np.ndarray:
  mean = np.asarray(spec.mean, np.float32) * 255.0
  std = np.asarray(spec.std, np.float32) * 255.0
  return (images.astype(np.float32) - mean) / std


def _shift_crop(images: np.ndarray, padding: int, offsets: np.ndarray) -> np.ndarray:
  """Zero-pads by ``padding``; crops image ``i`` back to its size at ``offsets[i] = (dy, dx)``."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  rows = offsets[:, :1] + np.arange(h)[None, :]  # [n, h]
  cols = offsets[:, 1:] + np.arange(w)[None, :]  # [n, w]
  return padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def random_crop(images: np.ndarray, padding: int, rng: np.random.Generator) -> np.ndarray:
  """Zero-pads by ``padding`` and crops back to the input size at a random offset."""
  return _shift_crop(images, padding, rng.integers(0, 2 * padding + 1, size=(len(images), 2)))


def _flip_where(images: np.ndarray, flips: np.ndarray) -> np.ndarray:
  return np.where(flips[:, None, None, None], images[:, :, ::-1], images)


def random_flip(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """Flips each image left-right with probability 1/2."""
  return _flip_where(images, rng.random(len(images)) < 0.5)


def _cutout_at(images: np.ndarray, size: int, centres: np.ndarray) -> np.ndarray:
  """Zeroes the ``size x size`` square (clipped at the border) centred at ``centres[i]``."""
  _, h, w, _ = images.shape
  cy, cx = centres[:, :1], centres[:, 1:]
  ys, xs = np.arange(h)[None, :], np.arange(w)[None, :]
  in_y = (ys >= cy - size // 2) & (ys < cy - size // 2 + size)  # [n, h]
  in_x = (xs >= cx - size // 2) & (xs < cx - size // 2 + size)  # [n, w]
  mask = in_y[:, :, None] & in_x[:, None, :]
  return np.where(mask[..., None], 0.0, images).astype(images.dtype)


def cutout(images: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
  """Zeroes a ``size x size`` square (clipped at the border) centred at a random pixel.

  Applied after normalisation, so the square holds the dataset mean.
  """
  n, h, w, _ = images.shape
  return _cutout_at(images, size, np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], 1))


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  from PIL import Image

  squeeze = image.shape[-1] == 1
  pil = Image.fromarray(image[..., 0] if squeeze else image)
  out = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR))
  return out[..., None] if squeeze else out


def random_resized_crop(
  image: np.ndarray,
  size: int,
  rng: np.random.Generator,
  scale: tuple[float, float] = (0.08, 1.0),
  ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
  """Inception-style crop: random area fraction and aspect ratio, resized to ``size``."""
  h, w = image.shape[:2]
  for _ in range(10):
    area = h * w * rng.uniform(*scale)
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
    ch, cw = int(round(np.sqrt(area / aspect))), int(round(np.sqrt(area * aspect)))
    if 0 < ch <= h and 0 < cw <= w:
      y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
      return _resize(image[y : y + ch, x : x + cw], (size, size))
  return center_crop(image, size, resize_to=size)


def center_crop(image: np.ndarray, size: int, resize_to: int) -> np.ndarray:
  """Resizes the short side to ``resize_to`` and takes the central ``size x size`` crop."""
  h, w = image.shape[:2]
  scale = resize_to / min(h, w)
  image = _resize(image, (max(size, round(h * scale)), max(size, round(w * scale))))
  h, w = image.shape[:2]
  y, x = (h - size) // 2, (w - size) // 2
  return image[y : y + size, x : x + size]


@dataclasses.dataclass(frozen=True)
class Augment:
  """Which augmentations a training batch gets (evaluation batches get none)."""

  random_crop: bool = False
  crop_padding: int = 4
  flip: bool = False
  cutout: int = 0  # Side of the cutout square; 0 disables.


def _draw(rng: np.random.Generator, n: int, spec: DatasetSpec, aug: Augment) -> dict[str, Any]:
  """Every random choice of an ``n``-image batch, drawn whether or not its augmentation is on
  (so switching one on does not change the others)."""
  h, w = spec.image_shape[:2]
  return {
    "offsets": rng.integers(0, 2 * aug.crop_padding + 1, size=(n, 2)),
    "flips": rng.random(n) < 0.5,
    "centres": np.stack([rng.integers(0, h, n), rng.integers(0, w, n)], axis=1),
    "crop_seeds": rng.integers(0, 2**63, size=n),  # One generator per random-resized crop.
  }


def _train_images(images: Any, spec: DatasetSpec, aug: Augment, draws: dict) -> np.ndarray:
  """Training preprocessing of raw images (an array, or a list of variable-size ones)."""
  if isinstance(images, list):  # Variable-size images (ImageNet): crop/resize one by one.
    size, seeds = spec.image_shape[0], draws["crop_seeds"]
    images = np.stack(
      [
        random_resized_crop(im, size, np.random.default_rng(s))
        for im, s in zip(images, seeds, strict=True)
      ]
    )
  if aug.random_crop:
    images = _shift_crop(images, aug.crop_padding, draws["offsets"])
  if aug.flip:
    images = _flip_where(images, draws["flips"])
  images = _normalize(images, spec)
  if aug.cutout > 0:
    images = _cutout_at(images, aug.cutout, draws["centres"])
  return images


def normalize_eval(images: Any, spec: DatasetSpec) -> np.ndarray:
  """Evaluation preprocessing (crop/resize where needed, normalisation) of raw images."""
  if isinstance(images, list):  # Variable-size images (ImageNet): resize and center-crop.
    size = spec.image_shape[0]
    images = np.stack([center_crop(im, size, resize_to=size * 256 // 224) for im in images])
  return _normalize(images, spec)


# Batches read ahead of the step that uses them. In this process each is prepared by a thread of
# its own (numpy and PIL release the GIL for most of the work); in a worker process by one
# thread, the worker processes being the parallelism.
PREFETCH = 2


@dataclasses.dataclass(frozen=True, eq=False)
class _BatchMaker:
  """Global step and its example indices -> this process's rows of the training batch (grain's
  ``map_with_index`` transform, pickled to the worker processes)."""

  split: Split
  spec: DatasetSpec
  augment: Augment
  seed: int
  rows: slice

  def __call__(self, step: int, indices: np.ndarray) -> dict[str, np.ndarray]:
    # Drawn for the whole global batch, so a row's augmentation does not depend on the process
    # count either.
    rng = np.random.default_rng([self.seed, 1, step])
    draws = {k: v[self.rows] for k, v in _draw(rng, len(indices), self.spec, self.augment).items()}
    images, labels = self.split.get(indices[self.rows])
    batch = {"image": _train_images(images, self.spec, self.augment, draws), "label": labels}
    if self.split.clean_labels is not None:  # Label noise: the step counts flipped examples.
      batch["clean_label"] = self.split.clean_labels[indices[self.rows]]
    return batch


def shuffle_seed(seed: int) -> int:
  """grain's shuffle seed of a run: a 32-bit hash of ``seed``.

  grain shuffles epoch ``e`` with seed ``shuffle_seed + e``; hashing keeps runs of nearby seeds
  (0, 1, 2, ...) from sharing epoch orders.
  """
  return int(np.random.SeedSequence([seed, 0]).generate_state(1)[0])


class TrainBatches:
  """Seeded training batches of one process's share of the global batch, on grain.

  ``dataset`` is a ``grain.MapDataset`` whose element ``s`` is the batch of global step ``s``:
  epoch ``e = s // steps_per_epoch`` visits the examples in grain's index shuffle with seed
  ``shuffle_seed(seed) + e`` and drops its incomplete last batch; the augmentation of step ``s``
  draws from a generator seeded with ``(seed, s)``, for the whole global batch ``B``, of which
  process ``p`` of ``P`` gets rows ``[p * B / P, (p + 1) * B / P)``. So ``batch(s)`` is a pure
  function of ``(seed, s)``, whatever the number of worker processes or hosts and wherever a run
  was resumed. ``iterator`` reads the batches ahead, in ``workers`` processes (0: threads of this
  process), with a position that goes into the checkpoint.
  """

  def __init__(
    self,
    split: Split,
    spec: DatasetSpec,
    global_batch_size: int,
    seed: int,
    augment: Augment,
    process_index: int = 0,
    process_count: int = 1,
    *,
    workers: int = 0,
  ):
    if split.size < global_batch_size:
      raise ValueError(f"batch_size {global_batch_size} exceeds the {split.size} training examples")
    if workers < 0:
      raise ValueError(f"dataset.workers must be >= 0 (0: in this process), got {workers}")
    self.global_batch_size, self.workers = global_batch_size, workers
    self.steps_per_epoch = split.size // global_batch_size
    local = global_batch_size // process_count
    rows = slice(process_index * local, (process_index + 1) * local)
    self.dataset = (
      grain.MapDataset.range(split.size)
      .shuffle(seed=shuffle_seed(seed))
      .batch(global_batch_size, drop_remainder=True)  # Epoch by epoch (grain's batch does).
      .repeat()
      .map_with_index(_BatchMaker(split, spec, augment, seed, rows))
    )

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The (local part of the) training batch of global step ``step``."""
    return self.dataset[step]

  def iterator(
    self, start_step: int, end_step: int, *, state: dict[str, Any] | None = None
  ) -> TrainIterator:
    """The batches of steps ``[start_step, end_step)``, read ahead.

    Args:
      start_step, end_step: the steps to read.
      state: a ``TrainIterator.get_state()`` taken at ``start_step`` (from a checkpoint): grain's
        own iterator state is restored, its workers' positions included. Saved with another
        worker count, it cannot be: the iterator then starts afresh at ``start_step``, which
        yields the same batches.

    Raises:
      ValueError: ``state`` was taken at another step.
    """
    if state is not None and state["next_step"] != start_step:
      raise ValueError(
        f"the data position was saved at step {state['next_step']}, not {start_step}"
      )
    if state is None or state["workers"] != self.workers:
      return TrainIterator(self, start_step, end_step)
    return TrainIterator(self, state["first_step"], end_step, restore=state)


def _absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (tests, notebooks, scripts)
  reading them raises. Their defaults are what the pipeline wants."""
  from absl import flags

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


class TrainIterator:
  """Training batches of ``TrainBatches.iterator``: grain's iterator over the steps from
  ``first_step`` to ``end_step``, and the step of the next batch (``next_step``).

  ``get_state()`` (JSON-serialisable) is the position a checkpoint saves: ``first_step``,
  ``next_step``, ``workers`` and grain's own iterator state. ``close()`` stops the workers.
  """

  def __init__(
    self,
    batches: TrainBatches,
    first_step: int,
    end_step: int,
    restore: dict[str, Any] | None = None,
  ):
    self.first_step, self.end_step, self.workers = first_step, end_step, batches.workers
    dataset = batches.dataset[first_step:end_step].to_iter_dataset(
      grain.ReadOptions(num_threads=1 if self.workers else PREFETCH, prefetch_buffer_size=PREFETCH)
    )
    if self.workers:
      _absl_flags_parsed()
      dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers))
    self._iterator = iter(dataset)
    self.next_step = first_step
    if restore is not None:
      self._iterator.set_state(restore["grain"])
      self.next_step = restore["next_step"]

  def __iter__(self) -> TrainIterator:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self.next_step >= self.end_step:
      raise StopIteration
    batch = next(self._iterator)
    self.next_step += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {
      "first_step": self.first_step,
      "next_step": self.next_step,
      "workers": self.workers,
      "grain": self._iterator.get_state(),
    }

  def close(self) -> None:
    self._iterator.close()


def load_run_data(config: Any, data_dir: str, process_index: int = 0, process_count: int = 1):
  """``(spec, train_split, eval_split, batches)`` of a run's config: the eval split is the test
  split, or the held-out last ``dataset.validation_size`` training examples. With
  ``dataset.label_noise`` the training split's labels are flipped (``label_noise.flip_labels``;
  its ``clean_labels`` keeps the true ones) and the eval split is left as it is.

  Raises ``DataMissingError``, or ``ConfigError`` for sizes the data cannot serve (before anything
  is written).
  """
  spec = SPECS[config.dataset.name]
  ds = config.dataset
  train_split = load_split(ds.name, spec.train_split, data_dir, ds.source_dir, ds.train_subset)
  test_split = load_split(ds.name, spec.eval_split, data_dir, ds.source_dir, ds.test_subset)
  augment = Augment(ds.random_crop, ds.crop_padding, ds.flip, ds.cutout)
  try:
    if ds.validation_size:  # Tuning: evaluate on held-out training examples, not the test set.
      train_split, test_split = hold_out(train_split, ds.validation_size)
    if ds.label_noise:
      noisy = label_noise.flip_labels(
        train_split.labels,
        ds.label_noise,
        ds.label_noise_kind,
        spec.num_classes,
        config.seed,
        ds.name,
      )
      train_split = dataclasses.replace(
        train_split, labels=noisy.labels, clean_labels=train_split.labels
      )
    batches = TrainBatches(
      train_split,
      spec,
      config.batch_size,
      config.seed,
      augment,
      process_index,
      process_count,
      workers=ds.workers,
    )
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return spec, train_split, test_split, batches


def eval_batches(
  split: Split,
  spec: DatasetSpec,
  batch_size: int,
  process_index: int = 0,
  process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
  """Every evaluation example once, in order; the last batch is padded with ``mask == 0``."""
  local = batch_size // process_count
  for start in range(0, split.size, batch_size):
    indices = np.arange(start, start + batch_size)
    mask = (indices < split.size).astype(np.float32)
    indices = np.minimum(indices, split.size - 1)
    rows = slice(process_index * local, (process_index + 1) * local)
    images, labels = split.get(indices[rows])
    images = normalize_eval(images, spec)
    yield {"image": images, "label": labels, "mask": mask[rows]}


def corrupted_names(
  dataset: str, corruptions: Sequence[str], severities: Sequence[int]
) -> list[str]:
  """tfds names of corrupted test sets, e.g. ``fashion_mnist_corrupted/fog_3``.

  ``corrupted_names(dataset, corruptions, severities)``, every corruption at every severity,
  corruption-major; ``dataset`` is a key of ``CORRUPTIONS``.

  Raises:
    ValueError: an unknown dataset, corruption or severity.
  """
  if dataset not in CORRUPTIONS:
    raise ValueError(
      f"no corrupted test sets for dataset {dataset!r}; one of {', '.join(CORRUPTIONS)}"
    )
  known = CORRUPTIONS[dataset]
  for c in corruptions:
    if c not in known:
      raise ValueError(f"unknown {dataset} corruption {c!r}; one of {', '.join(known)}")
  for s in severities:
    if s not in CORRUPTION_SEVERITIES:
      raise ValueError(f"severity {s!r} is not one of {CORRUPTION_SEVERITIES}")
  return [f"{dataset}_corrupted/{c}_{s}" for c in corruptions for s in severities]


def load_corrupted_split(
  dataset: str,
  corruption: str,
  severity: int,
  data_dir: str,
  subset: int = 0,
  source_dir: str = "",
) -> Split:
  """The test split of ``<dataset>_corrupted/<corruption>_<severity>``.

  Fashion-MNIST-C is built into ``data_dir`` on first use (all 10k test images, from the idx
  files in ``source_dir``, default Debian's ``dataset-fashion-mnist`` folder; seconds per
  corruption and severity) and reused afterwards; CIFAR-10-C must already be prepared there.

  Args:
    dataset: a key of ``CORRUPTIONS`` (``"cifar10"`` or ``"fashion_mnist"``).
    corruption: one of ``CORRUPTIONS[dataset]``.
    severity: one of ``CORRUPTION_SEVERITIES``.
    data_dir: tfds data directory.
    subset: keep only the first ``subset`` test examples (0 = all); the build is always full.
    source_dir: folder of the clean Fashion-MNIST idx files ("" = the Debian package's).

  Raises:
    ValueError: an unknown dataset, corruption or severity.
    DataMissingError: the data is not prepared and cannot be built here (says what to do).
  """
  (name,) = corrupted_names(dataset, [corruption], [severity])
  return load_split(name, "test", data_dir, source_dir, subset)
