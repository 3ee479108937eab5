"""What the SAM-family heads share in a step: the extra arguments of ``update``, checked once; the
ascent direction, the perturbation and the exact pass made from them; and the fields every head
state has (``count``, ``key``, ``value``, ``aux``, ``gradient``).

A head writes only what is its own (its keys, its ascent kind, its control flow) as a ``step``
function and gets its ``update`` from :func:`update_fn`, so every head takes the same extra
arguments and refuses bad ones with the same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from zosam_jax._src import gradient_slot, losses, trees, validation
from zosam_jax._src import perturbation as perturb
from zosam_jax._src.options import ZerothOrderOptions
from zosam_jax._src.types import Ascent, Guidance, LeafSelection, LossFn, PyTree


class StepInputs(NamedTuple):
  """The arguments of one head step, checked, with the head's own loss convention.

  Attributes:
    params: ``theta``.
    loss_fn: the training loss, ``params -> loss`` (or ``(loss, aux)`` with ``has_aux``).
    selection: one bool per parameter leaf, the perturbed leaves.
    weight_mask: 0/1 pytree of active weights, or ``None``.
    weight_mask_counts: static ones-counts of ``weight_mask``'s leaves, or ``None``.
    probe_loss_fn: what zeroth-order probes evaluate instead of ``loss_fn`` (same signature), or
      ``None``.
    extra: the other extra arguments of ``update`` (e.g. ``per_example_loss_fn``, ``batch``).
    has_aux: whether ``loss_fn`` (and ``probe_loss_fn``) return ``(loss, aux)``.
    guidance: the head's ``guidance`` (``None`` or ``"previous_gradient"``).
  """

  params: PyTree
  loss_fn: LossFn
  selection: list[bool]
  weight_mask: PyTree | None = None
  weight_mask_counts: PyTree | None = None
  probe_loss_fn: LossFn | None = None
  extra: dict[str, Any] = {}
  has_aux: bool = False
  guidance: Guidance | None = None

  def ascent(
    self,
    kind: Ascent,
    zeroth_order: ZerothOrderOptions | None,
    key: jax.Array | None,
    prior: PyTree | None = None,
  ) -> PyTree:
    """The ascent direction at ``params`` (see ``perturbation.ascent_direction``); a zeroth-order
    one probes ``probe_loss_fn`` when given, draws only on the active weights and is guided by
    ``prior`` when given."""
    return perturb.ascent_direction(
      kind,
      zeroth_order,
      losses.probe_loss(self.loss_fn, self.probe_loss_fn),
      self.params,
      key,
      selection=self.selection,
      has_aux=self.has_aux,
      weight_mask=self.weight_mask,
      weight_mask_counts=self.weight_mask_counts,
      prior=prior,
    )

  def perturbation(self, direction: PyTree, **options: Any) -> PyTree:
    """``eps`` for ``direction`` on the selected, active weights; ``options``: ``rho`` and the
    others of ``perturbation.perturbation``."""
    return perturb.perturbation(
      self.params, direction, selection=self.selection, weight_mask=self.weight_mask, **options
    )

  def exact_pass(self, direction: PyTree, **options: Any) -> tuple[Any, PyTree]:
    """``(value, grads)`` of ``loss_fn`` at ``theta + eps(direction)``: the step's one exact
    forward-backward (``options`` as in :meth:`perturbation`)."""
    eps = self.perturbation(direction, **options)
    return jax.value_and_grad(self.loss_fn, has_aux=self.has_aux)(trees.add(self.params, eps))

  def advance(self, state: Any, out: Any, *, gradient: PyTree, **fields: Any) -> Any:
    """The state after this step: ``count + 1``; ``value``/``aux`` of the exact pass's output
    ``out``; the ``gradient`` slot filled from that pass's dense gradient when requested; with
    ``guidance``, the ``prior`` the next ascent probes first (that gradient restricted to the
    active weights of the perturbed leaves, see ``perturbation.next_prior``); and ``fields`` (the
    step's new key, the head's own fields) replaced."""
    if self.guidance is not None:
      fields["prior"] = perturb.next_prior(
        self.guidance, gradient, selection=self.selection, weight_mask=self.weight_mask
      )
    value, aux = losses.split_value_aux(out, self.has_aux)
    return state._replace(
      count=optax.safe_increment(state.count),
      value=value,
      aux=aux,
      gradient=gradient_slot.keep(state.gradient, gradient),
      **fields,
    )


def transform(
  init_fn: Callable[[PyTree], Any],
  step: Callable[[Any, StepInputs], tuple[PyTree, Any]],
  *,
  name: str,
  perturb_leaves: LeafSelection,
  probes: bool,
  has_aux: bool,
  guidance: Guidance | None = None,
) -> optax.GradientTransformationExtraArgs:
  """A head from its ``init_fn`` and its ``step(state, inputs) -> (updates, state)``: ``update``
  checks the head's extra arguments once and calls ``step``.

  ``update(updates, state, params, *, loss_fn, weight_mask=None, weight_mask_counts=None,
  probe_loss_fn=None, **extra)`` ignores ``updates``. ``name`` names the head in the errors;
  ``probes``: whether this head makes zeroth-order probes (otherwise ``probe_loss_fn`` is refused).
  """

  def update(
    updates: PyTree,
    state: Any,
    params: PyTree | None = None,
    *,
    loss_fn: LossFn | None = None,
    weight_mask: PyTree | None = None,
    weight_mask_counts: PyTree | None = None,
    probe_loss_fn: LossFn | None = None,
    **extra: Any,
  ) -> tuple[PyTree, Any]:
    del updates
    losses.require_loss_fn(name, loss_fn, params)
    assert loss_fn is not None  # require_loss_fn raised otherwise
    if not probes:
      losses.refuse_probe_loss_fn(name, probe_loss_fn)
    validation.check_mask_like("weight_mask", weight_mask, params)
    selection = validation.resolve_leaf_selection("perturb_leaves", perturb_leaves, params)
    inputs = StepInputs(
      params,
      loss_fn,
      selection,
      weight_mask,
      weight_mask_counts,
      probe_loss_fn,
      extra,
      has_aux,
      guidance,
    )
    return step(state, inputs)

  return optax.GradientTransformationExtraArgs(init_fn, update)


def new_state(state_type: type, seed: int, **fields: Any) -> Any:
  """A fresh head state: ``count`` 0, ``key`` from ``seed``, ``value`` 0, ``aux`` None, and
  ``fields`` (the head's own)."""
  return state_type(
    count=jnp.zeros([], jnp.int32),
    key=jax.random.PRNGKey(seed),
    value=jnp.zeros([], jnp.float32),
    aux=None,
    **fields,
  )


def init_state(state_type: type, seed: int, **fields: Any) -> Any:
  """:func:`new_state` with ``seed`` checked first (for heads whose factory leaves it to init)."""
  validation.check_int("seed", seed)
  return new_state(state_type, seed, **fields)
