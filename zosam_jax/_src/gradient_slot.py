"""The ``gradient`` slot of a head's state: the step's dense exact gradient, kept on request.

Every head that takes an exact gradient (the SAM family, ``exact_gradient``, LookSAM, GSAM, ESAM,
adaptive ZO-SAM) has a state field ``gradient``. It is ``None`` after ``init`` and the head leaves
it ``None``: no memory, no copy. A consumer that needs the gradient the head's update came from
(the sparse wrapper of RigL and MEST, which grow from it) requests it once, with
:func:`request`, on the freshly initialised state: the field then holds a float tree like the
parameters, and the head overwrites it at every step with the DENSE gradient of its exact pass
(``jax.grad`` with respect to every parameter, before any ``weight_mask``). Requested or not, the
state's structure never changes between steps, so a jitted step never retraces.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from zosam_jax._src.types import PyTree

FIELD = "gradient"


def keep(slot: PyTree | None, grads: PyTree) -> PyTree | None:
  """The slot's next value: ``grads`` (cast to the slot's dtypes) when requested, else ``None``."""
  if slot is None:
    return None
  return jax.tree.map(lambda s, g: jnp.asarray(g, s.dtype), slot, grads)


def _slots(state: Any) -> list:
  return optax.tree_utils.tree_get_all_with_path(state, FIELD)


def request(state: Any, params: PyTree) -> Any:
  """``state`` with its one ``gradient`` slot set to float zeros like ``params``.

  Unchanged when the state has no such slot (a chain without a gradient head, e.g. a fully
  zeroth-order optimizer) or more than one (two heads: which gradient is meant is ambiguous).
  """
  if len(_slots(state)) != 1:
    return state
  zeros = jax.tree.map(
    lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32)), params
  )
  return optax.tree_utils.tree_set(state, **{FIELD: zeros})


def read(state: Any) -> PyTree | None:
  """The requested gradient of the last step (``None`` when no slot was requested)."""
  slots = _slots(state)
  return slots[0][1] if len(slots) == 1 else None
