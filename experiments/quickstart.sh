#!/usr/bin/env bash
# Sets up a fresh machine and runs the offline default experiment:
#   1. a virtual environment .venv with requirements.txt (skipped when .venv already works),
#   2. Debian's dataset-fashion-mnist package where apt-get can install it,
#   3. python -m experiments.main: a 90%-sparse small CNN (RigL) trained with ZO-SAM on
#      Fashion-MNIST for 3 epochs; prints the test accuracy.
# Extra arguments go to experiments.main, e.g. --config.num_epochs=1.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! .venv/bin/python -c "import jax, optax, flax, tensorflow_datasets, orbax.checkpoint, pytest" 2>/dev/null; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -r requirements-dev.txt -e .
fi

FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ] && command -v apt-get >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null && SUDO="sudo"
  { $SUDO apt-get install -y dataset-fashion-mnist \
    || { $SUDO apt-get update && $SUDO apt-get install -y dataset-fashion-mnist; }; } \
    || echo "note: could not install dataset-fashion-mnist; pass --config.dataset.source_dir=FOLDER"
fi

exec .venv/bin/python -m experiments.main "$@"
