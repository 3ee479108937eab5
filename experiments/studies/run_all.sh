#!/usr/bin/env bash
# Runs every evidence study in the order they were scheduled, resumably: finished cells and
# analyses are skipped, so a killed chain continues where it stopped when started again.
#   nohup bash experiments/studies/run_all.sh [WORKDIRS] > chain.log 2>&1 &
# Cells run one at a time (each process uses both cores of the 2-core CPU it was planned for).
# T1 cells keep a checkpoint every 390 steps (T4 analyses steps 390 and 1170); both flags leave
# the cell hash unchanged and may differ from a cell's earlier attempts.
set -u
cd "$(dirname "$0")/../.."
PY=${PYTHON:-.venv/bin/python}
W=${1:-workdirs}
KEEP=(--config.checkpoint_every_steps=390 --config.keep_checkpoints=8)
study() { $PY -m experiments.study "experiments/studies/$1.py" --workdirs "$W" "${@:2}"; }
# The T1 cells of each sparsity group given in turn, seed by seed.
t1_groups() {
  for group in "$@"; do
    for s in 0 1 2; do study t1_accuracy --cells "${group}-[a-z]*-s${s}-*" "${KEEP[@]}"; done
  done
}

study rho_tuning
study rho_tuning_low
t1_groups rigl-0.9 rigl-0.98
study t1_small_rho
study t7_guided
study t5_t7_final
t1_groups mest-0.9 mest-0.98
# T2 before T4: the final-checkpoint variance is already in t5_t7_final, T2 is a new claim.
study t2_methods
study t4_variance
study t8_sparse_sam
study t8_flatness
# T3 last and alone: its training seconds are the measurement, and it spans sessions.
# Checkpoints on epoch ends (468 steps), so a resumed cell restarts an epoch whole and
# every epoch's train_epoch_time_s covers all of its steps.
study t3_convergence --config.checkpoint_every_steps=468
# After T3: whether LookSAM's gap in T3 follows its reuse weight (one seed, a diagnostic).
study t3_looksam_alpha
