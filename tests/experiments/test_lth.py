"""LTH's outer loop in the trainer (``sparse.method=lth``, ``experiments/lottery.py``) on the tiny
config (512 images, 8 steps per round): 2 pruning rounds, rewinding to step 2, global
magnitude pruning."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from experiments import lottery, train, trainer
from experiments import main as cli
from tests.experiments.conftest import tiny_config
from zosam_jax import sparse

ROUNDS, K, STEPS, SPARSITY = 2, 2, 8, 0.9
LTH = {
  "sparse__method": "lth",
  "sparse__sparsity": SPARSITY,
  "sparse__sparsity_distribution": "global",
  "sparse__lth__rounds": ROUNDS,
  "sparse__lth__rewind_step": K,
  "checkpoint_every_steps": 4,
}


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in train.TIMING_KEYS} for r in records]


def _copy(tree):
  return jax.tree.map(np.array, jax.device_get(tree))  # np.array copies (no view of a buffer)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def lth_run(tmp_path_factory, data_dir, fmnist_subset_dir):
  """One uninterrupted LTH run, and the params of every (round, step), captured by wrapping the
  rounds' ``trainer.train_run`` with a ``state_hook`` (step 0: the state a round starts from)."""
  workdir = str(tmp_path_factory.mktemp("lth") / "run")
  seen = {}
  real = trainer.train_run

  def spy(config, rdir, **kwargs):
    r = int(os.path.basename(rdir).removeprefix("round_"))
    inner = kwargs.get("state_hook")

    def hook(step, state):
      if inner is not None:
        inner(step, state)
      seen[r, step] = _copy(state["params"])

    return real(config, rdir, **{**kwargs, "state_hook": hook})

  patch = pytest.MonkeyPatch()
  patch.setattr(trainer, "train_run", spy)  # Where lottery calls it.
  try:
    result = train.train_and_evaluate(tiny_config(data_dir, fmnist_subset_dir, **LTH), workdir)
  finally:
    patch.undo()
  return workdir, result, seen


def test_rounds_are_run_folders_and_metrics_carry_the_round(lth_run):
  workdir, result, _ = lth_run
  names = sorted(n for n in os.listdir(workdir) if n.startswith("round_"))
  assert names == [f"round_{r}" for r in range(ROUNDS + 1)]
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["sparse"]["lth"] == {"rounds": ROUNDS, "rewind_step": K}
  merged = train.read_metrics(workdir)
  assert [r["round"] for r in merged if r["kind"] == "eval"] == list(range(ROUNDS + 1))
  for r in range(ROUNDS + 1):
    rdir = lottery.round_dir(workdir, r)
    assert max(int(d) for d in os.listdir(os.path.join(rdir, "checkpoints"))) == STEPS
    assert os.path.exists(os.path.join(rdir, "config.json"))
    own = [{**rec, "round": r} for rec in train.read_metrics(rdir)]
    assert own == [rec for rec in merged if rec["round"] == r]
  # The same schedule, restarted every round.
  rates = [
    [x["learning_rate"] for x in merged if x["kind"] == "train" and x["round"] == r]
    for r in (0, 1, 2)
  ]
  assert rates[0] == rates[1] == rates[2] and len(rates[0]) == 2
  last_eval = [rec for rec in merged if rec["kind"] == "eval"][-1]
  assert last_eval["round"] == ROUNDS == result["round"]
  assert last_eval["test_accuracy"] == result["test_accuracy"] > 0.2


def test_masks_keep_the_round_sparsity_by_magnitude_and_are_nested(lth_run):
  workdir, result, seen = lth_run
  prunable = [x.ndim >= 2 for x in _leaves(seen[0, 0])]
  total = sum(x.size for x, p in zip(_leaves(seen[0, 0]), prunable, strict=True) if p)
  method = sparse.lth(SPARSITY, rounds=ROUNDS, sparsity_distribution="global")
  previous = [np.ones(x.shape, bool) for x in _leaves(seen[0, 0])]
  assert lottery.load_mask(workdir, 0) is None  # Round 0 is dense.
  for r in range(1, ROUNDS + 1):
    mask = _leaves(lottery.load_mask(workdir, r))
    kept = sum(int(m.sum()) for m, p in zip(mask, prunable, strict=True) if p)
    expected = round((1 - SPARSITY) ** (r / ROUNDS) * total)  # s_r = 1 - (1 - s)^(r / R)
    assert kept == expected == sparse.keep_counts([(total,)], method.round_sparsity(r), "global")
    assert all(m.all() for m, p in zip(mask, prunable, strict=True) if not p)
    assert all(not (m & ~prev).any() for m, prev in zip(mask, previous, strict=True))  # nested
    # Magnitude: every kept weight is at least as large as every survivor pruned now.
    trained = _leaves(seen[r - 1, STEPS])
    kept_abs = np.concatenate(
      [np.abs(w[m]) for w, m, p in zip(trained, mask, prunable, strict=True) if p]
    )
    cut = np.concatenate(
      [
        np.abs(w[prev & ~m])
        for w, m, prev, p in zip(trained, mask, previous, prunable, strict=True)
        if p
      ]
    )
    assert kept_abs.min() >= cut.max()
    previous = mask
  for a, b in zip(_leaves(result["weight_mask"]), previous, strict=True):
    np.testing.assert_array_equal(a, b)


