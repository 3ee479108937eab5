"""Lottery tickets in the trainer: ``sparse.method=lth`` runs LTH's train-prune-rewind rounds.

Iterative magnitude pruning with rewinding (Frankle & Carbin 2019; Frankle et al. 2020) built on
``zosam_jax.sparse.LTH``'s ``prune`` and ``rewind``, with ``R = sparse.lth.rounds`` and
``k = sparse.lth.rewind_step`` (unset: 1% of the run's steps):

* round 0 trains the dense network for the whole schedule and keeps its variables (weights and
  BatchNorm statistics) at step ``k``;
* after round ``r``, ``mask = prune(trained weights, mask, round=r + 1)`` keeps the largest
  surviving weights at sparsity ``1 - (1 - s)^((r + 1) / R)`` (``sparse.sparsity_distribution``
  over the prunable leaves; masks are nested and round ``R`` reaches ``sparse.sparsity``), and
  round ``r + 1`` trains ``rewind(step-k weights, mask)`` with that mask fixed, with round 0's
  data order, optimizer and (restarted) schedule.

Each round is an ordinary run folder (``trainer.train_run``), so a killed study resumes at the
round and step where it stopped::

  WORKDIR/config.json     the run's config
  WORKDIR/metrics.jsonl   every round's records with a "round" field, rebuilt after each round:
                          the last eval record is the final round's
  WORKDIR/round_0/        the dense round: config.json, metrics.jsonl, checkpoints/, and
                          rewind.npz (params, batch_stats at step k; saved on passing step k)
  WORKDIR/round_<r>/      r = 1..R: the same, and mask.npz, the fixed mask the round trains
                          under (saved before it trains, from round r - 1's final weights)

A round whose final checkpoint exists and whose successor's mask is saved is not run again.
``dataset.eval_corrupted`` evaluates the final round only. The rounds run in the process of
``experiments.main``, inside its workdir, so the workdir's lock it holds (``workdir_lock``) covers
them; ``experiments.analyze`` of a round folder checks that lock (the run's, not the round's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import traverse_util

from experiments import input_pipeline, multihost, trainer
from experiments.checks import configure, validate_config
from experiments.errors import ConfigError
from experiments.workdir import check_workdir, read_metrics, write_config

REWIND_FILE = "rewind.npz"
MASK_FILE = "mask.npz"
DEFAULT_REWIND_FRACTION = 0.01


def round_dir(workdir: str, r: int) -> str:
  return os.path.join(workdir, f"round_{r}")


def rewind_step(config: ml_collections.ConfigDict, total_steps: int) -> int:
  """``sparse.lth.rewind_step``, or 1% of ``total_steps`` when unset.

  Raises ``ConfigError`` unless it is a step of the run, ``[0, total_steps)``.
  """
  k = config.sparse.lth.rewind_step
  if k is None:
    return int(DEFAULT_REWIND_FRACTION * total_steps)
  if not 0 <= k < total_steps:
    raise ConfigError(
      f"sparse.lth.rewind_step must be an integer in [0, {total_steps}) (a step of the "
      f"{total_steps}-step run), got {k}"
    )
  return k


def save_tree(path: str, tree: Any) -> None:
  """Writes a nested dict of arrays to ``path`` (npz, keys ``a/b/c``), atomically."""
  flat = traverse_util.flatten_dict(jax.device_get(tree), sep="/")
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, **{key: np.asarray(value) for key, value in flat.items()})
  os.replace(tmp, path)


def load_tree(path: str) -> dict[str, Any]:
  """The nested dict of numpy arrays :func:`save_tree` wrote (empty subtrees are dropped)."""
  with np.load(path) as data:
    return traverse_util.unflatten_dict({key: data[key] for key in data.files}, sep="/")


def load_mask(workdir: str, r: int) -> dict[str, Any] | None:
  """The fixed weight mask of round ``r`` (``None`` for the dense round 0)."""
  return None if r == 0 else load_tree(os.path.join(round_dir(workdir, r), MASK_FILE))


def _finished(rdir: str, total_steps: int) -> bool:
  ckpt = os.path.join(rdir, "checkpoints")
  return os.path.isdir(ckpt) and str(total_steps) in os.listdir(ckpt)


def _merge_metrics(workdir: str, rounds: int) -> None:
  """``WORKDIR/metrics.jsonl``: the records of every round so far, each with its ``round``."""
  lines = []
  for r in range(rounds + 1):
    if os.path.exists(os.path.join(round_dir(workdir, r), "metrics.jsonl")):
      lines += [
        json.dumps({**rec, "round": r}) + "\n" for rec in read_metrics(round_dir(workdir, r))
      ]
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path + ".tmp", "w") as f:
    f.writelines(lines)
  os.replace(path + ".tmp", path)


def _keep_rewind_point(path: str, k: int, enabled: bool) -> Callable[[int, dict], None]:
  """Round 0's ``state_hook``: saves the variables of step ``k`` when the run passes it."""

  def hook(step: int, state: dict) -> None:
    if enabled and step == k and not os.path.exists(path):
      save_tree(path, {"params": state["params"], "batch_stats": state["batch_stats"]})

  return hook


