"""Finished cells kept with the results, so a study outlives its workdirs.

Workdirs hold checkpoints (hundreds of MB for a study) and are not committed; a study longer than
one machine's life (a session, a preempted job) would otherwise retrain every finished cell when
it continues on a fresh disk. Aggregation therefore copies each finished cell's small records
(``ARCHIVED_FILES``: the run's config, metrics and log, the runner's attempts and ``DONE.json``)
to ``RESULTS/STUDY/cells/CELL_ID/``, and a runner that finds a cell with no workdir restores it
from there, when the archived config hash is the cell's, instead of training it again.

A restored cell is ``done`` with everything the report reads; it has no checkpoint, so an
analysis of it reports ``no checkpoint`` (train it again, in a workdir of its own, to analyse it).
Its ``DONE.json`` says where it came from (``restored_from``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence

from experiments.runner.spec import Cell
from experiments.runner.state import (
  DONE_FILE,
  LOG_FILE,
  STATE_FILE,
  cell_status,
  read_json,
  write_json,
)

CELLS_DIR = "cells"
ARCHIVED_FILES = (DONE_FILE, STATE_FILE, "config.json", "metrics.jsonl", LOG_FILE)


def cell_archive(out_dir: str, cell: Cell) -> str:
  """Where ``cell``'s records are kept under a study's results folder ``out_dir``."""
  return os.path.join(out_dir, CELLS_DIR, cell.cell_id)


def archived(out_dir: str, cell: Cell) -> bool:
  """Whether ``out_dir`` keeps a finished run of ``cell`` (same config hash)."""
  done = read_json(os.path.join(cell_archive(out_dir, cell), DONE_FILE))
  return bool(done) and done.get("config_hash") == cell.config_hash


def save(out_dir: str, cells: Sequence[Cell]) -> int:
  """Copies the records of every finished cell to ``out_dir/cells/``; returns how many were
  new or changed. A cell that is not done, or was itself restored from an archive, leaves its
  archive (if any) alone."""
  changed = 0
  for cell in cells:
    if cell_status(cell) != "done":
      continue
    if "restored_from" in (read_json(os.path.join(cell.workdir, DONE_FILE)) or {}):
      continue
    dest = cell_archive(out_dir, cell)
    os.makedirs(dest, exist_ok=True)
    for name in ARCHIVED_FILES:
      src = os.path.realpath(os.path.join(cell.workdir, name))
      if not os.path.exists(src):
        continue
      target = os.path.join(dest, name)
      if not _same_bytes(src, target):
        shutil.copyfile(src, target + ".tmp")
        os.replace(target + ".tmp", target)
        changed += 1
  return changed


def restore(out_dir: str, cells: Sequence[Cell]) -> list[Cell]:
  """Recreates the workdir of every cell that has none but is archived in ``out_dir`` with its
  config hash; returns the cells restored. Existing workdirs (finished or not) are never
  touched: a workdir always wins over the archive."""
  restored = []
  for cell in cells:
    if os.path.lexists(cell.workdir) or not archived(out_dir, cell):
      continue
    src = cell_archive(out_dir, cell)
    tmp = f"{cell.workdir}.restoring-{os.getpid()}"  # Per process: runners may race here.
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name in ARCHIVED_FILES:
      if os.path.exists(os.path.join(src, name)):
        shutil.copyfile(os.path.join(src, name), os.path.join(tmp, name))
    done = read_json(os.path.join(tmp, DONE_FILE)) or {}
    done["restored_from"] = os.path.abspath(src)
    write_json(os.path.join(tmp, DONE_FILE), done)
    # One rename, so a killed runner leaves either no workdir or a whole restored one; it fails
    # when another runner restored the cell first (or started a run there), which is as good.
    try:
      os.rename(tmp, cell.workdir)
    except OSError:
      shutil.rmtree(tmp, ignore_errors=True)
      continue
    restored.append(cell)
  return restored


def _same_bytes(a: str, b: str) -> bool:
  if not os.path.exists(b) or os.path.getsize(a) != os.path.getsize(b):
    return False
  with open(a, "rb") as fa, open(b, "rb") as fb:
    return fa.read() == fb.read()
