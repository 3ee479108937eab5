"""Step cost of SGD, SAM and ZO-SAM against ZO-SAM's physical limit.

For each model, in ONE process, after warm-up, the median time of a full jitted training step
(head + SGD with momentum + apply) for:

  sgd            exact_gradient head: one forward-backward
  sam            zosam_jax.sam: two forward-backwards
  optax_sam      optax.contrib.sam (opaque mode, sync_period=2, normalize + sgd(rho))
  esam           zosam_jax.esam, beta 0.6, gamma 0.5 (the ESAM paper's CIFAR setting)
  looksam        zosam_jax.looksam, k = 5 (averaged over one period)
  gsam           zosam_jax.gsam
  zo_sam m=k     zosam_jax.zo_sam, central scheme, probe_batch_size 1 and m
  zo_looksam     looksam(ascent="zeroth_order"), m = 1, k = 5
  zo_esam        esam(ascent="zeroth_order"), m = 1

and the pieces of the limit: a forward pass alone (``t_fwd``, the loss in training mode, as a
probe computes it) and drawing one Gaussian direction over all parameters (``t_draw``). Each
ZO-SAM time is printed as a ratio to ``t_sgd + m (2 t_fwd + t_draw)``, ZO-LookSAM's to the same
limit averaged over its period (``t_sgd + m (2 t_fwd + t_draw) / k``). Timings are taken in
rounds, every configuration once per round, so drift on a shared machine hits all alike.

``--probe-fraction f`` (< 1) adds ZO-SAM (every m, ``probe_batch_size`` 1) and ZO-LookSAM with
sub-batch probes (``probe_loss_fn`` on the first ``round(f B)`` examples, BatchNorm with their
statistics, as the trainer's ``optimizer.probe_fraction``), a forward pass on that sub-batch
(``t_fwd(fB)``) and their limits ``t_sgd + m (2 t_fwd(fB) + t_draw)``. Each row shows its limit's
ratio to SAM beside its own.

The output starts with a ``device:`` line (device kind, platform, jax/jaxlib/optax versions,
host); every step is also shown in images per second (batch / step time).

Peak memory: XLA's compiled temporary-buffer size of each step (``memory_analysis()``), which is
what grows if directions were stored ``m`` at once.

``--study STUDY`` times instead the arms of a study with a ``frontier`` key (docs/studies.md, "The
frontier"): for each arm (the values of the frontier's ``arm_field``) its first cell, among those
``--where FIELD=VALUE`` picks, becomes the config ``experiments.main`` would run (the study's base
config and overrides; extra ``--config.FIELD=VALUE`` arguments, such as ``dataset.source_dir``,
are added), and the trainer's compiled training step of that config (``train_step_fn``: the
head, probe fraction, sparse wrapper and weight decay, on the run's first batch of its data) is
timed in blocks of ``--block`` consecutive steps fed their own output, every arm once per round.
``--json PATH`` then also writes ``cost``: each arm's step time over SGD's, the table the study's
frontier reads. ``--models``, ``--batch-size``, ``--only`` and ``--probe-fraction`` do not apply
(the study's cells set the model and batch). Run it on a quiet machine.

Usage:
  python -m benchmarks.step_cost                         # ResNet-32, the small CNN and the MLP
  python -m benchmarks.step_cost --models resnet32 --batch-size 128 --rounds 7
  python -m benchmarks.step_cost --models resnet32 --only zo_looksam zo_esam --rounds 9
  python -m benchmarks.step_cost --models resnet32 --probe-fraction 0.25 --only zo_sam zo_looksam
  python -m benchmarks.step_cost --study experiments/studies/f1_frontier.py \
      --where sparse.method=dense --json docs/results/f1_frontier/cost.json
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

import zosam_jax as zj
from benchmarks import timing


class MLP(nn.Module):
  """A parameter-heavy MLP (784-1024-1024-256-10, about 2.1M parameters), no BatchNorm."""

  @nn.compact
  def __call__(self, x, train: bool = True):
    del train
    x = x.reshape((x.shape[0], -1))
    for width in (1024, 1024, 256):
      x = nn.relu(nn.Dense(width)(x))
    return nn.Dense(10)(x)


def _model(name: str):
  if name == "mlp":
    return MLP(), (28, 28, 1)
  from experiments import models  # the CNN and the CIFAR ResNets live with the experiments

  if name == "cnn":
    return models.SmallCNN(num_classes=10), (28, 28, 1)

  depth = int(name.removeprefix("resnet"))
  return models.CifarResNet(depth=depth, num_classes=10), (32, 32, 3)


def setup(name: str, batch_size: int):
  model, shape = _model(name)
  kx, ky, kp = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(kx, (batch_size,) + shape)
  y = jax.random.randint(ky, (batch_size,), 0, 10)
  variables = model.init(kp, x[:2], train=False)
  params = variables["params"]
  stats = variables.get("batch_stats", {})

  def per_example_loss_fn(p, batch):
    xb, yb = batch
    if stats:
      logits, new = model.apply(
        {"params": p, "batch_stats": stats}, xb, train=True, mutable=["batch_stats"]
      )
      aux = new["batch_stats"]
    else:
      logits, aux = model.apply({"params": p}, xb, train=True), {}
    return optax.softmax_cross_entropy_with_integer_labels(logits, yb), aux

  def loss_fn(p):
    losses, aux = per_example_loss_fn(p, (x, y))
    return losses.mean(), aux

  return params, stats, loss_fn, per_example_loss_fn, (x, y)


def sub_batch_loss(per_example_loss_fn, batch, fraction: float):
  """The loss on the first ``max(1, round(fraction B))`` examples (the trainer's probe loss)."""
  x, y = batch
  size = max(1, int(round(fraction * x.shape[0])))
  sub = (x[:size], y[:size])

  def loss_fn(p):
    losses, aux = per_example_loss_fn(p, sub)
    return losses.mean(), aux

  return loss_fn, size


def head_step(head, params, stats, loss_fn, **extra):
  return tx_step(optax.chain(head, optax.sgd(0.05, momentum=0.9)), params, stats, loss_fn, **extra)


def tx_step(tx, params, stats, loss_fn, **extra):
  """A jitted ``step(params, state)`` for a chain that takes ``loss_fn=`` (e.g. a sparse wrap)."""
  state = optax.tree_utils.tree_set(tx.init(params), aux=stats)

  def step(p, s):
    u, s = tx.update(None, s, p, loss_fn=loss_fn, **extra)
    return optax.apply_updates(p, u), s

  return jax.jit(step, donate_argnums=(0, 1)), (params, state)


def _optax_sam_step(params, loss_fn, rho):
  tx = optax.contrib.sam(
    optax.sgd(0.05, momentum=0.9),
    optax.chain(optax.contrib.normalize(), optax.sgd(rho)),
    sync_period=2,
    opaque_mode=True,
  )
  grad_fn = jax.grad(lambda p: loss_fn(p)[0])

  def step(p, s):
    u, s = tx.update(grad_fn(p), s, p, grad_fn=lambda q, _: grad_fn(q))
    return optax.apply_updates(p, u), s

  return jax.jit(step, donate_argnums=(0, 1)), (params, tx.init(params))


LOOKSAM_K = 5
REFERENCE_ROWS = ("forward", "draw")  # the pieces of the limits, not steps


def _fields(key: str) -> dict[str, str]:
  """The ``name=value`` words of a row's key (``zo_sam m=2 pbs=1 pf=0.25``)."""
  return dict(w.split("=") for w in key.split()[1:] if "=" in w)


def _period(key: str) -> int:
  """Steps a row is timed over: LookSAM's cost alternates, so a whole period (``k=``)."""
  return int(_fields(key).get("k", 1))


def _pf(fraction: float) -> str:
  return f" pf={fraction:g}"


def _timed_configs(
  name: str,
  batch_size: int,
  ms: list[int],
  rho: float,
  smoothing: float,
  vmapped_max: int,
  probe_fraction: float = 1.0,
):
  params, stats, loss_fn, per_example, batch = setup(name, batch_size)
  copy = lambda t: jax.tree.map(jnp.array, t)  # noqa: E731  (donated buffers need fresh copies)
  configs: dict[str, tuple[Callable, tuple]] = {}

  def head(key, h, **extra):
    configs[key] = head_step(h, copy(params), stats, loss_fn, **extra)

  head("sgd", zj.exact_gradient(has_aux=True))
  head("sam", zj.sam(rho, has_aux=True))
  configs["optax_sam"] = _optax_sam_step(copy(params), loss_fn, rho)
  esam_args = dict(per_example_loss_fn=per_example, batch=batch)
  head("esam b=0.6 g=0.5", zj.esam(rho, 0.6, 0.5, has_aux=True), **esam_args)
  head("looksam k=5", zj.looksam(rho, 5, 0.7, has_aux=True))
  head("gsam", zj.gsam(rho, alpha=0.1, has_aux=True))
  for m in ms:
    for pbs in sorted({1, m} if m <= vmapped_max else {1}):
      options = zj.ZerothOrderOptions(num_directions=m, smoothing=smoothing, probe_batch_size=pbs)
      zo = zj.zo_sam(rho, zeroth_order=options, seed=0, has_aux=True)
      head(f"zo_sam m={m} pbs={pbs}", zo)
  head("zo_looksam m=1 k=5", zj.looksam(rho, LOOKSAM_K, 0.7, ascent="zeroth_order", has_aux=True))
  head(
    "zo_esam m=1 b=0.6 g=0.5",
    zj.esam(rho, 0.6, 0.5, ascent="zeroth_order", has_aux=True),
    **esam_args,
  )
  fwd = jax.jit(lambda p: loss_fn(p)[0])
  configs["forward"] = (lambda p: (fwd(p),), (params,))
  if probe_fraction < 1.0:
    probe_loss_fn, _ = sub_batch_loss(per_example, batch, probe_fraction)
    pf = _pf(probe_fraction)
    for m in ms:
      options = zj.ZerothOrderOptions(num_directions=m, smoothing=smoothing, probe_batch_size=1)
      zo = zj.zo_sam(rho, zeroth_order=options, seed=0, has_aux=True)
      head(f"zo_sam m={m} pbs=1{pf}", zo, probe_loss_fn=probe_loss_fn)
    key = f"zo_looksam m=1 k={LOOKSAM_K}{pf}"
    zo_looksam = zj.looksam(rho, LOOKSAM_K, 0.7, ascent="zeroth_order", has_aux=True)
    head(key, zo_looksam, probe_loss_fn=probe_loss_fn)
    sub_fwd = jax.jit(lambda p: probe_loss_fn(p)[0])
    configs["forward" + pf] = (lambda p: (sub_fwd(p),), (params,))
  draw = jax.jit(functools.partial(zj.sample_direction, params=params))
  configs["draw"] = (lambda k: (draw(k),), (jax.random.PRNGKey(1),))
  return configs, sum(x.size for x in jax.tree.leaves(params))


def _is_step(key: str) -> bool:
  return key.split()[0] not in REFERENCE_ROWS


def run(
  name: str,
  batch_size: int,
  ms: list[int],
  rounds: int,
  rho: float,
  smoothing: float,
  vmapped_max: int,
  only: list[str] | None = None,
  probe_fraction: float = 1.0,
):
  configs, num_params = _timed_configs(
    name, batch_size, ms, rho, smoothing, vmapped_max, probe_fraction
  )
  if only:  # the reference rows are always kept: the report divides by them
    keep = set(only) | {"sgd", "sam", "optax_sam", *REFERENCE_ROWS}
    configs = {k: v for k, v in configs.items() if k.split()[0] in keep}
  temp = {k: timing.temp_bytes(fn, *args) for k, (fn, args) in configs.items() if _is_step(k)}
  # Steps are fed their own output; ZO-LookSAM rows are averaged over one period of steps.
  med = timing.median_times(configs, rounds, stateful=_is_step, calls=_period)
  return med, temp, num_params


def _limit(key: str, med: dict[str, float]) -> float | None:
  """ZO-SAM's physical limit for a row, ``t_sgd + m (2 t_fwd + t_draw)`` (per step of the period
  for ZO-LookSAM), with ``t_fwd`` on the probes' sub-batch for ``pf=`` rows; ``None`` otherwise."""
  if key.split()[0] not in ("zo_sam", "zo_looksam"):
    return None
  fields = _fields(key)
  forward = med.get("forward" + (_pf(float(fields["pf"])) if "pf" in fields else ""))
  if forward is None:
    return None
  return med["sgd"] + int(fields["m"]) * (2 * forward + med["draw"]) / _period(key)


def report(name, batch_size, med, temp, num_params, ms) -> list[dict]:
  t_sgd, t_fwd, t_draw = med["sgd"], med["forward"], med["draw"]
  print(f"\n## {name}, batch {batch_size}, {num_params / 1e6:.2f}M parameters")
  sub = {k: v for k, v in med.items() if k.startswith("forward pf=")}
  sub_text = "".join(f" | t_{k.replace(' ', '(')}) {v * 1e3:.1f} ms" for k, v in sub.items())
  print(
    f"t_sgd {t_sgd * 1e3:.1f} ms | t_forward {t_fwd * 1e3:.1f} ms{sub_text} | "
    f"t_draw {t_draw * 1e3:.1f} ms | SAM {med['sam'] * 1e3:.1f} ms "
    f"({med['sam'] / t_sgd:.2f}x SGD) | optax.contrib.sam {med['optax_sam'] * 1e3:.1f} ms "
    f"({med['optax_sam'] / t_sgd:.2f}x SGD) | ours/optax {med['sam'] / med['optax_sam']:.3f}"
  )
  print("| config | ms | img/s | x SGD | limit ms | / limit | / SAM | limit / SAM | temp MiB |")
  print("|---|---|---|---|---|---|---|---|---|")
  rows = []
  for k in [k for k in med if _is_step(k)]:
    limit = _limit(k, med)
    mib = None if temp.get(k) is None else temp[k] / 2**20
    row = dict(
      model=name,
      config=k,
      batch_size=batch_size,
      ms=med[k] * 1e3,
      images_per_s=batch_size / med[k],
      x_sgd=med[k] / t_sgd,
      limit_ms=None if limit is None else limit * 1e3,
      over_limit=None if limit is None else med[k] / limit,
      over_sam=med[k] / med["sam"],
      limit_over_sam=None if limit is None else limit / med["sam"],
      temp_mib=mib,
    )
    rows.append(row)
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    print(
      f"| {k} | {row['ms']:.1f} | {row['images_per_s']:.0f} | {row['x_sgd']:.2f} | "
      f"{fmt(row['limit_ms'], '.1f')} | {fmt(row['over_limit'], '.3f')} | "
      f"{row['over_sam']:.2f} | {fmt(row['limit_over_sam'], '.2f')} | {fmt(mib, '.1f')} |"
    )
  return rows


# ----------------------------------------------------------------------------- a study's arms


def study_arms(path: str, where: Sequence[str] = ()):
  """``(study, [(arm label, cell)], SGD's label)``: the arms of a study with a ``frontier``, each
  with the cell that is timed, its first (in the study's order) among those whose fields equal
  every ``FIELD=VALUE`` of ``where``.

  Raises:
    StudyError: a bad study, no ``frontier``, a bad ``where``, no matching cell or no SGD arm.
  """
  from experiments import stats
  from experiments.runner.spec import StudyError, format_value
  from experiments.runner.validate import load_study

  study = load_study(path)
  if study.frontier is None:
    raise StudyError(f"{path} has no 'frontier' key, which names the arms to time")
  conditions = []
  for text in where:
    field, sep, value = text.partition("=")
    if not sep or not field:
      raise StudyError(f"--where {text!r}: give FIELD=VALUE")
    conditions.append((field, value))
  arm_fields = stats.study_arm_fields(study)
  arms: dict[tuple, object] = {}
  for cell in study.expand(""):
    if all(format_value(cell.value(f)) == v for f, v in conditions):
      arms.setdefault(tuple(stats.norm(cell.value(f)) for f in arm_fields), cell)
  if not arms:
    raise StudyError(f"no cell of {study.name} has {' and '.join(where)}")
  name_at = arm_fields.index(stats.NAME_FIELD) if stats.NAME_FIELD in arm_fields else None
  sgd = stats.reference_arms(list(arms), stats.REFERENCES[0], name_at)
  if len(sgd) != 1:
    raise StudyError(f"{len(sgd)} SGD arms among the cells chosen; the cost is relative to one")
  label = lambda arm: ", ".join(map(stats.label, arm))  # noqa: E731
  return study, [(label(arm), cell) for arm, cell in arms.items()], label(sgd[0])


def cell_config(study, cell, extra: Sequence[str] = ()):
  """The config ``experiments.main`` runs for ``cell`` (plus ``--config.FIELD=VALUE`` ``extra``)."""
  from experiments import main as main_lib
  from experiments.runner.spec import resolve_config

  base = resolve_config(study.base_config) or study.base_config
  return main_lib.parse_args([f"--config={base}", *cell.override_args(), *extra]).config


def cost_table(seconds: dict[str, float], sgd: str) -> dict[str, float]:
  """Each arm's step time over SGD's."""
  return {arm: t / seconds[sgd] for arm, t in seconds.items()}


def run_study(path: str, where: Sequence[str], extra: Sequence[str], rounds: int, block: int):
  """Times the trainer's step of every arm of the study (see the module docstring); returns
  ``(rows, cost)``."""
  from benchmarks import trainer_loop

  study, arms, sgd = study_arms(path, where)
  configs: dict[str, tuple[Callable, tuple]] = {}
  batch_sizes = {}
  for label, cell in arms:
    config = cell_config(study, cell, extra)
    step, state, batch = trainer_loop.trainer_step(config)
    configs[label] = (lambda s, b, step=step: (step(s, b), b), (state, batch))
    batch_sizes[label] = config.batch_size
  # Every arm once per round, ``block`` consecutive steps each (LookSAM's period, RigL's updates).
  med = timing.median_times(configs, rounds, stateful=lambda k: True, calls=lambda k: block)
  cost = cost_table(med, sgd)
  cells = dict(arms)
  print(f"\n## {study.name}: the trainer's step per arm, {' '.join(where) or 'first cells'}")
  print("| arm | cell | batch | ms | img/s | x SGD |")
  print("|---|---|---|---|---|---|")
  rows = []
  for label, t in med.items():
    row = dict(
      arm=label,
      cell_id=cells[label].cell_id,
      batch_size=batch_sizes[label],
      ms=t * 1e3,
      images_per_s=batch_sizes[label] / t,
      x_sgd=cost[label],
    )
    rows.append(row)
    print(
      f"| {label} | {row['cell_id']} | {row['batch_size']} | {row['ms']:.1f} | "
      f"{row['images_per_s']:.0f} | {row['x_sgd']:.2f} |",
      flush=True,
    )
  return rows, cost


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument(
    "--models",
    nargs="+",
    default=["resnet32", "cnn", "mlp"],
    help="resnet20/32/56 (CIFAR ResNet, 32x32x3), cnn (the experiments' small CNN, 28x28x1) "
    "and/or mlp (28x28x1)",
  )
  timing.timing_flags(parser, rounds=5, batch_size=128)
  parser.add_argument("--num-directions", type=int, nargs="+", default=[1, 2, 4, 8])
  parser.add_argument("--rho", type=float, default=0.05)
  parser.add_argument("--smoothing", type=float, default=1e-3)
  parser.add_argument(
    "--vmapped-max",
    type=int,
    default=8,
    help="time probe_batch_size=m only for m up to this (vmapped convolutions are slow on CPU)",
  )
  parser.add_argument(
    "--only",
    nargs="+",
    choices=["esam", "looksam", "gsam", "zo_sam", "zo_looksam", "zo_esam"],
    help="time only these methods (besides SGD, SAM, optax SAM, the forward and the draw), "
    "e.g. to re-run a close comparison with more rounds",
  )
  parser.add_argument(
    "--probe-fraction",
    type=float,
    default=1.0,
    help="in (0, 1]: below 1, also time ZO-SAM and ZO-LookSAM whose probes see only this "
    "fraction of the batch (e.g. 0.25), against their limit with t_forward on that sub-batch",
  )
  parser.add_argument("--json", help="also write the rows to this JSON file")
  parser.add_argument(
    "--study",
    help="time the trainer's step of every arm of this study (its 'frontier' names them) instead "
    "of the heads above; --json then also writes the cost table its frontier reads. Extra "
    "--config.FIELD=VALUE arguments are added to every arm's config (e.g. dataset.source_dir)",
  )
  parser.add_argument(
    "--where",
    action="append",
    default=[],
    metavar="FIELD=VALUE",
    help="with --study: time the cells with this value (repeatable), e.g. sparse.method=dense "
    "(default: each arm's first cell)",
  )
  parser.add_argument(
    "--block",
    type=int,
    default=100,
    help="with --study: consecutive steps per timing (a multiple of LookSAM's k = 5; 100 holds "
    "one RigL mask update)",
  )
  args, extra = parser.parse_known_args(argv)
  if args.study is None and extra:
    parser.error(f"unrecognized arguments: {' '.join(extra)}")
  if args.study is not None:
    stray = [a for a in extra if not a.startswith("--config.")]
    if stray:
      parser.error(f"unrecognized arguments: {' '.join(stray)} (--study takes --config.F=V)")
    if args.only or args.probe_fraction != 1.0:
      parser.error("--only and --probe-fraction do not apply to --study (its cells set them)")
    if args.block < 1:
      parser.error(f"--block must be >= 1, got {args.block}")
    from experiments import input_pipeline, train
    from experiments.cli import UsageError
    from experiments.runner.spec import StudyError

    device = timing.device_line()
    print(device)
    try:
      rows, cost = run_study(args.study, args.where, extra, args.rounds, args.block)
    except (StudyError, UsageError, train.ConfigError, input_pipeline.DataMissingError) as e:
      parser.error(str(e))
    if args.json:
      with open(args.json, "w") as f:
        json.dump(
          {
            "device": device,
            "study": args.study,
            "where": args.where,
            "rounds": args.rounds,
            "block": args.block,
            "rows": rows,
            "cost": cost,
          },
          f,
          indent=1,
        )
    return
  for m in args.models:
    if m not in ("mlp", "cnn") and not (m.startswith("resnet") and m[6:].isdigit()):
      parser.error(f"--models: unknown model {m!r}; use resnet20, resnet32, resnet56, cnn or mlp")
  if not 0.0 < args.probe_fraction <= 1.0:
    parser.error(f"--probe-fraction must be in (0, 1], got {args.probe_fraction}")
  device = timing.device_line()
  print(device)
  rows = []
  for name in args.models:
    med, temp, n = run(
      name,
      args.batch_size,
      args.num_directions,
      args.rounds,
      args.rho,
      args.smoothing,
      args.vmapped_max,
      args.only,
      args.probe_fraction,
    )
    rows += report(name, args.batch_size, med, temp, n, args.num_directions)
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"device": device, "rows": rows}, f, indent=1)


if __name__ == "__main__":
  main()
