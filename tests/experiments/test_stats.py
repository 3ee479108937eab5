"""Paired differences, their t-interval and the verdict rule (experiments.stats)."""

from __future__ import annotations

import csv
import math

import pytest

from experiments import stats

# Student t quantiles at 0.975 (two-sided 95%), from a t table: 1, 2 and 4 degrees of freedom.
T_975 = {1: 12.706204736174696, 2: 4.302652729749464, 4: 2.7764451051977987}


def test_t_interval_by_hand():
  # diffs 1, 2, 3: mean 2, sample sd 1, half-width t_{0.975,2} * 1 / sqrt(3).
  mean, half = stats.t_interval([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert half == pytest.approx(T_975[2] / math.sqrt(3))
  # Five diffs: sd = sqrt(sum((d - 0.2)^2) / 4) = sqrt(0.44 / 4).
  diffs = [0.1, -0.3, 0.5, 0.2, 0.5]
  mean, half = stats.t_interval(diffs)
  assert mean == pytest.approx(0.2)
  assert half == pytest.approx(T_975[4] * math.sqrt(0.44 / 4) / math.sqrt(5))
  # 90%: t_{0.95,2} = 2.919986.
  assert stats.t_interval([1.0, 2.0, 3.0], 0.9)[1] == pytest.approx(2.919986 / math.sqrt(3))
  assert stats.t_interval([0.7]) == (0.7, None)  # One seed: a mean, no interval.
  assert stats.t_interval([]) == (None, None)
  with pytest.raises(ValueError, match="level must be in"):
    stats.t_interval([1.0, 2.0], 95)


ROWS = [
  # runs.csv text, as csv.DictReader gives it; the arms of two cell groups (sparsity).
  {"sparse.sparsity": "0.9", "optimizer.name": "sgd", "seed": "0", "status": "done", "acc": "0.90"},
  {"sparse.sparsity": "0.9", "optimizer.name": "sgd", "seed": "1", "status": "done", "acc": "0.91"},
  {"sparse.sparsity": "0.9", "optimizer.name": "sgd", "seed": "2", "status": "done", "acc": "0.92"},
  {"sparse.sparsity": "0.9", "optimizer.name": "sam", "seed": "0", "status": "done", "acc": "0.93"},
  {"sparse.sparsity": "0.9", "optimizer.name": "sam", "seed": "2", "status": "done", "acc": "0.92"},
  {"sparse.sparsity": "0.9", "optimizer.name": "sam", "seed": "1", "status": "failed", "acc": ""},
  {"sparse.sparsity": "0.98", "optimizer.name": "sgd", "seed": "0", "status": "done", "acc": "0.8"},
  {"sparse.sparsity": "0.98", "optimizer.name": "sam", "seed": "0", "status": "done", "acc": "0.7"},
]


def test_pairing_by_seed_keeps_seeds_in_both_arms():
  sgd = {"sparse.sparsity": 0.9, "optimizer.name": "sgd"}  # Typed values match the csv text.
  sam = {"sparse.sparsity": 0.9, "optimizer.name": "sam"}
  pairs = stats.paired_differences(ROWS, sam, sgd, "acc")
  # Seed 1 of SAM failed: seeds 0 and 2 only, in seed order (SAM's rows list 2 before 1).
  assert [s for s, _ in pairs] == [0.0, 2.0]
  assert [d for _, d in pairs] == pytest.approx([0.03, 0.0])
  assert stats.paired_differences(ROWS, sgd, sam, "acc")[0][1] == pytest.approx(-0.03)
  # No run of the other cell group is picked up.
  other = {"sparse.sparsity": "0.98", "optimizer.name": "sam"}
  assert stats.paired_differences(ROWS, other, {**other, "optimizer.name": "sgd"}, "acc") == [
    (0.0, pytest.approx(-0.1))
  ]
  assert stats.paired_differences(ROWS, {"optimizer.name": "nope"}, sgd, "acc") == []
  with pytest.raises(ValueError, match="two finished runs"):
    stats.paired_differences([*ROWS, ROWS[0]], sam, sgd, "acc")


@pytest.mark.parametrize(
  "low, high, effect, direction, expected",
  [
    # Excludes 0 on the claimed side.
    (0.1, 0.5, None, 1, stats.REPRODUCED),
    (0.1, 0.5, 0.3, 1, stats.REPRODUCED),  # Reaches the paper's effect.
    (0.1, 0.5, 1.0, 1, stats.SMALLER),  # A gain, but entirely short of the paper's.
    # Includes 0, entirely short of the paper's effect.
    (-0.6, 0.3, 0.81, 1, stats.NOT_REPRODUCED),
    # Excludes 0 on the other side: not reproduced, with or without an effect size.
    (-0.4, -0.1, None, 1, stats.OPPOSITE),
    (-0.4, -0.1, 2.0, 1, stats.OPPOSITE),
    # Includes 0 and reaches the effect, or no effect to exclude, or no interval.
    (-3.0, 4.0, 1.8, 1, stats.INCONCLUSIVE),
    (-0.6, 0.3, None, 1, stats.INCONCLUSIVE),
    (-0.6, 0.3, -0.5, 1, stats.INCONCLUSIVE),  # The paper's own difference is no gain.
    (None, None, 1.0, 1, stats.INCONCLUSIVE),
    # A claimed decrease (e.g. sharpness): the interval is read in that direction.
    (-5.0, -1.0, None, -1, stats.REPRODUCED),
    (1.0, 5.0, None, -1, stats.OPPOSITE),
    (-0.5, 0.2, 1.0, -1, stats.NOT_REPRODUCED),
  ],
)
def test_verdict_rule(low, high, effect, direction, expected):
  assert stats.verdict(low, high, effect, direction) == expected


def test_verdict_rejects_a_bad_direction():
  with pytest.raises(ValueError, match="direction must be"):
    stats.verdict(0.1, 0.2, direction=2)


def test_paper_effect_difference_and_relative_error():
  # The paper: 89.22 -> 91.53 (+2.31 points, scale 100); ours: the reference at 0.8848.
  assert stats.paper_effect(91.53, 89.22, "difference", 100, 0.8848) == pytest.approx(0.0231)
  # It removes 2.31 / 10.78 of the reference's error; ours is 1 - 0.8848.
  expected = 2.31 / 10.78 * (1 - 0.8848)
  assert stats.paper_effect(91.53, 89.22, "relative_error", 100, 0.8848) == pytest.approx(expected)
  assert stats.paper_effect(91.53, 89.22, "none", 100, 0.8848) is None
  assert stats.paper_effect(91.53, None, "difference", 100, 0.8848) is None
  assert stats.paper_effect(96.81, 96.83, "difference", 100, 0.9) is None  # No gain claimed.
  with pytest.raises(ValueError, match="effect mode"):
    stats.paper_effect(1.0, 0.0, "ratio", 1, None)


def test_compare_cell_groups_references_and_paper_effects():
  group_by = ["sparse.sparsity", "optimizer.name"]
  paper = {"metric": "acc", "scale": 100, "comparable": False, "values": {("0.9", "sam"): 95.0}}
  paper["values"][("0.9", "sgd")] = 90.0
  out = stats.compare(ROWS, group_by, "acc", paper=paper)
  # SAM - SGD in each sparsity; no SGD - SAM after it.
  assert [(c["sparse.sparsity"], c["arm"], c["reference"]) for c in out] == [
    ("0.9", "sam", "sgd"),
    ("0.98", "sam", "sgd"),
  ]
  first = out[0]
  assert first["n"] == 2 and first["seeds"] == [0.0, 2.0]
  assert first["mean"] == pytest.approx(0.015)
  half = T_975[1] * math.sqrt(2 * 0.015**2) / math.sqrt(2)
  assert first["half_width"] == pytest.approx(half)
  assert first["ci_low"] == pytest.approx(0.015 - half)
  # Another dataset: the paper removes half the reference's error; ours (seeds 0, 2) is 0.09.
  assert first["effect"] == pytest.approx(0.5 * (1 - 0.91))
  assert first["verdict"] == stats.INCONCLUSIVE  # +-0.19: includes 0 and the effect.
  assert out[1]["n"] == 1 and out[1]["half_width"] is None
  assert out[1]["effect"] is None and out[1]["verdict"] == stats.INCONCLUSIVE

  # A metric that is not the paper's, or a claimed decrease: no effect size from the paper.
  assert stats.compare(ROWS, group_by, "acc", paper={**paper, "metric": "x"})[0]["effect"] is None
  assert stats.compare(ROWS, group_by, "acc", paper=paper, direction=-1)[0]["effect"] is None
  # No optimiser among the group_by fields: no arms, nothing to compare.
  assert stats.compare(ROWS, ["sparse.sparsity"], "acc") == []


def test_compare_skips_an_ambiguous_reference_and_takes_an_arm_label():
  rows = [
    {"optimizer.name": n, "optimizer.rho": rho, "seed": s, "acc": a}
    for n, rho, a in (("sgd", 0.0, 0.90), ("sam", 0.01, 0.91), ("sam", 0.05, 0.93))
    for s in (0, 1)
  ]
  out = stats.compare(rows, ["optimizer.name", "optimizer.rho"], "acc")
  # Two SAM arms: no single SAM reference; each is compared with SGD.
  assert [(c["arm"], c["reference"]) for c in out] == [
    ("sam, 0.01", "sgd, 0"),
    ("sam, 0.05", "sgd, 0"),
  ]
  out = stats.compare(rows, ["optimizer.name", "optimizer.rho"], "acc", references=["sam, 0.01"])
  assert [(c["arm"], c["reference"]) for c in out] == [
    ("sgd, 0", "sam, 0.01"),
    ("sam, 0.05", "sam, 0.01"),
  ]
  assert out[1]["diffs"] == pytest.approx([0.02, 0.02])
  assert out[1]["half_width"] == pytest.approx(0.0)  # No spread: a point interval.
  assert out[1]["verdict"] == stats.REPRODUCED


def test_section_replacement_is_idempotent_and_placed_before_other_sections():
  text = "# Study\n\ntable\n\n## Notes\n\n* a\n"
  section = ["## Paired differences", "", "rows", ""]
  once = stats.replace_section(text, section)
  assert once == "# Study\n\ntable\n\n## Paired differences\n\nrows\n\n## Notes\n\n* a\n"
  assert stats.replace_section(once, section) == once
  assert stats.replace_section(once, ["## Paired differences", "", "new", ""]).count("rows") == 0
  assert stats.replace_section(once, []) == text
  assert stats.replace_section("# S\n", section) == "# S\n\n## Paired differences\n\nrows\n"


def test_command_line_writes_paired_csv_and_section_from_runs_csv(tmp_path, capsys):
  runs = tmp_path / "runs.csv"
  with open(runs, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(ROWS[0]))
    writer.writeheader()
    writer.writerows(ROWS)
  (tmp_path / "summary.md").write_text("# Study `x`\n\ntable\n\n## Curves\n")
  argv = [
    str(runs),
    "--group-by",
    "sparse.sparsity,optimizer.name",
    "--metric",
    "acc",
    "--unit",
    "100",
  ]
  assert stats.main([*argv, "--write"]) == 0
  md = (tmp_path / "summary.md").read_text()
  assert md.index("## Paired differences") < md.index("## Curves")
  assert "| 0.9 | sam | +3.00 | +0.00 | +1.50 [" in md  # No seed 1 column: no arm has it.
  assert "| 0.98 | sam | -10.00 | - | -10.00 (n = 1) | inconclusive |" in md
  with open(tmp_path / "paired.csv") as f:
    paired = list(csv.DictReader(f))
  assert [float(r["diff_s0"]) for r in paired] == pytest.approx([0.03, -0.1])
  assert paired[1]["diff_s2"] == "" and paired[0]["verdict"] == "inconclusive"
  # A given effect size (acc units): 50 points, which SAM's interval at 90% falls short of.
  assert stats.main([*argv, "--effect", "0.5"]) == 0
  out = capsys.readouterr().out
  assert "| +50.00 | not reproduced |" in out and "| 0.98 | sam |" in out
