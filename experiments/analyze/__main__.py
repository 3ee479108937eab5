"""``python -m experiments.analyze``: see ``cli.py``."""

from experiments.analyze.cli import run

raise SystemExit(run())
