"""Input pipeline: idx parsing, the local tfds builder, tfds mock data, augmentation, seeding."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from experiments import input_pipeline as ip
from experiments import local_datasets
from tests.experiments.conftest import SUBSET, needs_fashion_mnist, write_idx


def test_read_idx_roundtrip(tmp_path):
  array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  write_idx(str(tmp_path / "x.gz"), array)
  np.testing.assert_array_equal(local_datasets.read_idx(str(tmp_path / "x.gz")), array)


def test_read_idx_rejects_garbage(tmp_path):
  (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
  with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
    local_datasets.read_idx(str(tmp_path / "bad"))


def test_local_builder_builds_once_and_reads(tmp_path, fmnist_subset_dir):
  data_dir = str(tmp_path / "tfds")
  train = ip.load_split("fashion_mnist", "train", data_dir, fmnist_subset_dir)
  test = ip.load_split("fashion_mnist", "test", data_dir, fmnist_subset_dir)
  assert (train.size, test.size) == (SUBSET["train"], SUBSET["test"])
  assert train.images.shape == (SUBSET["train"], 28, 28, 1) and train.images.dtype == np.uint8
  raw = local_datasets.read_idx(os.path.join(fmnist_subset_dir, "train-images-idx3-ubyte.gz"))
  np.testing.assert_array_equal(train.images[..., 0], raw)
  assert set(np.unique(train.labels)) <= set(range(10))
  # Built once: with the source folder gone, the prepared copy is reused.
  again = ip.load_split("fashion_mnist", "train", data_dir, str(tmp_path / "nowhere"))
  np.testing.assert_array_equal(again.images, train.images)


@needs_fashion_mnist
def test_real_fashion_mnist_from_debian_package(tmp_path):
  """The full dataset from the Debian package's own folder (the default source_dir)."""
  data_dir = str(tmp_path / "tfds")
  test = ip.load_split("fashion_mnist", "test", data_dir)
  assert test.size == 10_000
  np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), [1000] * 10)
  mean = test.images.mean() / 255.0
  assert abs(mean - ip.SPECS["fashion_mnist"].mean[0]) < 0.01


def test_missing_local_data_names_the_command(tmp_path):
  with pytest.raises(ip.DataMissingError) as err:
    ip.load_split("mnist", "train", str(tmp_path / "tfds"), str(tmp_path / "empty"))
  message = str(err.value)
  assert "train-images-idx3-ubyte.gz" in message and "--config.dataset.source_dir" in message
  assert "\n" not in message
  assert not os.path.exists(tmp_path / "tfds" / "local_mnist" / "1.0.0")


def test_missing_fashion_mnist_names_apt_get(tmp_path):
  with pytest.raises(ip.DataMissingError, match="apt-get install dataset-fashion-mnist"):
    ip.load_split("fashion_mnist", "train", str(tmp_path / "tfds"), str(tmp_path / "empty"))


@pytest.mark.parametrize("name", ["cifar10", "imagenet2012", "cifar10_corrupted/fog_3"])
def test_missing_tfds_data_names_the_command(tmp_path, name):
  with pytest.raises(ip.DataMissingError) as err:
    ip.load_split(name, "test" if "cifar" in name else "validation", str(tmp_path))
  message = str(err.value)
  assert "tfds build" in message and "--file_format=array_record" in message
  if name == "imagenet2012":
    assert "manual" in message


@pytest.mark.parametrize(
  "name,split,shape,classes",
  [
    ("cifar10", "train", (32, 32, 3), 10),
    ("cifar100", "train", (32, 32, 3), 100),
    ("cifar10_corrupted/gaussian_noise_5", "test", (32, 32, 3), 10),
  ],
)
def test_cifar_paths_on_mock_data(tmp_path, name, split, shape, classes):
  with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
    data = ip.load_split(name, split, str(tmp_path))
  assert data.size == 40 and data.images.shape == (40, *shape)
  assert data.labels.min() >= 0 and data.labels.max() < classes
  spec = ip.SPECS["cifar10"]
  aug = ip.Augment(random_crop=True, crop_padding=4, flip=True, cutout=16)
  batches = ip.TrainBatches(data, spec, 16, seed=3, augment=aug)
  batch = batches.batch(1)
  assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
  evals = list(ip.eval_batches(data, spec, 32))
  assert [b["mask"].sum() for b in evals] == [32, 8]


