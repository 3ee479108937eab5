"""The library's type aliases: one ``PyTree``, and one ``Literal`` per family of option strings.

Each option's allowed values are written once, here. The runtime checks take their tuples from
these aliases (``typing.get_args``), so an annotation and its check cannot drift apart; the
checks stay, for callers without a type checker. Public as :mod:`zosam_jax.typing`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, TypeAlias

# A pytree of arrays (nested dicts, lists, tuples, NamedTuples, registered dataclasses, ``None``):
# parameters, gradients, masks, optimizer states. ``Any``, as in JAX's own annotations: custom
# nodes make the structure inexpressible as a static type (optax's ``Params`` is chex's
# ``ArrayTree``, a recursive union that ``jax.tree.map`` returns as ``Any`` anyway).
PyTree: TypeAlias = Any

# ``jax.tree.structure(tree)``, a ``jax.tree_util.PyTreeDef``. ``Any``: jaxlib ships no type stub
# for its C++ module, so mypy cannot resolve ``PyTreeDef`` (and refuses ``treedef != other``).
TreeDef: TypeAlias = Any

# ``params -> loss``, or ``params -> (loss, aux)`` with ``has_aux=True``.
LossFn: TypeAlias = Callable[[PyTree], Any]

# What ``perturb_leaves=`` (and ``prunable=``) accept, ``optax.masked``-style: a pytree of bools
# with the structure of the parameters, a callable ``params -> bool pytree``, or ``None`` (the
# default selection; see ``validation.resolve_leaf_selection``).
LeafSelection: TypeAlias = PyTree | Callable[[PyTree], PyTree] | None

# ----------------------------------------------------------------------------- zeroth order

# The law of a random direction (``ZerothOrderOptions.distribution``, ``sample_direction``).
DirectionDistribution: TypeAlias = Literal["gaussian", "rademacher", "sphere"]
# The finite-difference scheme of a random gradient estimate (``ZerothOrderOptions.scheme``).
Scheme: TypeAlias = Literal["central", "forward", "jvp"]

# ----------------------------------------------------------------------------- SAM family

# The ascent directions that read the loss: the exact gradient (SAM) or a random gradient
# estimate (ZO-SAM); ``sparse_sam``, ``looksam`` and ``esam`` take these.
LossAscent: TypeAlias = Literal["exact", "zeroth_order"]
# Every ascent of ``sharpness_aware``: those, and the Gaussian control that ignores the loss.
Ascent: TypeAlias = Literal[LossAscent, "random"]
# What a zeroth-order ascent may be guided by (``None``, the plain random estimate, aside).
Guidance: TypeAlias = Literal["previous_gradient"]
# How Sparse SAM's perturbation mask is chosen.
MaskMethod: TypeAlias = Literal["fisher", "dynamic", "random"]
# Where Sparse SAM's mask acts: on the perturbation, or inside the ascent's backward pass.
MaskForm: TypeAlias = Literal["explicit", "implicit"]

# ----------------------------------------------------------------------------- sparsity

# Which weights a mask keeps or drops together (``zosam_jax._src.groups``).
Pattern: TypeAlias = Literal["unstructured", "channel", "n:m"]
# How a sparse method spreads its kept weights over the prunable leaves.
SparsityDistribution: TypeAlias = Literal["uniform", "erk", "global"]
# How a dynamic method's drop fraction decays between mask updates.
DropSchedule: TypeAlias = Literal["cosine", "linear", "constant"]
# A dynamic method's initial mask.
MaskInit: TypeAlias = Literal["random", "magnitude"]

# ----------------------------------------------------------------------------- synthetic

# The synthetic test functions of ``zosam_jax.synthetic``.
ProblemName: TypeAlias = Literal["quadratic", "rosenbrock", "rastrigin", "ackley"]