def train_lottery(
  config: ml_collections.ConfigDict,
  workdir: str,
  *,
  resume: bool = False,
  step_hook: Callable[[int], None] | None = None,
) -> dict[str, Any]:
  """LTH's rounds (see the module docstring) in ``workdir``.

  Args and errors as ``trainer.train_run``'s (``step_hook`` sees each round's steps); ``rounds``
  and ``rewind_step`` are checked before anything is compiled or written.

  Returns:
    The final round's result (``trainer.train_run``'s) with ``round`` (``R``) and its
    ``weight_mask``.
  """
  config = ml_collections.ConfigDict(config.to_dict())  # A private copy.
  validate_config(config)
  # The library's values before any data is read (as in ``trainer.train_run``; LTH's method does
  # not depend on the number of steps).
  method = configure(config, input_pipeline.SPECS[config.dataset.name], steps_per_epoch=1)[2]
  check_workdir(config, workdir, resume)
  multihost.barrier("check_workdir")  # Every process has read the workdir before 0 writes.
  data_dir = config.dataset.data_dir or input_pipeline.default_data_dir()
  batches = multihost.main_first(
    "load_run_data",
    lambda: input_pipeline.load_run_data(
      config, data_dir, jax.process_index(), jax.process_count()
    ),
  )[3]
  total_steps = config.num_epochs * batches.steps_per_epoch
  k = rewind_step(config, total_steps)

  is_main = multihost.is_main()
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    write_config(config, workdir)
  rounds, rewind_path = method.rounds, os.path.join(round_dir(workdir, 0), REWIND_FILE)
  mask, result = None, None
  for r in range(rounds + 1):
    rdir = round_dir(workdir, r)
    # Every process sees the same files below, so all take the same branch (prune, a computation
    # over every process's devices, or load): process 0 writes this round's mask only after every
    # process has looked.
    multihost.barrier(f"lth round {r}")
    if r > 0:  # This round's mask: saved, or pruned from the previous round's final weights.
      path = os.path.join(rdir, MASK_FILE)
      if os.path.exists(path):
        mask = load_tree(path)
      else:
        mask = jax.device_get(method.prune(result["params"], mask, round=r))
        if is_main:
          save_tree(path, mask)
    next_mask = os.path.join(round_dir(workdir, r + 1), MASK_FILE)
    if r < rounds and _finished(rdir, total_steps) and os.path.exists(next_mask):
      result = None  # Done in an earlier attempt; the next round needs only its mask.
      continue
    if is_main:
      print(
        f"LTH round {r}/{rounds}: sparsity {method.round_sparsity(r):.4f}, rewind to step {k}, "
        f"in {rdir}",
        flush=True,
      )
    round_config = ml_collections.ConfigDict(config.to_dict())
    round_config.dataset.eval_corrupted = config.dataset.eval_corrupted and r == rounds
    if r == 0:
      start = {"state_hook": _keep_rewind_point(rewind_path, k, is_main)}
    else:
      variables = load_tree(rewind_path)
      variables["params"] = method.rewind(variables["params"], mask)
      start = {"initial": variables, "weight_mask": mask}
    result = trainer.train_run(round_config, rdir, resume=True, step_hook=step_hook, **start)
    if is_main:
      _merge_metrics(workdir, rounds)
  return {**result, "round": rounds, "weight_mask": mask}