def test_imagenet_path_on_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
    data = ip.load_split("imagenet2012", "train", str(tmp_path))
    spec = ip.SPECS["imagenet2012"]
    assert data.images is None and data.size == 6  # Streamed, not held in memory.
    batches = ip.TrainBatches(data, spec, 4, seed=0, augment=ip.Augment(flip=True))
    train_batch = batches.batch(0)
    eval_batch = next(ip.eval_batches(data, spec, 4))
  assert train_batch["image"].shape == (4, 224, 224, 3)
  assert eval_batch["image"].shape == (4, 224, 224, 3)


def test_batches_are_a_function_of_seed_and_step():
  rng = np.random.default_rng(0)
  split = ip.Split(100, rng.integers(0, 255, (100, 8, 8, 3), np.uint8), np.arange(100) % 10)
  spec = ip.SPECS["cifar10"]
  aug = ip.Augment(random_crop=True, crop_padding=2, flip=True, cutout=4)
  a = ip.TrainBatches(split, spec, 10, seed=1, augment=aug)
  b = ip.TrainBatches(split, spec, 10, seed=1, augment=aug)
  c = ip.TrainBatches(split, spec, 10, seed=2, augment=aug)
  assert a.steps_per_epoch == 10
  for step in (0, 7, 13):
    np.testing.assert_array_equal(a.batch(step)["image"], b.batch(step)["image"])
  assert not np.array_equal(a.batch(0)["label"], c.batch(0)["label"])
  # An epoch visits every example once; the next epoch reorders them.
  epoch0 = np.concatenate([a.batch(s)["label"] for s in range(10)])
  np.testing.assert_array_equal(np.sort(epoch0), np.sort(split.labels))
  assert not np.array_equal(a.batch(0)["label"], a.batch(10)["label"])
  # The prefetching iterator yields exactly batch(step).
  for step, batch in zip(range(5, 9), a.iterator(5, 9), strict=True):
    np.testing.assert_array_equal(batch["image"], a.batch(step)["image"])


def test_process_shards_partition_the_global_batch():
  """Process p of P gets rows [p B/P, (p+1) B/P) of the global batch, augmented as there."""
  rng = np.random.default_rng(0)
  split = ip.Split(64, rng.integers(0, 255, (64, 8, 8, 3), np.uint8), np.arange(64))
  spec = ip.DatasetSpec("x", 10, (8, 8, 3), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  aug = ip.Augment(random_crop=True, crop_padding=2, flip=True, cutout=4)
  full = ip.TrainBatches(split, spec, 16, seed=0, augment=aug).batch(2)
  parts = [
    ip.TrainBatches(split, spec, 16, 0, aug, process_index=p, process_count=4).batch(2)
    for p in range(4)
  ]
  for key in ("label", "image"):
    np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), full[key])


def test_augmentations():
  rng = np.random.default_rng(0)
  images = rng.integers(1, 255, (32, 8, 8, 1)).astype(np.float32)
  cropped = ip.random_crop(images, 2, np.random.default_rng(1))
  assert cropped.shape == images.shape
  # Each crop is a shifted window of the zero-padded image.
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
  for i in range(4):
    hits = [
      np.array_equal(cropped[i], padded[i, y : y + 8, x : x + 8])
      for y in range(5)
      for x in range(5)
    ]
    assert any(hits)
  flipped = ip.random_flip(images, np.random.default_rng(2))
  same = [np.array_equal(flipped[i], images[i]) for i in range(32)]
  mirrored = [np.array_equal(flipped[i], images[i, :, ::-1]) for i in range(32)]
  assert all(s or m for s, m in zip(same, mirrored, strict=True)) and 0 < sum(mirrored) < 32
  cut = ip.cutout(images, 4, np.random.default_rng(3))
  zeros = (cut == 0).reshape(32, -1).sum(1)
  assert zeros.max() == 16 and zeros.min() >= 4  # A 4x4 square, clipped at borders.
  assert ip.random_resized_crop(np.zeros((40, 60, 3), np.uint8), 16, rng).shape == (16, 16, 3)
  assert ip.center_crop(np.zeros((40, 60, 3), np.uint8), 16, 18).shape == (16, 16, 3)


def test_corrupted_names_cover_19_by_5():
  names = ip.corrupted_names("cifar10", ip.CIFAR10_CORRUPTIONS, ip.CORRUPTION_SEVERITIES)
  assert len(names) == 95 and len(set(names)) == 95 and "cifar10_corrupted/fog_3" in names
