"""A two-cell smoke study (SGD vs SAM, 1 seed, 1 epoch of 512 images, dense small CNN).

    python -m experiments.study experiments/studies/tiny.py --results /tmp/results

About 10 s per cell on a laptop CPU; the tests run it on a small Fashion-MNIST folder with
``--config.dataset.source_dir=...``.
"""


def get_study():
  return {
    "name": "tiny",
    "description": "Smoke test of the study runner: SGD vs SAM for one short epoch.",
    "base_config": "experiments/configs/fashion_mnist_default.py",
    "fixed": {
      "num_epochs": 1,
      "dataset.train_subset": 512,
      "dataset.test_subset": 256,
      "model.name": "cnn",
      "sparse.method": "dense",
      "batch_size": 64,
      "eval_batch_size": 128,
      "log_every_steps": 4,
      "progress_bar": False,
    },
    "grid": {"optimizer.name": ["sgd", "sam"]},
    "seeds": [0],
    "group_by": ["optimizer.name"],
    "metrics": ["test_accuracy", "test_loss"],
    "target_accuracy": 0.3,
  }
