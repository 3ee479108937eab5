"""The compiled steps: ``train_step(state, batch) -> state`` and ``eval_step(state, batch)``.

``loss_fn(params)`` returns ``(loss, {"correct", "count", "batch_stats"})``. The head stores the
aux of its exact-gradient pass (at ``theta`` for SGD, at ``theta + eps`` for the SAM family; at
``theta`` for the zeroth-order optimizers) in its state, and the step reads it back with
``optax.tree_utils.tree_get(opt_state, "aux")`` (the library's state protocol).

BatchNorm convention: running statistics are updated once per step (once per micro-batch with
gradient accumulation), by the head's exact-gradient pass, i.e. with the batch statistics seen by
the gradient that is applied. Zeroth-order probes
and SAM's ascent pass never update them. Training loss/accuracy are those of that same pass (so,
for SAM-family optimizers, measured at the perturbed point).

Sub-batch probes (``optimizer.probe_fraction = f < 1``, heads with a zeroth-order ascent, and the
exact ascents of SAM and LookSAM): the head gets ``probe_loss_fn``, the same training-mode loss
on the first ``max(1, round(f B))`` examples of the batch, with the same dropout key. Its
BatchNorm layers normalise with THAT sub-batch's statistics, as the exact pass does with the whole
batch's: the probes differentiate the same function of the weights as the update, on fewer
examples (the m-sharpness regime of Foret et al. 2021), where inference mode would probe a
different function (running averages that lag the weights). The statistics the probes compute
are discarded with their aux.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

ACCUMULATORS = ("loss_sum", "correct", "count", "steps")
# With label noise (batches carry "clean_label"), counted over the flipped examples of a batch:
# predictions equal to the given (flipped) label, i.e. memorised; equal to the true label; count.
NOISE_COUNTS = ("correct_flipped", "true_flipped", "count_flipped")


def _counters(label_noise: bool) -> dict[str, jax.Array]:
  names = ("correct", "count", *(NOISE_COUNTS if label_noise else ()))
  return {name: jnp.zeros([], jnp.int32) for name in names}


def zero_accumulators(label_noise: bool = False) -> dict[str, jax.Array]:
  return {
    "loss_sum": jnp.zeros([], jnp.float32),
    **_counters(label_noise),
    "steps": jnp.zeros([], jnp.int32),
  }


def initial_state(
  params: Any, opt_state: Any, batch_stats: Any, label_noise: bool = False
) -> dict[str, Any]:
  """The train state at step 0: parameters, BatchNorm statistics, the optimizer state (its
  ``aux`` slot seeded with empty counters and the statistics) and zeroed metric accumulators.
  ``label_noise``: the batches carry ``clean_label`` (the counters of ``NOISE_COUNTS`` too)."""
  aux = {**_counters(label_noise), "batch_stats": batch_stats}
  return {
    "step": jnp.zeros([], jnp.int32),
    "params": params,
    "batch_stats": batch_stats,
    "opt_state": optax.tree_utils.tree_set(opt_state, aux=aux),
    "acc": zero_accumulators(label_noise),
  }


def training_logits(model: Any, variables: dict, images: jax.Array, dropout_rng: jax.Array):
  """``(logits, new batch_stats)`` of the trainer's loss: training mode, BatchNorm on the batch's
  statistics (``{}`` without BatchNorm), dropout from ``dropout_rng``."""
  logits, new_vars = model.apply(
    variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": dropout_rng}
  )
  return logits, new_vars.get("batch_stats", {})


def probe_size(batch_size: int, probe_fraction: float) -> int:
  """Examples the probes see: ``max(1, round(probe_fraction * batch_size))``."""
  return max(1, int(round(probe_fraction * batch_size)))


def make_train_step(
  model: Any,
  tx: optax.GradientTransformationExtraArgs,
  seed: int,
  batch_losses: str | None,
  accumulation_steps: int = 1,
  probe_fraction: float = 1.0,
) -> Callable:
  """``train_step(state, batch) -> state``; metrics accumulate in ``state["acc"]``.

  ``batch_losses``: ``None``, ``"per_example"`` (ESAM: per-example losses in training mode) or
  ``"fisher"`` (SSAM-F: per-example losses with BatchNorm in inference mode, since its Fisher
  takes gradients on one-example batches, which have no batch statistics of their own).

  ``accumulation_steps = k > 1``: the batch is split into ``k`` micro-batches (micro-batch ``j``
  holds rows ``j, j + k, j + 2k, ...``, so each device keeps its own rows) and ``tx`` (built with
  ``optax.MultiSteps`` after the head, ``optimizers.create_optimizer``) runs once per
  micro-batch in a ``lax.scan``: each micro-batch gets its own perturbation, BatchNorm statistics
  move once per micro-batch, and the parameters change once, at the last one. The step's
  training loss is the mean of the micro-batches' losses.
  ``probe_fraction < 1`` passes ``probe_loss_fn``, the loss on the batch's first
  :func:`probe_size` examples (see the module docstring; only heads whose ascent may see a
  sub-batch accept it, ``optimizers.Head.sub_batch_ascent``, which ``checks.validate_config``
  enforces).
  """

  def micro_step(params, batch_stats, opt_state, batch, dropout_rng):
    """One call of ``tx`` on ``batch``: ``(params, batch_stats, opt_state, loss, aux)``."""

    def per_example(params, sub_batch, train=True):
      variables = {"params": params, "batch_stats": batch_stats}
      if not train:
        logits, new_stats = model.apply(variables, sub_batch["image"], train=False), {}
      else:
        logits, new_stats = training_logits(model, variables, sub_batch["image"], dropout_rng)
      labels = sub_batch["label"]
      losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      predicted = jnp.argmax(logits, -1)
      aux = {
        "correct": jnp.sum(predicted == labels).astype(jnp.int32),
        "count": jnp.asarray(labels.shape[0], jnp.int32),
        "batch_stats": new_stats,
      }
      if "clean_label" in sub_batch:
        flipped = labels != sub_batch["clean_label"]
        aux["correct_flipped"] = jnp.sum(flipped & (predicted == labels)).astype(jnp.int32)
        aux["true_flipped"] = jnp.sum(flipped & (predicted == sub_batch["clean_label"])).astype(
          jnp.int32
        )
        aux["count_flipped"] = jnp.sum(flipped).astype(jnp.int32)
      return losses, aux

    def loss_fn(params):
      losses, aux = per_example(params, batch)
      return losses.mean(), aux

    extra = {}
    if probe_fraction != 1.0:
      size = probe_size(batch["label"].shape[0], probe_fraction)
      sub_batch = jax.tree.map(lambda x: x[:size], batch)

      def probe_loss_fn(params):
        losses, aux = per_example(params, sub_batch)
        return losses.mean(), aux

      extra["probe_loss_fn"] = probe_loss_fn
    # Added to (not replacing) probe_loss_fn: ZO-ESAM takes both.
    if batch_losses == "per_example":
      extra |= {"per_example_loss_fn": per_example, "batch": batch}
    elif batch_losses == "fisher":
      extra |= {
        "per_example_loss_fn": lambda p, b: per_example(p, b, train=False)[0],
        "batch": batch,
      }
    updates, opt_state = tx.update(None, opt_state, params, loss_fn=loss_fn, **extra)
    aux = optax.tree_utils.tree_get(opt_state, "aux")
    loss = optax.tree_utils.tree_get(opt_state, "value")
    params = optax.apply_updates(params, updates)
    return params, aux["batch_stats"], opt_state, loss, aux

  def train_step(state: dict, batch: dict) -> dict:
    dropout_rng = jax.random.fold_in(jax.random.key(seed), state["step"])
    if accumulation_steps == 1:
      params, batch_stats, opt_state, loss, aux = micro_step(
        state["params"], state["batch_stats"], state["opt_state"], batch, dropout_rng
      )
      counts = {k: v for k, v in aux.items() if k != "batch_stats"}
    else:
      k = accumulation_steps
      # [B, ...] -> [k, B/k, ...] with micro-batch j = rows j, j + k, ...: a device's rows of
      # the batch are contiguous, so it holds B/(k D) rows of every micro-batch (no transfer).
      micro = jax.tree.map(
        lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch
      )

      def body(carry, xs):
        micro_batch, j = xs
        params, batch_stats, opt_state, loss, aux = micro_step(
          *carry, micro_batch, jax.random.fold_in(dropout_rng, j)
        )
        counts = {k: v for k, v in aux.items() if k != "batch_stats"}
        return (params, batch_stats, opt_state), (loss, counts)

      carry = (state["params"], state["batch_stats"], state["opt_state"])
      (params, batch_stats, opt_state), (losses, counts) = jax.lax.scan(
        body, carry, (micro, jnp.arange(k))
      )
      loss, counts = jnp.mean(losses), jax.tree.map(jnp.sum, counts)
    acc = state["acc"]
    return {
      "step": state["step"] + 1,
      "params": params,
      "batch_stats": batch_stats,
      "opt_state": opt_state,
      "acc": {
        "loss_sum": acc["loss_sum"] + loss,
        **{k: acc[k] + v for k, v in counts.items()},
        "steps": acc["steps"] + 1,
      },
    }

  return train_step


def make_eval_step(model: Any) -> Callable:
  """``eval_step(state, batch) -> {"loss_sum", "correct", "count"}`` over unmasked rows."""

  def eval_step(state: dict, batch: dict) -> dict:
    logits = model.apply(
      {"params": state["params"], "batch_stats": state["batch_stats"]}, batch["image"], train=False
    )
    mask = batch["mask"]
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"])
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return {
      "loss_sum": jnp.sum(loss * mask),
      "correct": jnp.sum(correct * mask),
      "count": jnp.sum(mask),
    }

  return eval_step
