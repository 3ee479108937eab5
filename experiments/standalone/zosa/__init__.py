"""ZOSA against the zeroth-order baselines at equal query budgets (docs/zosa.md)."""
