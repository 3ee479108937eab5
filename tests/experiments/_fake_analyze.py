"""A stand-in for ``experiments.analyze`` that measures nothing (study-runner tests).

    python -m tests.experiments._fake_analyze WORKDIR [--step N] [--out DIR] [--skip PARTS] ...

Like the real one it refuses, with one ``error:`` line and exit status 2, a workdir without a
checkpoint or without one of ``--step``, and writes ``OUT/analysis.json`` (default
``WORKDIR/analysis``) with the real file's keys. Other flags are accepted and ignored. Each call
is appended to ``WORKDIR/analyze_calls.jsonl``. The numbers are made from the run's
``config.json`` (written by ``_fake_main``: ``fake.acc`` = a, default 0.5; ``seed`` = s) and the
analysed step t, so that tests can derive them:

* ``step`` = t; ``hessian.eigenvalues`` = [10 a + s + t / 1000, 2, 1.5, 1, 0.5],
  ``hessian.lambda1_over_lambda5`` = eigenvalues[0] / 0.5, ``hessian.trace`` = 100 a + s;
* ``gradient_variance.heads.<head>.relative`` = k (t / 100 + s) with k = 1, 2, 3 for ``sgd``,
  ``sam``, ``zo_sam_m1``;
* ``ascent.directions.zo_sam_m<m>.cosine_mean`` = 1 / m + s / 100 for m = 1, 4, 16;
* ``corrupted.mean_accuracy`` = a - s / 10.

A part named in ``--skip`` is ``{"skipped": "skipped (--skip PART)"}``, as in the real file.
``fake.analyze_fail=true`` in the run's config: print ``error: fake analysis failure``, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("--step", type=int, default=None)
  parser.add_argument("--out", default=None)
  parser.add_argument("--skip", default="")
  args, _ = parser.parse_known_args(argv)
  with open(os.path.join(args.workdir, "analyze_calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": argv}) + "\n")
  ckpt_dir = os.path.join(args.workdir, "checkpoints")
  names = os.listdir(ckpt_dir) if os.path.isdir(ckpt_dir) else []
  saved = sorted(int(n) for n in names if n.isdigit())
  if not saved:
    print(f"error: workdir {args.workdir} has no checkpoint", file=sys.stderr)
    return 2
  if args.step is not None and args.step not in saved:
    print(f"error: workdir {args.workdir} has no checkpoint of step {args.step}", file=sys.stderr)
    return 2
  with open(os.path.join(args.workdir, "config.json")) as f:
    config = json.load(f)
  if config.get("fake.analyze_fail") == "true":
    print("error: fake analysis failure", file=sys.stderr)
    return 2
  a, s = float(config.get("fake.acc", 0.5)), int(config.get("seed", 0))
  t = saved[-1] if args.step is None else args.step
  eigenvalues = [10 * a + s + t / 1000, 2.0, 1.5, 1.0, 0.5]
  parts = {
    "hessian": {
      "eigenvalues": eigenvalues,
      "lambda1_over_lambda5": eigenvalues[0] / eigenvalues[-1],
      "trace": 100 * a + s,
    },
    "gradient_variance": {
      "heads": {
        head: {"relative": k * (t / 100 + s), "variance": 1.0, "mean_norm_sq": 1.0}
        for k, head in enumerate(("sgd", "sam", "zo_sam_m1"), 1)
      }
    },
    "ascent": {
      "directions": {f"zo_sam_m{m}": {"cosine_mean": 1 / m + s / 100} for m in (1, 4, 16)}
    },
    "corrupted": {"mean_accuracy": a - s / 10, "accuracy": {}},
  }
  skip = {p.strip() for p in args.skip.split(",") if p.strip()}
  names = {"gradient_variance": "variance"}
  result = {"workdir": os.path.abspath(args.workdir), "step": t}
  for key, part in parts.items():
    name = names.get(key, key)
    result[key] = {"skipped": f"skipped (--skip {name})"} if name in skip else part
  out = args.out or os.path.join(args.workdir, "analysis")
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, "analysis.json"), "w") as f:
    json.dump(result, f, indent=2)
  print(f"fake analysis of step {t}: {os.path.join(out, 'analysis.json')}", flush=True)
  return 0


if __name__ == "__main__":
  raise SystemExit(main(sys.argv[1:]))
