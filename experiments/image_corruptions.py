"""Fashion-MNIST-C's corruptions: the CIFAR-10-C families on the real Fashion-MNIST test set.

``corrupt(images, name, severity, seed)`` corrupts ``uint8 [N, 28, 28]`` images
deterministically (numpy only). The datasets made from it (``fashion_mnist_corrupted``, built
by ``local_datasets.FashionMnistCorrupted``) and their command line are
``experiments.corruptions``'s.

Source of the corruption code: the ``imagecorruptions`` package (PyPI, 1.1.2: the ImageNet-C
code of Hendrycks & Dietterich 2019 as packaged by Michaelis et al. 2019). Checked here,
offline, with numpy 2.4 / scikit-image 0.26 / scipy 1.17 / opencv-python 5.0, on 28x28 images
padded to 32x32 and replicated to RGB: 15 of its 19 corruptions run as shipped; ``glass_blur``
and ``gaussian_blur`` crash (they pass skimage's removed ``multichannel=``), ``fog`` crashes
(``np.float_``, removed in numpy 2). On 2-D greyscale input ``motion_blur`` crashes too (an
``IndexError`` in its greyscale branch). ``impulse_noise`` runs but is not reproducible (it
calls ``skimage.util.random_noise``, which draws from its own unseeded generator, not
``np.random``). Nothing needs Wand/ImageMagick (its motion blur is a numpy port of
ImageMagick's) and the frost photographs ship inside the package.

Adaptation to 28x28 greyscale (every corruption): each image is zero-padded by 2 pixels to
32x32 (the library refuses sides < 32; black is Fashion-MNIST's own background, so this is the
same object on a larger canvas, and no resampling touches the clean pixels), corrupted as a
2-D greyscale image (the library's greyscale code paths: noise is drawn once per pixel, not per
replicated RGB channel and then averaged away), cropped back to the central 28x28 and
converted with ``np.uint8(np.clip(x, 0, 255))`` (truncation, as the library's ``corrupt`` and
the CIFAR-10-C / ImageNet-C scripts do). Global statistics (``contrast``'s mean, ``fog``'s
max) are those of the padded 32x32 image.

The 18 corruptions are CIFAR-10-C's 19, named as in tfds' ``cifar10_corrupted``, minus
``saturate`` (the identity on greyscale: a grey pixel has saturation 0). The rule for their
parameters: a parameter that is relative to the image (an intensity, a zoom factor, a JPEG
quality, a pixelation fraction, a fractal the size of the image) keeps the library's
ImageNet-C value; one that is in pixels (blur radii, swap distances, displacement smoothing,
flake and frost-texture scale) takes CIFAR-10-C's value (Hendrycks' ``make_cifar_c.py``, made
for 32x32 images), because ImageNet-C's are pixels of 224x224 images: at 32x32 its
``defocus_blur`` (disk radius 3-10 px) and ``glass_blur`` leave no recognisable object even at
severity 1, ``gaussian_blur`` (sigma 1-6) and ``motion_blur`` (radius 10-20) little more, its
``snow`` streaks and ``frost`` texture come out several times too coarse, and the library's
``elastic_transform`` (displacement smoothing 0.01 x side = 0.3 px) scatters pixels like noise.

* The library's functions, unchanged (ImageNet-C tables): ``gaussian_noise``, ``shot_noise``,
  ``speckle_noise``, ``zoom_blur``, ``brightness``, ``contrast``, ``pixelate``,
  ``jpeg_compression``, ``spatter`` (its drop sizes are in pixels, so the drops are relatively
  larger than on ImageNet; they look plausible at 32x32 and were kept), and ``fog`` (run with
  ``np.float_`` supplied to the library module only).
* ``impulse_noise``: ImageNet-C's amounts 0.03, 0.06, 0.09, 0.17, 0.27, written here with
  ``np.random``: each pixel becomes salt (255) or pepper (0) with that probability, half each.
* Written here, following CIFAR-10-C's definitions, with its tables (reusing the library's
  helpers ``disk``, ``_motion_blur``, ``clipped_zoom`` and frost photographs):

  - ``defocus_blur``: the anti-aliased ``disk`` kernel, (radius, alias sigma) = (0.3, 0.4),
    (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1).
  - ``gaussian_blur``: sigma 0.4, 0.6, 0.7, 0.8, 1.0.
  - ``frosted_glass_blur``: blur (sigma), ``iterations`` passes of local pixel jitter, blur
    again; (sigma, delta, iterations) = (0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2),
    (0.4, 1, 2). The jitter is what the original computes on RGB arrays: each interior pixel,
    visited bottom-right to top-left, takes the value of the neighbour at an offset drawn from
    ``[-delta, delta)`` per axis (its tuple "swap" of numpy views copies one way only).
  - ``motion_blur``: ``_motion_blur`` with (radius, sigma) = (6, 1), (6, 1.5), (6, 2), (8, 2),
    (9, 2.5), angle uniform in [-45, 45] degrees.
  - ``snow``: Gaussian flake noise, zoomed, thresholded, motion-blurred (angle in
    [-135, -45]) and added twice (once rotated by 180 degrees) to the whitened image, with
    CIFAR-10-C's seven-column table (``_SNOW``).
  - ``frost``: ``w_image * x + w_frost * crop`` of one of the library's first five frost
    photographs, in greyscale, shrunk by 5 (as CIFAR-10-C does), cropped at random; weights
    (1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45).
  - ``elastic``: a random affine map (three control points moved by up to ``a`` px), then a
    smooth displacement field (uniform noise smoothed by a Gaussian of sigma ``s``, scaled by
    ``alpha``): (alpha, s) = 32 x (0, 0), (0.05, 0.2), (0.08, 0.06), (0.1, 0.04), (0.1, 0.03)
    as in CIFAR-10-C, but ``a`` = 32 x (0.03, 0.05, 0.06, 0.07, 0.08), CIFAR-10-C's jitter
    column in increasing order (it decreases there, 0.08 to 0.03; with it, the mean absolute
    pixel change fell from 28 at severity 1 to 19 at severity 5 on the first 256 test images,
    now it rises from 14 to 29).

Severity order: the mean absolute pixel change grows with severity for every corruption
except three whose (unchanged) tables trade one effect against another, where it can drop a
little between neighbouring severities: ``frost`` 3 -> 4 (less image weight, same frost
weight; about -5%), ``frosted_glass_blur`` 1 -> 2 -> 3 and 4 -> 5 (only the blur grows, and it
smooths the jitter; under 1% and about -4%), ``spatter`` 3 -> 4 (water becomes mud; about
equal, the sign depends on the sample). See tests/experiments/test_corruptions.py.

Seeding: before each image the corruption seeds numpy's global legacy generator (the library
draws from ``np.random``) with ``(seed, crc32(name), severity, index)``, where ``index`` is the
image's position in the test set (``start_index + i``), and restores the caller's global state
afterwards. So an image's corruption depends only on its pixels and those four values: the
first ``N`` images of a full build equal a build of ``N`` images, and chunks can be corrupted
in any order or in parallel. The built datasets use ``seed=BUILD_SEED`` (0).
"""

