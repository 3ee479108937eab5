"""ZOSA against zeroth-order baselines at an equal budget of function queries.

Every optimizer runs on every task with the SAME number of ``loss_fn`` evaluations (the budget);
steps = budget // queries-per-step, so ZOSA (``2(m + 1)`` queries per step) takes half the steps of
ZO-SGD (``m + 1``) and 1/9 of MeZO's (``2``, its published ``m = 1``). Reported per task and
optimizer, as mean +- std over seeds: the final loss (and, on the black-box task, held-out loss
and accuracy), the queries needed to reach ZO-SGD's mean final loss, the wall-clock seconds of
the run (compiled, excluding compilation and the evaluations made for the curves) and the
learning rate chosen.

Tuning, the same for everyone: each optimizer's peak learning rate is picked from its own
7-point log grid (factor ``sqrt(10)``) by a run of a quarter of the budget with a seed that is not
an evaluation seed; lowest final loss wins. Every run uses a cosine decay from that peak to 0.
``m`` (8) and ZOSA's ``rho`` are fixed, not tuned: ``rho = 0.05 / sqrt(1 + (d - 1)/m)``, which
makes the sigma-normalised perturbation's norm about 0.05, SAM's usual radius (its component
along the gradient is then about ``rho``; see :mod:`zosam_jax.zeroth_order`). The
``zosa_no_sigma`` ablation uses the same ``rho``, so its ``||eps|| = rho``. Directions are probed
all at once (``probe_batch_size=None``) except by MeZO, which probes one at a time by design.

Tasks: the four synthetic functions of :mod:`zosam_jax.synthetic` at d = 100, 1 000, 10 000
(budgets 2 000, 10 000, 30 000 queries) and the black-box adaptation task of
:mod:`experiments.standalone.zosa.blackbox` (d = 100, 64 support images, budget 800 queries).

Ablation: ``zosa_no_sam`` (= FZOO, ZOSA's base optimizer), ``zosa_no_sigma`` (inner radius
``rho g/||g||``), ``zosa_no_adaptive_lr`` (outer step ``-lr g'``).

Outputs in ``--out``: ``runs.csv`` (one row per task, optimizer, seed), ``summary.csv`` and
``summary.md`` (mean +- std), ``curves.json``, ``curves_queries.png`` and ``curves_seconds.png``.

  python -m experiments.standalone.zosa.compare --out /tmp/zosa_compare --workdir /tmp/zosa_bb

``--quick`` runs a tiny version (d = 100 only, small budgets, 2 seeds) for tests.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from zosam_jax import synthetic
from zosam_jax import zeroth_order as zo

M = 8
SMOOTHING = 1e-3
RADIUS = 0.05


def rho_for(dim: int) -> float:
  """ZOSA's rho such that ||eps|| ~= RADIUS: ||rho g/s|| ~= rho sqrt(1 + (d - 1)/m)."""
  return RADIUS / math.sqrt(1.0 + (dim - 1) / M)


GRID_POINTS = 7
TUNE_FRACTION = 0.25


def _opt(
  name: str, rho: float = 0.05
) -> tuple[Callable[[Any, int], optax.GradientTransformation], float]:
  """(factory(schedule, seed) -> tx, centre of its learning-rate grid)."""
  # ZOSA's own options (Rademacher directions, forward differences), probed all at once.
  options = dataclasses.replace(
    zo.ZOSA_OPTIONS, num_directions=M, smoothing=SMOOTHING, probe_batch_size=None
  )
  common = dict(zeroth_order=options)
  table = {
    "zosa": (lambda lr, s: zo.zosa(lr, rho, seed=s, **common), 0.1),
    "zosa_no_sam": (lambda lr, s: zo.zosa(lr, rho, seed=s, sam=False, **common), 0.1),
    "zosa_no_sigma": (
      lambda lr, s: zo.zosa(lr, rho, seed=s, sigma_normalize=False, **common),
      0.1,
    ),
    "zosa_no_adaptive_lr": (
      lambda lr, s: zo.zosa(lr, rho, seed=s, adaptive_lr=False, **common),
      3e-4,
    ),
    "zo_sgd": (lambda lr, s: zo.zo_sgd(lr, seed=s, **common), 3e-4),
    "zo_momentum": (lambda lr, s: zo.zo_sgd(lr, seed=s, momentum=0.9, **common), 3e-5),
    "zo_adam": (lambda lr, s: zo.zo_adam(lr, seed=s, **common), 0.03),
    "mezo": (lambda lr, s: zo.mezo(lr, num_directions=1, smoothing=SMOOTHING, seed=s), 3e-4),
  }
  return table[name]


