#!/usr/bin/env bash
# The evidence round (issue 26), resumably: finished cells are skipped, so a killed chain
# continues where it stopped when started again.
#   nohup bash experiments/studies/run_evidence.sh [WORKDIRS] > evidence.log 2>&1 &
# Cells run one at a time (each process uses both cores of the 2-core CPU). The studies of the
# first round (run_all.sh) are not rerun here.
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
W=${1:-workdirs}
study() { $PY -m experiments.study "experiments/studies/$1.py" --workdirs "$W" "${@:2}"; }

# P0: where SAM's gain is real (label noise), seed 0, on held-out data. 0.4 first.
study p0_label_noise --cells '0.4-*'
study p0_label_noise
# P0's regime confirmed with seeds 0-2 (seed 0 shared with P0). Needs P0 finished (regime.py).
study p0_confirm

# T9's channel cells with the reference regrowth rule (issue 25, item 5): ~20 min.
study t9_channel_regrowth
# T3 with the corrected trainer seconds (issue 25, item 2), alone on the machine: ~2.5 h.
# Epoch-end checkpoints, so a resumed cell restarts an epoch whole.
study t3_convergence --config.checkpoint_every_steps=468

# F1 (issue 26, item 4), at code with config.label and LookSAM's ascent on a sub-batch (0.3.0):
# first ASAM's and the control's radii on validation (12 runs, seed 0), then the
# frontier, 23 arms x dense/sparse x 3 seeds on the test set (138 runs). Each needs the one before
# it finished (get_study raises otherwise). Its cost table is a separate benchmark on a quiet
# machine: python -m benchmarks.step_cost --study experiments/studies/f1_frontier.py \
#   --where sparse.method=dense --json docs/results/f1_frontier/cost.json
study f1_tuning
study f1_frontier
