"""Command line: ``python -m experiments.main [--config=FILE] [--config.FIELD=VALUE ...]``.

Examples::

  python -m experiments.main                       # the offline default (Fashion-MNIST)
  python -m experiments.main --config=experiments/configs/cifar10_resnet32.py \\
      --config.optimizer.name=sam --workdir=workdirs/c10_sam
  python -m experiments.main --workdir=workdirs/c10_sam --resume   # config from the workdir

Errors in the config, the workdir or the data print one line (``error: ...``) and exit with
status 2 before anything is compiled or written.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence

import ml_collections

DEFAULT_CONFIG = os.path.join(os.path.dirname(__file__), "configs", "fashion_mnist_default.py")


class UsageError(ValueError):
  """Bad command-line input."""


def load_config_file(path: str) -> ml_collections.ConfigDict:
  """Runs ``get_config()`` of a config file (a path, or a module like ``experiments.configs.x``)."""
  if not path.endswith(".py") and not os.path.exists(path):
    path = os.path.join(*path.split(".")) + ".py"
  if not os.path.isfile(path):
    raise UsageError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise UsageError(f"config file {path} has no get_config()")
  return module.get_config()


def _convert(field: str, text: str, current: object) -> object:
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
  elif isinstance(current, int):
    try:
      return int(text)
    except ValueError:
      pass
  elif isinstance(current, float):
    try:
      return float(text)
    except ValueError:
      pass
  else:
    return text
  raise UsageError(f"--config.{field}={text}: expected a {type(current).__name__}")


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> None:
  """Applies ``FIELD=VALUE`` strings (``FIELD`` dotted, e.g. ``optimizer.rho``) in place."""
  for item in overrides:
    field, sep, text = item.partition("=")
    if not sep:
      raise UsageError(f"--config.{item}: expected --config.FIELD=VALUE")
    *parents, leaf = field.split(".")
    node = config
    for part in parents:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        raise UsageError(f"unknown config field '{field}'")
      node = node[part]
    if leaf not in node or isinstance(node[leaf], ml_collections.ConfigDict):
      valid = ", ".join(
        k for k in node.keys() if not isinstance(node[k], ml_collections.ConfigDict)
      )
      raise UsageError(f"unknown config field '{field}'; fields here: {valid}")
    node[leaf] = _convert(field, text, node[leaf])


def parse_args(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, str, bool]:
  """Returns ``(config, workdir, resume)``."""
  parser = argparse.ArgumentParser(
    prog="python -m experiments.main",
    description="Train and evaluate one configuration (see experiments/configs/).",
    epilog="Override any config field with --config.FIELD=VALUE, e.g. --config.optimizer.rho=0.1",
  )
  parser.add_argument("--config", default=None, help="config file (default: the offline default)")
  parser.add_argument("--workdir", default=None, help="output folder (default: workdirs/NAME_TIME)")
  parser.add_argument("--resume", action="store_true", help="continue the run in --workdir")
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      raise UsageError(f"unrecognised argument {item}; see --help")
    overrides.append(item[len("--config.") :])
  workdir = args.workdir
  stored = os.path.join(workdir, "config.json") if workdir else None
  if args.config is None and args.resume and stored and os.path.exists(stored):
    with open(stored) as f:
      config = ml_collections.ConfigDict(json.load(f))
  else:
    config = load_config_file(args.config or DEFAULT_CONFIG)
  apply_overrides(config, overrides)
  if workdir is None:
    name = os.path.splitext(os.path.basename(args.config or DEFAULT_CONFIG))[0]
    workdir = os.path.join("workdirs", f"{name}_{time.strftime('%Y%m%d-%H%M%S')}")
  return config, workdir, args.resume


def run(argv: Sequence[str] | None = None) -> int:
  """Entry point; returns the exit status."""
  argv = sys.argv[1:] if argv is None else argv
  from experiments import input_pipeline, train

  try:
    config, workdir, resume = parse_args(argv)
    if config.get("distributed", False):
      import jax

      jax.distributed.initialize()
    train.train_and_evaluate(config, workdir, resume=resume)
  except (UsageError, train.ConfigError, input_pipeline.DataMissingError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  raise SystemExit(run())