OPTIMIZERS = (
  "zosa",
  "zosa_no_sam",
  "zosa_no_sigma",
  "zosa_no_adaptive_lr",
  "zo_sgd",
  "zo_momentum",
  "zo_adam",
  "mezo",
)
QUERIES = {"mezo": 2, "zosa_no_sam": M + 1, "zo_sgd": M + 1, "zo_momentum": M + 1, "zo_adam": M + 1}


def queries_per_step(name: str) -> int:
  return QUERIES.get(name, 2 * (M + 1))


class Task:
  """name, loss_fn (the oracle), x0, budget, and optional eval_fn -> (loss, accuracy)."""

  def __init__(self, name, loss_fn, x0, budget, eval_fn=None, info=None):
    self.name, self.loss_fn, self.x0, self.budget = name, loss_fn, x0, budget
    self.eval_fn, self.info = eval_fn, info or {}


def make_runner(task: Task, opt_name: str, steps: int, num_chunks: int):
  """A compiled ``run(lr, seed, fraction) -> record`` that advances in chunks, timing each.

  The learning rate, the schedule's length and the seed are traced, so the learning-rate search
  (runs over the first ``fraction`` of the chunks, with the cosine decay fitted to that length)
  reuses the compiled chunk of the evaluation runs.
  """
  factory, _ = _opt(opt_name, rho_for(int(task.x0.size)))
  chunk = max(1, math.ceil(steps / num_chunks))
  num_chunks = math.ceil(steps / chunk)

  def schedule(lr, total):
    return lambda count: lr * 0.5 * (1.0 + jnp.cos(jnp.pi * jnp.minimum(count / total, 1.0)))

  @jax.jit
  def init(seed_key):
    state = factory(lambda count: 1.0, 0).init(task.x0)  # a schedule: same state structure
    return task.x0, _replace_head(state, zo.zo_state(state)._replace(key=seed_key))

  @jax.jit
  def advance(lr, total, x, state):
    tx = factory(schedule(lr, total), 0)

    def body(carry, _):
      x, state = carry
      updates, state = tx.update(None, state, x, loss_fn=task.loss_fn)
      return (optax.apply_updates(x, updates), state), None

    (x, state), _ = jax.lax.scan(body, (x, state), None, length=chunk)
    return x, state

  loss_jit = jax.jit(task.loss_fn)
  eval_jit = jax.jit(task.eval_fn) if task.eval_fn is not None else None

  def run(lr: float, seed: int, fraction: float = 1.0) -> dict:
    n = max(1, round(num_chunks * fraction))
    lr, total = jnp.float32(lr), jnp.float32(n * chunk)
    x, state = init(jax.random.PRNGKey(seed))
    t0 = time.perf_counter()
    jax.block_until_ready(advance.lower(lr, total, x, state).compile())
    compile_s = time.perf_counter() - t0
    curve = {"queries": [0], "seconds": [0.0], "loss": [float(loss_jit(x))]}
    if eval_jit is not None:
      el, ea = eval_jit(x)
      curve["eval_loss"], curve["eval_acc"] = [float(el)], [float(ea)]
    elapsed = 0.0
    for i in range(n):
      t = time.perf_counter()
      x, state = advance(lr, total, x, state)
      jax.block_until_ready(x)
      elapsed += time.perf_counter() - t
      if fraction == 1.0 or i == n - 1:
        curve["queries"].append(int(zo.zo_state(state).queries))
        curve["seconds"].append(elapsed)
        curve["loss"].append(float(loss_jit(x)))
        if eval_jit is not None:
          el, ea = eval_jit(x)
          curve["eval_loss"].append(float(el))
          curve["eval_acc"].append(float(ea))
    return {"curve": curve, "wall_s": elapsed, "compile_s": compile_s}

  return run


