"""Finished cells kept in the results folder (``experiments.runner.archive``): a study continued
on a fresh disk restores them instead of training them again."""

from __future__ import annotations

import json
import os
import shutil

from experiments import study
from experiments.runner import archive
from tests.experiments.conftest import REPO
from tests.experiments.test_study import TWO, calls, read_csv, run_fake


def _cells(tmp_path, raw=TWO):
  return study.parse_study(raw).expand(str(tmp_path / "wd"))


def test_finished_cells_are_archived_and_restored_on_a_fresh_disk(tmp_path):
  code, lines = run_fake(tmp_path, TWO)
  assert code == 0, lines
  before = read_csv(tmp_path / "res" / "two" / "runs.csv")
  for cell in _cells(tmp_path):
    kept = tmp_path / "res" / "two" / "cells" / cell.cell_id
    assert sorted(os.listdir(kept)) == sorted(archive.ARCHIVED_FILES)
    for name in archive.ARCHIVED_FILES:
      assert (kept / name).read_bytes() == open(os.path.join(cell.workdir, name), "rb").read()

  shutil.rmtree(tmp_path / "wd")  # A new machine: the results came with the repository.
  code, lines = run_fake(tmp_path, TWO)
  assert code == 0, lines
  assert f"restored 2 finished cell(s) from {tmp_path / 'res' / 'two' / 'cells'}" in lines
  assert not any(line.startswith("start") for line in lines)
  for cell in _cells(tmp_path):
    assert not os.path.exists(os.path.join(cell.workdir, "calls.jsonl"))  # Never launched.
    done = json.load(open(os.path.join(cell.workdir, "DONE.json")))
    kept = tmp_path / "res" / "two" / "cells" / cell.cell_id
    assert done["restored_from"] == str(kept)
    assert "restored_from" not in json.load(open(kept / "DONE.json"))  # The archive is as kept.
  assert read_csv(tmp_path / "res" / "two" / "runs.csv") == before


def test_an_archive_with_another_config_hash_is_not_restored(tmp_path):
  run_fake(tmp_path, TWO)
  first, second = _cells(tmp_path)
  kept = tmp_path / "res" / "two" / "cells" / first.cell_id / "DONE.json"
  done = json.load(open(kept))
  kept.write_text(json.dumps({**done, "config_hash": "00000000"}))
  shutil.rmtree(tmp_path / "wd")
  code, lines = run_fake(tmp_path, TWO)
  assert code == 0, lines
  assert "restored 1 finished cell(s)" in " ".join(lines)
  assert [c["resume"] for c in calls(first.workdir)] == [False]  # Trained again.
  assert not os.path.exists(os.path.join(second.workdir, "calls.jsonl"))


def test_an_existing_workdir_wins_over_the_archive(tmp_path):
  raw = {**TWO, "grid": {"fake.acc": [0.9]}}
  run_fake(tmp_path, raw)
  (cell,) = _cells(tmp_path, raw)
  # The workdir of an unfinished retrain of the same cell: resumed, not replaced by the archive.
  os.remove(os.path.join(cell.workdir, "DONE.json"))
  code, lines = run_fake(tmp_path, raw)
  assert code == 0, lines
  assert not any(line.startswith("restored") for line in lines)
  assert [c["resume"] for c in calls(cell.workdir)] == [False, True]


def test_dry_run_says_what_would_be_restored_and_writes_nothing(tmp_path):
  run_fake(tmp_path, TWO)
  shutil.rmtree(tmp_path / "wd")
  code, lines = run_fake(tmp_path, TWO, "--dry-run")
  assert code == 0, lines
  would = [line.strip() for line in lines if "would restore" in line]
  assert len(would) == 2 and all(w.startswith("would restore ") for w in would)
  assert not (tmp_path / "wd").exists()


def test_each_attempt_records_the_code_it_ran(tmp_path):
  import subprocess

  import zosam_jax

  out = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True)
  head = out.stdout.strip() if out.returncode == 0 else None
  run_fake(tmp_path, TWO)
  for cell in _cells(tmp_path):
    state = json.load(open(os.path.join(cell.workdir, "study_cell.json")))
    (attempt,) = state["attempts"]
    code = attempt["code"]
    assert code["zosam_jax"] == zosam_jax.__version__
    assert code["git"] == head
    assert isinstance(code["modified"], bool) if head else code["modified"] is None
