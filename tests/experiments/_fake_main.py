"""A stand-in for ``experiments.main`` that trains nothing (study-runner tests).

Takes the same arguments, and the workdir's lock as the real one does (taking over the one a
study runner hands down; exit 2 when another process holds it). Writes ``config.json``, one
``eval`` record per epoch to ``metrics.jsonl`` and an (empty) checkpoint folder
``checkpoints/<step>`` per epoch (step ``10 * epoch``), like the real one, and appends its call
to ``WORKDIR/calls.jsonl``. The ``fake.*`` overrides steer it:

* ``fake.acc`` (default 0.5): the final test accuracy; epoch e of E gets ``acc * e / E``.
* ``num_epochs`` (default 2).
* ``fake.die_first=true``: without ``--resume``, write epoch 1 and exit 1 (a killed run).
* ``fake.fail=true``: print ``error: fake failure`` and exit 2.
* ``fake.sleep`` (seconds, default 0): sleep this long per epoch (after writing ``pid``).
"""

from __future__ import annotations

import json
import os
import sys
import time

from experiments import workdir_lock


def main(argv: list[str]) -> int:
  workdir, resume, overrides = None, False, {}
  for arg in argv:
    if arg.startswith("--workdir="):
      workdir = arg.split("=", 1)[1]
    elif arg == "--resume":
      resume = True
    elif arg.startswith("--config."):
      key, _, value = arg[len("--config.") :].partition("=")
      overrides[key] = value
  try:
    lock = workdir_lock.acquire(workdir, what="tests.experiments._fake_main")
  except workdir_lock.WorkdirBusy as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  with lock:
    return _run(workdir, resume, overrides, argv)


def _run(workdir: str, resume: bool, overrides: dict[str, str], argv: list[str]) -> int:
  with open(os.path.join(workdir, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"resume": resume, "start": time.time(), "argv": argv}) + "\n")
  with open(os.path.join(workdir, "pid"), "w") as f:
    f.write(str(os.getpid()))
  config_path = os.path.join(workdir, "config.json")
  if os.path.exists(config_path) and not resume:
    print(f"error: workdir {workdir} already holds a run; pass --resume", file=sys.stderr)
    return 2
  if overrides.get("fake.fail") == "true":
    print("error: fake failure", file=sys.stderr)
    return 2
  with open(config_path, "w") as f:
    json.dump(overrides, f)
  epochs = int(overrides.get("num_epochs", 2))
  acc = float(overrides.get("fake.acc", 0.5))
  metrics = os.path.join(workdir, "metrics.jsonl")
  done = 0
  if resume and os.path.exists(metrics):
    with open(metrics) as f:
      done = sum(1 for line in f if line.strip())
  for epoch in range(done + 1, epochs + 1):
    time.sleep(float(overrides.get("fake.sleep", 0)))
    record = {
      "kind": "eval",
      "step": 10 * epoch,
      "epoch": epoch,
      "test_accuracy": acc * epoch / epochs,
      "test_loss": 1.0 / epoch,
      "train_epoch_time_s": 2.0,
      "eval_time_s": 0.5,
    }
    with open(metrics, "a") as f:
      f.write(json.dumps(record) + "\n")
    os.makedirs(os.path.join(workdir, "checkpoints", str(10 * epoch)), exist_ok=True)
    print(f"epoch {epoch}/{epochs}", flush=True)
    if overrides.get("fake.die_first") == "true" and not resume:
      print("dying on purpose", flush=True)
      return 1
  print(f"final test accuracy: {acc:.4f}", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main(sys.argv[1:]))