def test_rounds_rewind_survivors_to_step_k_and_pruned_weights_stay_zero(lth_run):
  workdir, result, seen = lth_run
  rewind = lottery.load_tree(os.path.join(lottery.round_dir(workdir, 0), lottery.REWIND_FILE))
  for a, b in zip(_leaves(rewind["params"]), _leaves(seen[0, K]), strict=True):
    np.testing.assert_array_equal(a, b)
  for r in range(1, ROUNDS + 1):
    mask = _leaves(lottery.load_mask(workdir, r))
    for m, start, at_k in zip(mask, _leaves(seen[r, 0]), _leaves(seen[0, K]), strict=True):
      np.testing.assert_array_equal(start[m], at_k[m])  # survivors: their step-k values
      assert not start[~m].any()
    for step in range(STEPS + 1):
      assert all(not w[~m].any() for w, m in zip(_leaves(seen[r, step]), mask, strict=True))
    assert any(
      (w[m] != s[m]).any()
      for w, s, m in zip(_leaves(seen[r, STEPS]), _leaves(seen[r, 0]), mask, strict=True)
    )
  for a, b in zip(_leaves(result["params"]), _leaves(seen[ROUNDS, STEPS]), strict=True):
    np.testing.assert_array_equal(a, b)


def test_killed_lth_run_resumes_at_its_round_and_step_bitwise(
  tmp_path, data_dir, fmnist_subset_dir, lth_run
):
  ref_dir, ref, _ = lth_run
  workdir = str(tmp_path / "killed")
  config = tiny_config(data_dir, fmnist_subset_dir, **LTH)
  calls = []

  class Killed(Exception):
    pass

  def kill_in_round_1(step):
    calls.append(step)
    if len(calls) == STEPS + 6:
      raise Killed  # Round 1, step 6: past its checkpoint of step 4.

  with pytest.raises(Killed):
    train.train_and_evaluate(config, workdir, step_hook=kill_in_round_1)
  assert sorted(os.listdir(os.path.join(lottery.round_dir(workdir, 1), "checkpoints"))) == ["4"]
  assert not os.path.exists(lottery.round_dir(workdir, 2))
  calls.clear()
  result = train.train_and_evaluate(config, workdir, resume=True, step_hook=calls.append)
  assert calls == [5, 6, 7, 8] + list(range(1, STEPS + 1))  # Round 0 is not trained again.
  for a, b in zip(_leaves(ref["params"]), _leaves(result["params"]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _without_timing(train.read_metrics(workdir)) == _without_timing(
    train.read_metrics(ref_dir)
  )
  # A finished study resumed, killed once more just before saving round 2's mask: nothing is
  # trained; round 1's final state gives the same mask again, the final round is evaluated again.
  os.remove(os.path.join(lottery.round_dir(workdir, 2), lottery.MASK_FILE))
  calls.clear()
  again = train.train_and_evaluate(config, workdir, resume=True, step_hook=calls.append)
  assert calls == [] and again["test_accuracy"] == ref["test_accuracy"]
  for a, b in zip(_leaves(lottery.load_mask(workdir, 2)), _leaves(ref["weight_mask"]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert _without_timing(train.read_metrics(workdir)) == _without_timing(
    train.read_metrics(ref_dir)
  )


def test_default_rewind_step_is_one_percent_of_the_run():
  config = tiny_config("", "", sparse__method="lth")
  assert config.sparse.lth.rewind_step is None
  assert lottery.rewind_step(config, 8) == 0
  assert lottery.rewind_step(config, 78200) == 782


@pytest.fixture
def no_compile(monkeypatch):
  def boom(*args, **kwargs):
    raise AssertionError("compiled before rejecting bad input")

  monkeypatch.setattr(jax, "jit", boom)


@pytest.mark.parametrize(
  "override,expected",
  [
    ("sparse.lth.rounds=0", "sparse.lth.rounds must be an integer >= 1, got 0"),
    (
      "sparse.lth.rewind_step=-1",
      "sparse.lth.rewind_step must be an integer >= 0 (a step), got -1",
    ),
    ("sparse.lth.rewind_step=8", "sparse.lth.rewind_step must be an integer in [0, 8) (a step of"),
    ("sparse.sparsity=1.0", "sparse.method=lth: sparsity must be in [0, 1), got 1.0"),
  ],
)
def test_bad_lth_values_stop_before_anything_is_compiled_or_written(
  tmp_path, capsys, no_compile, data_dir, fmnist_subset_dir, override, expected
):
  workdir = tmp_path / "w"
  argv = [
    f"--workdir={workdir}",
    "--config.sparse.method=lth",
    f"--config.dataset.data_dir={data_dir}",
    f"--config.dataset.source_dir={fmnist_subset_dir}",
    "--config.batch_size=64",
    "--config.num_epochs=1",
    f"--config.{override}",
  ]
  assert cli.run(argv) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err
  assert not workdir.exists()