from __future__ import annotations

import contextlib
import functools
import types
import warnings
import zlib
from collections.abc import Callable, Iterator

import numpy as np

# tfds' cifar10_corrupted names (experiments.input_pipeline.CIFAR10_CORRUPTIONS) minus
# "saturate"; same order.
FASHION_MNIST_CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic", "fog", "frost", "frosted_glass_blur",
    "gaussian_blur", "gaussian_noise", "impulse_noise", "jpeg_compression", "motion_blur",
    "pixelate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)  # fmt: skip
# The severity levels of CIFAR-10-C and ImageNet-C (every parameter table has five rows).
CORRUPTION_SEVERITIES = (1, 2, 3, 4, 5)
BUILD_SEED = 0  # The seed of the datasets `corruptions.build` writes.

_PAD = 2  # 28 + 2 * 2 = 32, the library's minimum side.

# Corruptions run by the library's own functions (same names there), parameters unchanged.
_FROM_LIBRARY = (
    "brightness", "contrast", "fog", "gaussian_noise", "jpeg_compression", "pixelate",
    "shot_noise", "spatter", "speckle_noise", "zoom_blur",
)  # fmt: skip

# Parameter tables of the corruptions written here (see the module docstring).
_IMPULSE_AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)  # ImageNet-C.
_DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))  # CIFAR-10-C.
_GAUSSIAN_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)  # CIFAR-10-C.
# CIFAR-10-C; delta = 1 throughout (_frosted_glass_blur relies on it).
_GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))
_MOTION = ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5))  # CIFAR-10-C.
_SNOW = (  # CIFAR-10-C: (mean, std, zoom, threshold, blur radius, blur sigma, image weight).
  (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95),
  (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9),
  (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
  (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85),
  (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8),
)
_FROST = ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # CIFAR-10-C.
_FROST_SCALE = 0.2  # CIFAR-10-C shrinks the frost photographs by 5 before cropping.
# (alpha, sigma, affine jitter) in pixels: CIFAR-10-C's values (32 x fractions), with the
# affine-jitter column in increasing order (CIFAR-10-C's decreases: 0.08 ... 0.03).
_ELASTIC = tuple(
  (32 * a, 32 * s, 32 * j)
  for a, s, j in ((0, 0, 0.03), (0.05, 0.2, 0.05), (0.08, 0.06, 0.06), (0.1, 0.04, 0.07),
                  (0.1, 0.03, 0.08))
)  # fmt: skip


class _NumpyWithFloat_(types.ModuleType):
  """numpy, plus the ``np.float_`` alias numpy 2 removed; seen only by the library module."""

  def __getattr__(self, name: str):
    return getattr(np, name)


@functools.cache
def _library() -> types.ModuleType:
  """``imagecorruptions.corruptions``, imported once, with ``np.float_`` supplied to it.

  Raises:
    ImportError: the package is not installed (says how to install it).
  """
  try:
    with warnings.catch_warnings():  # pkg_resources and scipy.ndimage.interpolation warn.
      warnings.simplefilter("ignore")
      from imagecorruptions import corruptions as library
  except ImportError as e:
    raise ImportError(
      f"Fashion-MNIST-C needs the imagecorruptions package ({e}): "
      "pip install 'imagecorruptions>=1.1.2,<1.2' 'setuptools<82'"
    ) from e
  if not isinstance(library.np, _NumpyWithFloat_):
    shim = _NumpyWithFloat_("numpy")
    shim.float_ = np.float64  # Used by plasma_fractal (fog) only.
    library.np = shim
  return library


def check_installed() -> None:
  """Raises ``ImportError`` (saying how to install it) when imagecorruptions is missing."""
  _library()


def _from_library(name: str) -> Callable[[np.ndarray, int], np.ndarray]:
  def run(x: np.ndarray, severity: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(getattr(_library(), name)(Image.fromarray(x), severity), np.float64)

  return run


def _impulse_noise(x: np.ndarray, severity: int) -> np.ndarray:
  amount = _IMPULSE_AMOUNT[severity - 1]
  hit = np.random.random_sample(x.shape) < amount
  salt = np.random.random_sample(x.shape) < 0.5
  out = x.astype(np.float64)
  out[hit & salt] = 255.0
  out[hit & ~salt] = 0.0
  return out


def _gaussian(x: np.ndarray, sigma: float, **kwargs) -> np.ndarray:
  from skimage.filters import gaussian

  return gaussian(x, sigma=sigma, channel_axis=None, **kwargs)


def _gaussian_blur(x: np.ndarray, severity: int) -> np.ndarray:
  return _gaussian(x / 255.0, _GAUSSIAN_SIGMA[severity - 1]) * 255.0


def _defocus_blur(x: np.ndarray, severity: int) -> np.ndarray:
  import cv2

  radius, alias_blur = _DEFOCUS[severity - 1]
  kernel = _library().disk(radius=radius, alias_blur=alias_blur)
  return cv2.filter2D((x / 255.0).astype(np.float32), -1, kernel).astype(np.float64) * 255.0


def _frosted_glass_blur(x: np.ndarray, severity: int) -> np.ndarray:
  sigma, delta, iterations = _GLASS[severity - 1]
  h, w = x.shape
  pixels = np.uint8(_gaussian(x / 255.0, sigma) * 255.0)
  for _ in range(iterations):
    # The original visits interior pixels bottom-right to top-left and "swaps" pixel (r, c)
    # with (r + dy, c + dx), dy, dx in [-delta, delta). On RGB arrays that tuple swap of
    # numpy views copies one way only: (r, c) takes the neighbour's value, the neighbour
    # keeps its own. With delta = 1 the neighbour is up/left, not yet visited, so one pass is
    # a gather from the previous pass's image.
    offsets = np.random.randint(-delta, delta, size=(h - 2 * delta, w - 2 * delta, 2))
    rows = np.arange(h - delta, delta, -1)[:, None] + offsets[..., 0]
    cols = np.arange(w - delta, delta, -1)[None, :] + offsets[..., 1]
    inner = pixels[rows, cols]
    pixels = pixels.copy()
    pixels[h - delta : delta : -1, w - delta : delta : -1] = inner
  return _gaussian(pixels / 255.0, sigma) * 255.0


def _motion_blur(x: np.ndarray, severity: int) -> np.ndarray:
  radius, sigma = _MOTION[severity - 1]
  angle = np.random.uniform(-45, 45)
  return _library()._motion_blur(x.astype(np.float64), radius=radius, sigma=sigma, angle=angle)


def _snow(x: np.ndarray, severity: int) -> np.ndarray:
  mean, std, zoom, threshold, radius, sigma, weight = _SNOW[severity - 1]
  library = _library()
  image = x / 255.0
  h, w = image.shape
  flakes = np.random.normal(size=(h, w), loc=mean, scale=std)
  flakes = library.clipped_zoom(flakes[..., None], zoom)[..., 0]
  top, left = (flakes.shape[0] - h) // 2, (flakes.shape[1] - w) // 2
  flakes = flakes[top : top + h, left : left + w]
  flakes[flakes < threshold] = 0
  flakes = np.uint8(np.clip(flakes, 0, 1) * 255) / 255  # The original passes a uint8 PNG.
  angle = np.random.uniform(-135, -45)
  flakes = library._motion_blur(flakes, radius=radius, sigma=sigma, angle=angle)
  flakes = np.round(np.clip(flakes, 0, 1) * 255) / 255
  # Whiten towards 1.5 x grey + 0.5 (for a grey image the grey value is the pixel itself).
  image = weight * image + (1 - weight) * np.maximum(image, image * 1.5 + 0.5)
  return (image + flakes + np.rot90(flakes, k=2)) * 255.0


@functools.cache
def _frost_images() -> tuple[np.ndarray, ...]:
  """The library's frost photographs, greyscale, shrunk by ``_FROST_SCALE``."""
  import glob
  import os

  import cv2

  folder = os.path.join(os.path.dirname(_library().__file__), "frost")
  paths = sorted(glob.glob(os.path.join(folder, "frost*")))
  if len(paths) != 6:
    raise FileNotFoundError(f"expected frost1..6 images in {folder}, found {paths}")
  images = [cv2.imread(path, cv2.IMREAD_GRAYSCALE) for path in paths]
  return tuple(
    cv2.resize(im, (0, 0), fx=_FROST_SCALE, fy=_FROST_SCALE).astype(np.float64) for im in images
  )


def _frost(x: np.ndarray, severity: int) -> np.ndarray:
  image_weight, frost_weight = _FROST[severity - 1]
  frost = _frost_images()[np.random.randint(5)]  # The original draws from the first five.
  h, w = x.shape
  top, left = np.random.randint(0, frost.shape[0] - h), np.random.randint(0, frost.shape[1] - w)
  return image_weight * x + frost_weight * frost[top : top + h, left : left + w]


def _elastic(x: np.ndarray, severity: int) -> np.ndarray:
  import cv2
  from scipy.ndimage import map_coordinates

  alpha, sigma, jitter = _ELASTIC[severity - 1]
  image = (x / 255.0).astype(np.float32)
  h, w = image.shape
  # Random affine map: move three points around the centre by up to `jitter` pixels.
  centre, half = np.float32([h // 2, w // 2]), min(h, w) // 3
  src = np.float32([centre + half, [centre[0] + half, centre[1] - half], centre - half])
  dst = src + np.random.uniform(-jitter, jitter, size=src.shape).astype(np.float32)
  affine = cv2.getAffineTransform(src, dst)
  image = cv2.warpAffine(image, affine, (w, h), borderMode=cv2.BORDER_REFLECT_101)
  # Smooth random displacement field (zero at severity 1, where alpha = 0).
  dx, dy = np.zeros((h, w)), np.zeros((h, w))
  if sigma > 0:
    noise = np.random.uniform(-1, 1, size=(2, h, w))
    dx = _gaussian(noise[0], sigma, mode="reflect", truncate=3) * alpha
    dy = _gaussian(noise[1], sigma, mode="reflect", truncate=3) * alpha
  ys, xs = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
  coords = np.stack([ys + dy, xs + dx])
  return map_coordinates(image, coords, order=1, mode="reflect") * 255.0


_FUNCTIONS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
  **{name: _from_library(name) for name in _FROM_LIBRARY},
  "impulse_noise": _impulse_noise,
  "defocus_blur": _defocus_blur,
  "gaussian_blur": _gaussian_blur,
  "frosted_glass_blur": _frosted_glass_blur,
  "motion_blur": _motion_blur,
  "elastic": _elastic,
  "snow": _snow,
  "frost": _frost,
}
assert set(_FUNCTIONS) == set(FASHION_MNIST_CORRUPTIONS)


def check(name: str, severity: int) -> None:
  """Raises ``ValueError`` for an unknown corruption name or severity."""
  if name not in FASHION_MNIST_CORRUPTIONS:
    raise ValueError(
      f"unknown Fashion-MNIST-C corruption {name!r}; one of {', '.join(FASHION_MNIST_CORRUPTIONS)}"
    )
  if severity not in CORRUPTION_SEVERITIES:
    raise ValueError(f"severity {severity!r} is not one of {CORRUPTION_SEVERITIES}")


@contextlib.contextmanager
def _global_numpy_rng_restored() -> Iterator[None]:
  state = np.random.get_state()
  try:
    yield
  finally:
    np.random.set_state(state)


def corrupt(
  images: np.ndarray, name: str, severity: int, seed: int = BUILD_SEED, start_index: int = 0
) -> np.ndarray:
  """Corrupts ``uint8 [N, 28, 28]`` images; returns ``uint8 [N, 28, 28]``.

  Deterministic: image ``i`` depends only on its pixels and
  ``(seed, name, severity, start_index + i)`` (see the module docstring).

  Args:
    images: ``uint8 [N, 28, 28]`` (or ``[N, 28, 28, 1]``; the output drops the channel axis).
    name: one of ``FASHION_MNIST_CORRUPTIONS``.
    severity: one of ``CORRUPTION_SEVERITIES``.
    seed: a non-negative integer below 2**32.
    start_index: the index of ``images[0]`` in its dataset (for corrupting in chunks).
  """
  check(name, severity)
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  if images.dtype != np.uint8 or images.ndim != 3:
    raise ValueError(f"expected uint8 [N, H, W] images, got {images.dtype} {images.shape}")
  function = _FUNCTIONS[name]
  key = zlib.crc32(name.encode())
  out = np.empty_like(images)
  p = _PAD
  with _global_numpy_rng_restored(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for i, image in enumerate(images):
      np.random.seed([seed, key, severity, start_index + i])
      y = function(np.pad(image, p), severity)
      out[i] = np.uint8(np.clip(y[p:-p, p:-p], 0, 255))
  return out
