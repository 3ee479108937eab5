"""Standalone experiments: scripts that measure one thing directly (the precision of bfloat16
zeroth-order differences, ZOSA against zeroth-order baselines), not grids of trainer runs (those
are the study configs in ``experiments/studies/``, run by ``python -m experiments.study``)."""
