"""``python -m experiments.study`` with ``tests.experiments._fake_main`` as the cell command.

python -m tests.experiments._fake_study STUDY_CONFIG [study options ...]
"""

from __future__ import annotations

import sys

from experiments import study


def fake_command(cell, resume, extra):
  return study.main_command(cell, resume, extra, "unused.py", module="tests.experiments._fake_main")


if __name__ == "__main__":
  raise SystemExit(study.run(sys.argv[1:], command=fake_command))
