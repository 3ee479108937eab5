"""One run restored for analysis: its model, checkpointed state, mask, keys and data helpers."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from experiments.analyze.convolution import conv_cls
from experiments.analyze.losses import chunked_subset
from experiments.analyze.settings import DIFFERENTIATED_PARTS, Run, Settings
from experiments.cli import UsageError


class Restored:
  """A run's model and the state of its checkpoint, with what every part needs."""

  def __init__(self, run: Run, settings: Settings):
    import jax
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from experiments import trainer
    from experiments import workdir as workdir_lib

    self.run, self.settings = run, settings
    self.mesh = Mesh(np.asarray(jax.devices()), ("batch",))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("batch"))
    config = run.config
    self.model, _, state = trainer.build(
      config, run.spec, run.train_split, run.batches.steps_per_epoch, self.replicated
    )
    ckpt = workdir_lib.Checkpoints(run.workdir, config)
    try:
      try:
        self.state = ckpt.restore(state, step=run.step)
      except Exception:  # Another optimizer-state layout: the weights are all an analysis reads.
        self.state = ckpt.restore_weights(state, run.step)
    except Exception as e:  # Orbax raises several types for a checkpoint that does not fit.
      raise UsageError(
        f"cannot restore step {run.step} of {run.workdir} into the model its config builds "
        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
      ) from None
    self.params = self.state["params"]
    self.batch_stats = self.state["batch_stats"]
    import optax

    mask = optax.tree_utils.tree_get(self.state["opt_state"], "weight_mask")
    self.weight_mask = None if mask is None else jax.tree.map(lambda m: m.astype(bool), mask)
    self.num_params = int(sum(np.size(x) for x in jax.tree.leaves(self.params)))
    if self.weight_mask is None:
      self.active = self.num_params
    else:
      self.active = int(sum(int(np.sum(np.asarray(m))) for m in jax.tree.leaves(self.weight_mask)))
    keys = jax.random.split(jax.random.PRNGKey(settings.seed), 6)
    self.conv = settings.conv  # "auto" is decided per platform when the parts are lowered.
    names = ("hessian", "trace", "spectrum", "landscape", "variance", "ascent")
    self.keys = dict(zip(names, keys, strict=True))
    self.dropout_key = jax.random.fold_in(jax.random.key(config.seed), run.step)

  def model_for(self, part: str) -> Any:
    """The model ``part`` runs: for the differentiated parts, with the convolutions ``conv``
    asks for (:func:`~experiments.analyze.convolution.conv_cls`), else the run's."""
    cls = conv_cls(self.conv)
    if cls is not None and part in DIFFERENTIATED_PARTS:
      return self.model.clone(conv_general_dilated_cls=cls)
    return self.model

  def subset(self, n: int):
    return chunked_subset(self.run.train_split, self.run.spec, n, self.settings.chunk_size)

  def train_batches(self, count: int):
    """The ``count`` training batches the run would see after its checkpoint, stacked."""
    batches = [self.run.batches.batch(self.run.step + i) for i in range(count)]
    return {k: np.stack([b[k] for b in batches]) for k in ("image", "label")}

  def zeroth_order(self, num_directions: int):
    from experiments import optimizers

    opts = optimizers.zeroth_order_options(self.run.config.optimizer)
    return dataclasses.replace(opts, num_directions=num_directions)

  def rho(self) -> tuple[float, str]:
    rho = float(self.run.config.optimizer.rho)
    if rho > 0:
      return rho, "the run's optimizer.rho"
    return 0.05, "0.05 (the run's optimizer.rho is 0)"
