"""The training batches as they were before the grain pipeline, kept only so that
``benchmarks.input_throughput`` can compare against them in one process. Not used by the trainer.

Epoch ``e`` visits ``permutation(seed, e)``; step ``s`` augments from a generator seeded with
``(seed, s)``, drawing for this process's rows only; one background thread prepares ``prefetch``
batches ahead. Same augmentation maths as ``experiments.input_pipeline`` (whose public functions
it calls).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from experiments import input_pipeline as ip


def _train_images(
  images: Any, spec: ip.DatasetSpec, aug: ip.Augment, rng: np.random.Generator
) -> np.ndarray:
  if isinstance(images, list):  # Variable-size images (ImageNet): crop/resize one by one.
    images = np.stack([ip.random_resized_crop(im, spec.image_shape[0], rng) for im in images])
  if aug.random_crop:
    images = ip.random_crop(images, aug.crop_padding, rng)
  if aug.flip:
    images = ip.random_flip(images, rng)
  images = ip.normalize_eval(images, spec)  # On an array: the normalisation alone.
  if aug.cutout > 0:
    images = ip.cutout(images, aug.cutout, rng)
  return images


class PreGrainBatches:
  """``batch(step)`` and a thread-prefetched ``iterate(start, end)``, as before grain."""

  def __init__(
    self,
    split: ip.Split,
    spec: ip.DatasetSpec,
    global_batch_size: int,
    seed: int,
    augment: ip.Augment,
  ):
    self.split, self.spec, self.seed, self.augment = split, spec, seed, augment
    self.global_batch_size = global_batch_size
    self.steps_per_epoch = split.size // global_batch_size
    self._perm_cache: tuple[int, np.ndarray] | None = None

  def _permutation(self, epoch: int) -> np.ndarray:
    if self._perm_cache is None or self._perm_cache[0] != epoch:
      rng = np.random.default_rng([self.seed, 0, epoch])
      self._perm_cache = (epoch, rng.permutation(self.split.size))
    return self._perm_cache[1]

  def batch(self, step: int) -> dict[str, np.ndarray]:
    epoch, i = divmod(step, self.steps_per_epoch)
    b = self.global_batch_size
    images, labels = self.split.get(self._permutation(epoch)[i * b : (i + 1) * b])
    rng = np.random.default_rng([self.seed, 1, step])
    return {"image": _train_images(images, self.spec, self.augment, rng), "label": labels}

  def iterate(self, start_step: int, end_step: int, prefetch: int = 2) -> Iterator[dict]:
    """Batches for steps ``[start_step, end_step)``, prepared by a background thread."""
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def worker() -> None:
      try:
        for step in range(start_step, end_step):
          if stop.is_set():
            return
          q.put(self.batch(step))
      except BaseException as e:  # Re-raised in the consumer.
        q.put(e)

    threading.Thread(target=worker, daemon=True).start()
    try:
      for _ in range(start_step, end_step):
        item = q.get()
        if isinstance(item, BaseException):
          raise item
        yield item
    finally:
      stop.set()
      while not q.empty():
        q.get_nowait()
