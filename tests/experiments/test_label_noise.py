"""Label noise: exact counts, never the true class, seeded per run and shared by the arms of a
seed, a clean evaluation split, bad values refused, and the clean/flipped accuracy split."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import input_pipeline, label_noise, metrics, optimizers, steps, train
from experiments.checks import validate_config
from experiments.configs import default
from experiments.errors import ConfigError
from tests.experiments.conftest import SUBSET, tiny_config

LABELS = np.arange(1000, dtype=np.int32) % 10


@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.4, 0.8])
@pytest.mark.parametrize("kind", label_noise.KINDS)
def test_flips_exactly_round_fraction_n_never_to_the_true_class(fraction, kind):
  noisy = label_noise.flip_labels(LABELS, fraction, kind, 10, seed=7, dataset="fashion_mnist")
  changed = np.flatnonzero(noisy.labels != LABELS)
  assert len(noisy.flipped) == round(fraction * len(LABELS))
  np.testing.assert_array_equal(changed, noisy.flipped)  # Every flipped label changed.
  if kind == "pairs":
    np.testing.assert_array_equal(
      noisy.labels[changed], np.asarray(label_noise.PAIRS["fashion_mnist"])[LABELS[changed]]
    )


def test_pairs_are_an_involution_without_fixed_points():
  pairs = np.asarray(label_noise.PAIRS["fashion_mnist"])
  np.testing.assert_array_equal(pairs[pairs], np.arange(10))
  assert np.all(pairs != np.arange(10))


def test_symmetric_noise_is_uniform_over_the_other_classes():
  labels = np.zeros(90_000, np.int32)
  noisy = label_noise.flip_labels(labels, 0.5, "symmetric", 10, seed=0, dataset="cifar10")
  counts = np.bincount(noisy.labels[noisy.flipped], minlength=10)
  assert counts[0] == 0
  # 45,000 flips over 9 classes: 5,000 each, binomial std sqrt(45000 * 1/9 * 8/9) = 66.7.
  assert np.all(np.abs(counts[1:] - 5000) < 5 * 66.7)


def test_deterministic_per_seed():
  a = label_noise.flip_labels(LABELS, 0.4, "symmetric", 10, seed=3, dataset="mnist")
  b = label_noise.flip_labels(LABELS, 0.4, "symmetric", 10, seed=3, dataset="mnist")
  c = label_noise.flip_labels(LABELS, 0.4, "symmetric", 10, seed=4, dataset="mnist")
  np.testing.assert_array_equal(a.labels, b.labels)
  assert not np.array_equal(a.flipped, c.flipped)


@pytest.mark.parametrize(
  "field, value, words",
  [
    ("label_noise", 1.0, "dataset.label_noise must be a fraction in [0, 1)"),
    ("label_noise", -0.1, "dataset.label_noise must be a fraction in [0, 1)"),
    ("label_noise", float("nan"), "dataset.label_noise must be a fraction in [0, 1)"),
    ("label_noise_kind", "asymmetric", "unknown dataset.label_noise_kind 'asymmetric'; valid: "),
  ],
)
def test_bad_values_are_refused_naming_the_field(field, value, words):
  config = default.get_config()
  config.dataset.label_noise = 0.2
  config.dataset[field] = value
  with pytest.raises(ConfigError, match="^" + re.escape(words)):
    validate_config(config)


def test_pairs_need_a_dataset_with_pairs():
  config = default.get_config()
  config.dataset.name, config.model.name = "cifar10", "resnet20"
  config.dataset.label_noise, config.dataset.label_noise_kind = 0.2, "pairs"
  with pytest.raises(ConfigError, match="label_noise_kind='pairs' has class pairs for fashion_mn"):
    validate_config(config)


def _run_data(data_dir, source_dir, **overrides):
  config = tiny_config(data_dir, source_dir, dataset__label_noise=0.4, **overrides)
  return input_pipeline.load_run_data(config, data_dir)


def test_run_data_flips_training_labels_only_the_same_for_every_arm(data_dir, fmnist_subset_dir):
  held = 128
  _, train_split, held_out, batches = _run_data(
    data_dir, fmnist_subset_dir, dataset__validation_size=held, optimizer__name="sgd"
  )
  _, clean_train, clean_held, _ = input_pipeline.load_run_data(
    tiny_config(data_dir, fmnist_subset_dir, dataset__validation_size=held), data_dir
  )
  n = SUBSET["train"] - held
  np.testing.assert_array_equal(held_out.labels, clean_held.labels)  # The eval split is clean.
  np.testing.assert_array_equal(train_split.clean_labels, clean_train.labels)
  assert np.count_nonzero(train_split.labels != clean_train.labels) == round(0.4 * n)
  # Another arm of the same seed sees the same flips; batches carry the true labels.
  _, other, _, _ = _run_data(
    data_dir, fmnist_subset_dir, dataset__validation_size=held, optimizer__name="sam"
  )
  np.testing.assert_array_equal(other.labels, train_split.labels)
  batch = batches.batch(0)
  assert set(batch) == {"image", "label", "clean_label"}
  assert np.any(batch["label"] != batch["clean_label"])


class _Linear(nn.Module):
  @nn.compact
  def __call__(self, x, train: bool = True):
    return nn.Dense(10)(x.reshape((x.shape[0], -1)))


def test_clean_and_flipped_accuracy_equal_a_hand_count():
  keys = jax.random.split(jax.random.key(0), 3)
  clean = jax.random.randint(keys[1], (64,), 0, 10)
  noisy = label_noise.flip_labels(np.asarray(clean), 0.5, "symmetric", 10, 0, "fashion_mnist")
  batch = {
    "image": jax.random.normal(keys[0], (64, 4, 4, 1)),
    "label": jnp.asarray(noisy.labels),
    "clean_label": clean,
  }
  model = _Linear()
  config = default.get_config()
  tx, _ = optimizers.create_optimizer(config, steps_per_epoch=10)
  params = model.init(keys[2], batch["image"], train=False)["params"]
  state = steps.initial_state(params, tx.init(params), {}, label_noise=True)
  step = jax.jit(steps.make_train_step(model, tx, 0, None))
  after = step(state, batch)
  # SGD's exact pass is at the step's starting parameters: count by hand there.
  predicted = np.asarray(jnp.argmax(model.apply({"params": params}, batch["image"]), -1))
  given, true = np.asarray(batch["label"]), np.asarray(clean)
  flipped = given != true
  record = metrics.train_record(after, 1, 10, 0.05, 1.0)
  assert record["accuracy_clean"] == np.mean(predicted[~flipped] == given[~flipped])
  assert record["accuracy_flipped"] == np.mean(predicted[flipped] == given[flipped])
  assert record["accuracy_flipped_true"] == np.mean(predicted[flipped] == true[flipped])
  assert record["accuracy"] == np.mean(predicted == given)


def test_trainer_records_the_flips_and_the_split_accuracies(tmp_path, data_dir, fmnist_subset_dir):
  config = tiny_config(data_dir, fmnist_subset_dir, dataset__label_noise=0.25)
  workdir = str(tmp_path / "w")
  result = train.train_and_evaluate(config, workdir)
  record = label_noise.read_record(workdir)
  _, clean, _, _ = input_pipeline.load_run_data(tiny_config(data_dir, fmnist_subset_dir), data_dir)
  expected = label_noise.flip_labels(clean.labels, 0.25, "symmetric", 10, 0, "fashion_mnist")
  assert record["flipped"] == expected.flipped.tolist()
  assert record["given_labels"] == expected.labels[expected.flipped].tolist()
  assert record["true_labels"] == clean.labels[expected.flipped].tolist()
  trains = [r for r in train.read_metrics(workdir) if r["kind"] == "train"]
  assert all(
    {"accuracy_clean", "accuracy_flipped", "accuracy_flipped_true"} <= set(r) for r in trains
  )
  assert 0.0 <= result["test_accuracy"] <= 1.0
