"""Standalone studies that are not grids of trainer runs (those live in experiments/studies/)."""