def _replace_head(state, head):
  if isinstance(state, zo.ZerothOrderState):
    return head
  if isinstance(state, tuple) and not hasattr(state, "_fields"):
    return tuple(_replace_head(s, head) if _has_head(s) else s for s in state)
  return state


def _has_head(state) -> bool:
  try:
    zo.zo_state(state)
    return True
  except ValueError:
    return False


def _final(value: float) -> float:
  return value if math.isfinite(value) else math.inf


def compare_task(task: Task, seeds: list[int], optimizers, num_chunks: int, log) -> list[dict]:
  rows = []
  for opt_name in optimizers:
    q = queries_per_step(opt_name)
    steps = task.budget // q
    run = make_runner(task, opt_name, steps, num_chunks)
    _, centre = _opt(opt_name)
    grid = [centre * 10 ** (0.5 * (k - GRID_POINTS // 2)) for k in range(GRID_POINTS)]
    scores = []
    for lr in grid:
      rec = run(lr, 1000, fraction=TUNE_FRACTION)
      scores.append(_final(rec["curve"]["loss"][-1]))
    best = int(np.argmin(scores))
    lr = grid[best]
    edge = " (grid edge)" if best in (0, GRID_POINTS - 1) else ""
    for seed in seeds:
      rec = run(lr, seed)
      c = rec["curve"]
      row = dict(
        task=task.name,
        optimizer=opt_name,
        seed=seed,
        lr=lr,
        queries_per_step=q,
        steps=steps,
        queries=c["queries"][-1],
        initial_loss=c["loss"][0],
        final_loss=c["loss"][-1],
        wall_s=rec["wall_s"],
        compile_s=rec["compile_s"],
        curve=c,
      )
      if "eval_acc" in c:
        row["final_eval_loss"] = c["eval_loss"][-1]
        row["final_eval_acc"] = c["eval_acc"][-1]
        row["initial_eval_acc"] = c["eval_acc"][0]
      rows.append(row)
    finals = [
      r["final_loss"] for r in rows if r["optimizer"] == opt_name and r["task"] == task.name
    ]
    log(
      f"  {task.name:22s} {opt_name:20s} lr={lr:.3g}{edge} steps={steps} "
      f"final={np.mean(finals):.4g}+-{np.std(finals):.2g}"
    )
  # Queries to reach ZO-SGD's mean final loss (inf if never reached).
  ref = [r["final_loss"] for r in rows if r["optimizer"] == "zo_sgd"]
  target = float(np.mean(ref)) if ref else math.nan
  for r in rows:
    c = r["curve"]
    hit = [qq for qq, ll in zip(c["queries"], c["loss"], strict=True) if ll <= target]
    r["target"] = target
    r["queries_to_target"] = hit[0] if hit else math.inf
  return rows


def synthetic_tasks(dims, names, budgets) -> list[Task]:
  tasks = []
  for d in dims:
    for name in names:
      p = synthetic.make_problem(name, d)
      tasks.append(Task(f"{name}-d{d}", p.fn, p.x0, budgets[d], info={"f0": float(p.fn(p.x0))}))
  return tasks


def blackbox_task(workdir: str, data_dir: str, budget: int, dim: int) -> Task:
  from experiments.standalone.zosa import blackbox

  bb = blackbox.make_task(workdir, data_dir, dim=dim, num_adapt=64, contrast=0.6, noise_std=0.15)
  return Task(f"blackbox-fmnist-d{dim}", bb.loss_fn, bb.z0, budget, bb.eval_fn, bb.info)


SUMMARY_FIELDS = ("final_loss", "final_eval_loss", "final_eval_acc", "queries_to_target", "wall_s")


def summarize(rows: list[dict]) -> list[dict]:
  out = []
  keys = list(dict.fromkeys((r["task"], r["optimizer"]) for r in rows))
  for task, opt in keys:
    rs = [r for r in rows if r["task"] == task and r["optimizer"] == opt]
    s = dict(task=task, optimizer=opt, seeds=len(rs), lr=rs[0]["lr"], steps=rs[0]["steps"])
    s["queries"] = rs[0]["queries"]
    for f in SUMMARY_FIELDS:
      if f not in rs[0]:
        continue
      v = np.array([r[f] for r in rs], float)
      if f == "queries_to_target":
        reached = np.isfinite(v)
        s[f + "_mean"] = float(np.mean(v[reached])) if reached.any() else math.inf
        s[f + "_reached"] = f"{int(reached.sum())}/{len(v)}"
      else:
        s[f + "_mean"], s[f + "_std"] = float(np.mean(v)), float(np.std(v))
    out.append(s)
  return out


def write_outputs(out_dir: str, rows: list[dict], summary: list[dict], header: dict) -> None:
  os.makedirs(out_dir, exist_ok=True)
  flat_fields = [k for k in rows[0] if k != "curve"]
  for r in rows:
    for k in r:
      if k not in flat_fields and k != "curve":
        flat_fields.append(k)
  with open(os.path.join(out_dir, "runs.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, flat_fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: r.get(k, "") for k in flat_fields})
  fields = list(dict.fromkeys(k for s in summary for k in s))
  with open(os.path.join(out_dir, "summary.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fields)
    w.writeheader()
    for s in summary:
      w.writerow({k: s.get(k, "") for k in fields})
  with open(os.path.join(out_dir, "summary.md"), "w") as f:
    f.write(markdown_table(summary))
  with open(os.path.join(out_dir, "curves.json"), "w") as f:
    json.dump(
      dict(header=header, runs=[{k: v for k, v in r.items()} for r in rows]),
      f,
      default=lambda o: None if isinstance(o, float) and not math.isfinite(o) else str(o),
    )


def _fmt(x: float) -> str:
  if not math.isfinite(x):
    return "inf" if x > 0 else "nan"
  return f"{x:.4g}"


def markdown_table(summary: list[dict]) -> str:
  lines = []
  for task in dict.fromkeys(s["task"] for s in summary):
    rs = [s for s in summary if s["task"] == task]
    has_eval = "final_eval_acc_mean" in rs[0]
    head = "| optimizer | lr | steps | final loss | "
    head += "held-out loss | held-out acc | " if has_eval else ""
    head += "queries to ZO-SGD's final (reached) | wall s |"
    lines += [f"\n**{task}** (budget {rs[0]['queries']} queries)\n", head]
    lines.append("|" + "---|" * (head.count("|") - 1))
    for s in rs:
      cells = [
        s["optimizer"],
        f"{s['lr']:.3g}",
        str(s["steps"]),
        f"{_fmt(s['final_loss_mean'])} ± {_fmt(s['final_loss_std'])}",
      ]
      if has_eval:
        cells.append(f"{_fmt(s['final_eval_loss_mean'])} ± {_fmt(s['final_eval_loss_std'])}")
        cells.append(f"{s['final_eval_acc_mean']:.4f} ± {s['final_eval_acc_std']:.4f}")
      cells.append(f"{_fmt(s['queries_to_target_mean'])} ({s['queries_to_target_reached']})")
      cells.append(f"{s['wall_s_mean']:.2f} ± {s['wall_s_std']:.2f}")
      lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def plot(out_dir: str, rows: list[dict]) -> list[str]:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  tasks = list(dict.fromkeys(r["task"] for r in rows))
  opts = list(dict.fromkeys(r["optimizer"] for r in rows))
  colors = {o: plt.cm.tab10(i % 10) for i, o in enumerate(opts)}
  paths = []
  for axis, label in (("queries", "function queries"), ("seconds", "wall-clock seconds")):
    extra = [t for t in tasks if any("eval_acc" in r["curve"] for r in rows if r["task"] == t)]
    panels = [(t, "loss") for t in tasks] + [(t, "eval_acc") for t in extra]
    cols = 4
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.2 * nrows), squeeze=False)
    for ax, (task, key) in zip(axes.flat, panels, strict=False):
      for opt in opts:
        rs = [r for r in rows if r["task"] == task and r["optimizer"] == opt]
        if not rs:
          continue
        n = min(len(r["curve"][key]) for r in rs)
        xs = np.mean([r["curve"][axis][:n] for r in rs], 0)
        ys = np.array([r["curve"][key][:n] for r in rs], float)
        ys = np.where(np.isfinite(ys), ys, np.nan)
        style = "-" if opt.startswith("zosa") else "--"
        ax.plot(xs, np.nanmean(ys, 0), style, color=colors[opt], label=opt, lw=1.3)
        ax.fill_between(xs, np.nanmin(ys, 0), np.nanmax(ys, 0), color=colors[opt], alpha=0.15)
      ax.set_title(f"{task}: {'held-out accuracy' if key == 'eval_acc' else 'loss'}", fontsize=9)
      ax.set_xlabel(label, fontsize=8)
      if key == "loss":
        ax.set_yscale("log")
      ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
      ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(opts), fontsize=8)
    fig.suptitle(f"Equal query budget; mean over seeds, band = min..max ({label})", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    path = os.path.join(out_dir, f"curves_{axis}.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
  return paths


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--out", default="/tmp/zosa_compare")
  p.add_argument("--workdir", default="/tmp/zosa_bb", help="frozen classifier cache")
  p.add_argument("--data_dir", default="", help="tfds data dir (default WORKDIR/tfds)")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--dims", default="100,1000,10000")
  p.add_argument("--functions", default=",".join(synthetic.NAMES))
  p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
  p.add_argument("--no_blackbox", action="store_true")
  p.add_argument("--blackbox_dim", type=int, default=100)
  p.add_argument("--blackbox_budget", type=int, default=800)
  p.add_argument("--chunks", type=int, default=30, help="curve points per run")
  p.add_argument("--quick", action="store_true", help="tiny settings for tests")
  return p.parse_args(argv)


def main(argv=None) -> dict:
  args = parse_args(argv)
  dims = [int(d) for d in args.dims.split(",") if d]
  names = [n for n in args.functions.split(",") if n]
  optimizers = [o for o in args.optimizers.split(",") if o]
  for o in optimizers:
    if o not in OPTIMIZERS:
      raise SystemExit(f"unknown optimizer {o!r}; choose from {', '.join(OPTIMIZERS)}")
  for n in names:
    if n not in synthetic.NAMES:
      raise SystemExit(f"unknown function {n!r}; choose from {', '.join(synthetic.NAMES)}")
  budgets = {100: 2_000, 1_000: 10_000, 10_000: 30_000}
  seeds = list(range(args.seeds))
  if args.quick:
    budgets = {d: 360 for d in dims}
    seeds = seeds[:2]
    args.chunks = min(args.chunks, 5)
    args.blackbox_budget = min(args.blackbox_budget, 90)
  for d in dims:
    budgets.setdefault(d, 20 * d)
  t_start = time.time()

  def log(msg):
    print(f"[{time.time() - t_start:6.0f}s] {msg}", flush=True)

  tasks = synthetic_tasks(dims, names, budgets)
  if not args.no_blackbox:
    data_dir = args.data_dir or os.path.join(args.workdir, "tfds")
    tasks.append(blackbox_task(args.workdir, data_dir, args.blackbox_budget, args.blackbox_dim))
    log(f"black-box task: {tasks[-1].info}")
  rows = []
  for task in tasks:
    log(f"{task.name}: budget {task.budget} queries")
    rows += compare_task(task, seeds, optimizers, args.chunks, log)
  summary = summarize(rows)
  header = dict(
    m=M,
    smoothing=SMOOTHING,
    radius=RADIUS,
    rho={t.name: rho_for(int(t.x0.size)) for t in tasks},
    seeds=seeds,
    budgets={t.name: t.budget for t in tasks},
    blackbox={t.name: t.info for t in tasks if t.eval_fn is not None},
    total_seconds=time.time() - t_start,
    jax=jax.__version__,
    device=str(jax.devices()[0]),
  )
  write_outputs(args.out, rows, summary, header)
  paths = plot(args.out, rows)
  log(f"wrote {args.out}/runs.csv, summary.csv, summary.md, {', '.join(paths)}")
  return dict(rows=rows, summary=summary, paths=paths)


if __name__ == "__main__":
  main(sys.argv[1:])
