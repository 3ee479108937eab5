"""Fashion-MNIST-C: determinism, effect and severity order of each corruption, the tfds build."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from experiments import corruptions as C
from experiments import input_pipeline as ip
from experiments import local_datasets

pytest.importorskip("imagecorruptions")

N = 128  # Images per corruption and severity in the sweep (of the fixture's 256 test images).
# Mean absolute pixel change is not monotone in severity for these (all CIFAR-10-C/ImageNet-C
# parameter tables, unchanged): frost lowers the image weight from severity 3 to 4 at an equal
# frost weight; frosted_glass_blur's severities 1-3 (and 4-5) differ only in blur sigma, which
# smooths the pixel jitter away; spatter switches from water (1-3) to mud (4-5). A drop of up
# to this fraction between neighbouring severities is allowed for them; every other
# corruption must not drop at all.
NON_MONOTONE_TOLERANCE = {"frost": 0.08, "frosted_glass_blur": 0.08, "spatter": 0.08}
# These draw no random numbers: the seed does not change them.
DETERMINISTIC = {
  "brightness", "contrast", "defocus_blur", "gaussian_blur", "jpeg_compression", "pixelate",
  "zoom_blur",
}  # fmt: skip


def _clean_test_set(source_dir: str) -> tuple[np.ndarray, np.ndarray]:
  images_file, labels_file = local_datasets.IDX_FILES["test"]
  images = local_datasets.read_idx(os.path.join(source_dir, images_file))
  labels = local_datasets.read_idx(os.path.join(source_dir, labels_file))
  return images, labels


@pytest.fixture(scope="module")
def clean(fmnist_subset_dir) -> np.ndarray:
  return _clean_test_set(fmnist_subset_dir)[0][:N]


@pytest.fixture(scope="module")
def sweep(clean) -> dict[tuple[str, int], np.ndarray]:
  """Every corruption at every severity of the first N real test images (seed 0)."""
  return {
    (name, s): C.corrupt(clean, name, s, seed=0)
    for name in C.FASHION_MNIST_CORRUPTIONS
    for s in C.CORRUPTION_SEVERITIES
  }


def test_names_match_cifar10_c_without_saturate():
  assert len(C.FASHION_MNIST_CORRUPTIONS) == 18
  assert set(C.FASHION_MNIST_CORRUPTIONS) == set(ip.CIFAR10_CORRUPTIONS) - {"saturate"}
  assert ip.CORRUPTIONS["fashion_mnist"] is C.FASHION_MNIST_CORRUPTIONS
  assert ip.CORRUPTION_SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", C.FASHION_MNIST_CORRUPTIONS)
def test_output_and_severity_order(name, clean, sweep):
  change = []
  for s in C.CORRUPTION_SEVERITIES:
    out = sweep[name, s]
    assert out.dtype == np.uint8 and out.shape == clean.shape  # uint8: in [0, 255] by type.
    diff = np.abs(out.astype(np.float64) - clean)
    # Changes (nearly) every image: spatter's few drops miss ~10% of images at severity 1.
    assert (diff.reshape(len(clean), -1).max(1) > 0).mean() >= 0.85, (name, s)
    change.append(diff.mean())
  assert change[-1] > change[0], (name, change)
  tolerance = NON_MONOTONE_TOLERANCE.get(name, 0.0)
  for s, (lower, higher) in enumerate(zip(change, change[1:], strict=False), start=1):
    assert higher >= lower * (1 - tolerance), (name, f"severity {s} -> {s + 1}", change)


@pytest.mark.parametrize("name", C.FASHION_MNIST_CORRUPTIONS)
def test_deterministic_per_image(name, clean, sweep):
  images = clean[:12]
  np.random.seed(123)
  before = np.random.get_state()[1].copy()
  again = C.corrupt(images, name, 5, seed=0)
  np.testing.assert_array_equal(again, sweep[name, 5][:12])  # Same seed, same bytes.
  np.testing.assert_array_equal(np.random.get_state()[1], before)  # Caller's RNG untouched.
  # Image i depends on its dataset index, not on the batch it is corrupted in.
  chunk = C.corrupt(images[4:9, ..., None], name, 5, seed=0, start_index=4)
  np.testing.assert_array_equal(chunk, sweep[name, 5][4:9])
  other_seed = C.corrupt(images, name, 5, seed=1)
  assert np.array_equal(other_seed, again) == (name in DETERMINISTIC)


def test_rejects_bad_input():
  images = np.zeros((2, 28, 28), np.uint8)
  with pytest.raises(ValueError, match="unknown Fashion-MNIST-C corruption 'saturate'"):
    C.corrupt(images, "saturate", 1)
  for severity in (0, 6):
    with pytest.raises(ValueError, match="severity"):
      C.corrupt(images, "fog", severity)
  with pytest.raises(ValueError, match="uint8"):
    C.corrupt(images.astype(np.float32), "fog", 1)


def test_corrupted_names_per_dataset():
  names = ip.corrupted_names(
    "fashion_mnist", ip.FASHION_MNIST_CORRUPTIONS, ip.CORRUPTION_SEVERITIES
  )
  assert len(names) == 90 == len(set(names)) and names[0] == "fashion_mnist_corrupted/brightness_1"
  cifar = ip.corrupted_names("cifar10", ["fog", "saturate"], [2])
  assert cifar == ["cifar10_corrupted/fog_2", "cifar10_corrupted/saturate_2"]
  with pytest.raises(ValueError, match="no corrupted test sets for dataset 'mnist'"):
    ip.corrupted_names("mnist", ["fog"], [1])
  with pytest.raises(ValueError, match="unknown fashion_mnist corruption 'saturate'"):
    ip.corrupted_names("fashion_mnist", ["saturate"], [1])
  with pytest.raises(ValueError, match="severity 6"):
    ip.corrupted_names("cifar10", ["fog"], [6])


def test_build_once_and_load(tmp_path, fmnist_subset_dir):
  """Built on first use from the fixture's 256 real test images; labels are the clean ones."""
  source_dir = str(tmp_path / "idx")
  shutil.copytree(fmnist_subset_dir, source_dir)
  images, labels = _clean_test_set(source_dir)
  data_dir = str(tmp_path / "tfds")
  split = ip.load_corrupted_split("fashion_mnist", "fog", 3, data_dir, source_dir=source_dir)
  assert split.size == len(labels) == 256
  assert split.images.shape == (256, 28, 28, 1) and split.images.dtype == np.uint8
  np.testing.assert_array_equal(split.labels, labels)
  np.testing.assert_array_equal(split.images[..., 0], C.corrupt(images, "fog", 3, C.BUILD_SEED))
  assert os.path.isdir(tmp_path / "tfds" / "fashion_mnist_corrupted" / "fog_3" / "1.0.0")
  # Built once: with the idx files gone, load_split reads the prepared copy by its tfds name.
  shutil.rmtree(source_dir)
  again = ip.load_split("fashion_mnist_corrupted/fog_3", "test", data_dir, source_dir, subset=10)
  assert again.size == 10
  np.testing.assert_array_equal(again.images, split.images[:10])
  # Another corruption needs the idx files: a clear DataMissingError, nothing half-built.
  with pytest.raises(ip.DataMissingError, match="t10k-images-idx3-ubyte.gz") as err:
    ip.load_corrupted_split("fashion_mnist", "snow", 1, data_dir, source_dir=source_dir)
  assert "apt-get install dataset-fashion-mnist" in str(err.value)
  assert not C.is_built("snow", 1, data_dir)


def test_build_cli_skips_prepared(tmp_path, fmnist_subset_dir, capsys):
  data_dir = str(tmp_path / "tfds")
  argv = ["--data_dir", data_dir, "--source_dir", fmnist_subset_dir, "--corruptions",
          "impulse_noise,contrast", "--severities", "5"]  # fmt: skip
  assert C._main(argv) == 0
  assert "built 2 datasets" in capsys.readouterr().out
  assert C.is_built("impulse_noise", 5, data_dir) and not C.is_built("impulse_noise", 4, data_dir)
  assert C._main(argv) == 0
  assert "built 0 datasets" in capsys.readouterr().out


def test_load_corrupted_split_errors(tmp_path):
  with pytest.raises(ValueError, match="unknown fashion_mnist corruption 'saturate'"):
    ip.load_corrupted_split("fashion_mnist", "saturate", 1, str(tmp_path))
  with pytest.raises(ValueError, match="not of the form"):
    ip.load_split("fashion_mnist_corrupted/fog", "test", str(tmp_path))
  with pytest.raises(ip.DataMissingError, match="tfds build cifar10_corrupted/fog_3"):
    ip.load_corrupted_split("cifar10", "fog", 3, str(tmp_path))
