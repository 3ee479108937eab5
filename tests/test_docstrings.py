"""Every exported name has a Google-style docstring the API reference can render.

The public API is every name a public module exports (its ``__all__``, else the functions and
classes it defines whose names do not start with ``_``), over ``zosam_jax`` and every module
below it outside ``zosam_jax._src``, plus the public methods of those classes. For each:

* a docstring;
* ``Args:`` naming every parameter, for a callable that takes any (``self``/``cls`` aside); a
  ``NamedTuple`` or dataclass documents its fields under ``Attributes:`` instead (a field may be
  documented by a base class of this library), a method overriding a public base class's method
  may leave its arguments to the base's docstring, and a property needs a docstring only;
* ``Returns:`` for a function that returns something (its return annotation is not ``None``);
* ``References:`` naming the paper, for each function or class in :data:`PAPERS`, the ones that
  implement a method or measurement from the literature.

Sections are Google style, as ``sphinx.ext.napoleon`` reads them (``docs/api``): a line
``Args:`` and entries ``name: text`` (or ``a, b: text``, ``**kwargs: text``) indented below it.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pathlib
import pkgutil
import re
from collections.abc import Iterator
from typing import Any

import pytest

import zosam_jax

SECTIONS = (
  "Args",
  "Arguments",
  "Attributes",
  "Example",
  "Examples",
  "Note",
  "Notes",
  "Raises",
  "References",
  "Returns",
  "Warning",
  "Yields",
)

# What implements (or measures) something from a paper, and words its References must hold (an
# author's name; the arXiv id where one is cited). Add a name here with any new method.
ZO_SAM = ("Ji et al.", "2603.13115")
SAM = ("Foret et al.",)
SSAM = ("Mi et al.",)
ZOSA = ("Fu et al.", "2511.09156")
MEZO = ("Malladi et al.",)
PAPERS: dict[str, tuple[str, ...]] = {
  "zosam_jax.sharpness.perturbation": SAM + ("Kwon et al.",),
  "zosam_jax.sharpness.sam_gradient": SAM + ("Kwon et al.",),
  "zosam_jax.sharpness.zo_sam_gradient": ZO_SAM,
  "zosam_jax.sharpness.sharpness_aware": SAM + ZO_SAM,
  "zosam_jax.sharpness.sam": SAM + ("Kwon et al.",),
  "zosam_jax.sharpness.zo_sam": ZO_SAM,
  "zosam_jax.sharpness.random_perturbation": ("Bisla et al.",),
  "zosam_jax.sharpness.sparse_sam": SSAM,
  "zosam_jax.efficient_sam.looksam": ("Liu et al.",),
  "zosam_jax.efficient_sam.gsam": ("Zhuang et al.",),
  "zosam_jax.efficient_sam.esam": ("Du et al.",),
  "zosam_jax.efficient_sam.adaptive_zo_sam": ZO_SAM,
  "zosam_jax.estimators.rge": ("Nesterov & Spokoiny",) + ZO_SAM,
  "zosam_jax.estimators.rge_with_coefficients": ("Nesterov & Spokoiny",),
  "zosam_jax.estimators.rge_dynamic": ("Nesterov & Spokoiny",),
  "zosam_jax.zeroth_order.zosa_direction": ZOSA,
  "zosam_jax.zeroth_order.scale_by_zosa": ZOSA,
  "zosam_jax.zeroth_order.zosa": ZOSA,
  "zosam_jax.zeroth_order.spsa_direction": MEZO,
  "zosam_jax.zeroth_order.scale_by_spsa": MEZO,
  "zosam_jax.zeroth_order.mezo": MEZO,
  "zosam_jax.zeroth_order.zo_sgd": ("Ghadimi & Lan",),
  "zosam_jax.zeroth_order.zo_adam": ("Chen et al.",),
  "zosam_jax.perturbation_masks.top_k_mask": SSAM,
  "zosam_jax.perturbation_masks.random_mask": SSAM,
  "zosam_jax.perturbation_masks.cosine_drop_fraction": SSAM,
  "zosam_jax.perturbation_masks.drop_and_regrow": SSAM,
  "zosam_jax.perturbation_masks.dynamic_update": SSAM,
  "zosam_jax.perturbation_masks.empirical_fisher": SSAM,
  "zosam_jax.sparse.static.SNIP": ("Lee et al.",),
  "zosam_jax.sparse.static.snip_scores": ("Lee et al.",),
  "zosam_jax.sparse.static.GraSP": ("Wang et al.",),
  "zosam_jax.sparse.static.grasp_scores": ("Wang et al.",),
  "zosam_jax.sparse.static.LTH": ("Frankle & Carbin",),
  "zosam_jax.sparse.dynamic.SET": ("Mocanu et al.",),
  "zosam_jax.sparse.dynamic.RigL": ("Evci",),
  "zosam_jax.sparse.dynamic.MEST": ("Yuan et al.",),
  "zosam_jax.sparse.dynamic.DSR": ("Mostafa & Wang",),
  "zosam_jax.sparse.distributions.erk_densities": ("Evci et al.",),
  "zosam_jax.sparse.schedules.UpdateSchedule": ("Evci et al.",),
  "zosam_jax.diagnostics.hessian.hessian_eigenvalues": ("Golub & Van Loan",),
  "zosam_jax.diagnostics.hessian.hessian_trace": ("Hutchinson",),
  "zosam_jax.diagnostics.hessian.hessian_spectrum": ("Ghorbani et al.",),
  "zosam_jax.diagnostics.hessian.spectral_density": ("Ghorbani et al.",),
  "zosam_jax.diagnostics.landscape.filter_normalized_direction": ("Li et al.",),
  "zosam_jax.diagnostics.landscape.loss_landscape": ("Li et al.",),
  "zosam_jax.diagnostics.ascent.ascent_quality": SAM + ZO_SAM,
  "zosam_jax.diagnostics.gradient_noise.gradient_variance": ZO_SAM,
  "zosam_jax.diagnostics.gradient_noise.head_gradient_fn": ZO_SAM,
}


def public_modules() -> list[str]:
  """``zosam_jax`` and every module below it outside ``_src``, in import order."""
  names = ["zosam_jax"]
  for info in pkgutil.walk_packages(zosam_jax.__path__, "zosam_jax."):
    if not any(part.startswith("_") for part in info.name.split(".")):
      names.append(info.name)
  return names


def _import(name: str):
  if name == "zosam_jax.flax_utils":
    pytest.importorskip("flax", reason="zosam_jax.flax_utils needs flax (pip install flax)")
  return importlib.import_module(name)


def exported(module) -> Iterator[tuple[str, Any]]:
  """``(qualified name, object)`` of the functions and classes ``module`` exports."""
  if hasattr(module, "__all__"):
    names = list(module.__all__)
  else:
    names = [
      n
      for n, obj in vars(module).items()
      if not n.startswith("_") and getattr(obj, "__module__", None) == module.__name__
    ]
  for name in names:
    obj = getattr(module, name)
    if inspect.isfunction(obj) or inspect.isclass(obj):
      yield f"{module.__name__}.{name}", obj


def home(obj: Any, fallback: str) -> str:
  """The name ``obj`` is documented under: its defining module's, or (defined in ``_src``)
  the public module's that exports it."""
  module = getattr(obj, "__module__", "")
  if module == "zosam_jax" or (module.startswith("zosam_jax.") and "._src" not in module):
    return f"{module}.{obj.__qualname__}"
  return fallback


def public_api() -> dict[str, Any]:
  """Every exported function and class, and every public method of those classes, once each."""
  out: dict[str, Any] = {}
  seen: set[int] = set()
  for module_name in public_modules():
    module = _import(module_name)
    for name, obj in exported(module):
      if id(obj) not in seen:
        seen.add(id(obj))
        out[home(obj, name)] = obj
  for name, obj in list(out.items()):
    if inspect.isclass(obj):
      for attr, member in class_members(obj).items():
        if id(member) not in seen:
          seen.add(id(member))
          out[f"{name}.{attr}"] = member
          if overrides(obj, attr):
            OVERRIDES.add(f"{name}.{attr}")
  return dict(sorted(out.items()))


# Methods that override a documented public base class's method of the same name: their own
# docstring says what differs and may leave the arguments to the base's (``MEST.drop``).
OVERRIDES: set[str] = set()


def _library_private(cls: type) -> bool:
  return cls.__name__.startswith("_") and cls.__module__.startswith("zosam_jax")


def class_members(cls: type) -> dict[str, Any]:
  """The public methods and properties of ``cls``: its own, and those it inherits from a
  private class of this library (``sparse.static._Static.wrap``), whose page is the class's."""
  out: dict[str, Any] = {}
  for base in cls.__mro__:
    if base is not cls and not _library_private(base):
      continue
    for attr, member in vars(base).items():
      if attr.startswith("_") or attr in out:
        continue
      if isinstance(member, staticmethod | classmethod):
        member = member.__func__
      if inspect.isfunction(member) or isinstance(member, property):
        out[attr] = member
  return out


def overrides(cls: type, attr: str) -> bool:
  """Whether ``cls.attr`` overrides the same name of a public base class of this library."""
  return any(
    attr in vars(base)
    for base in cls.__mro__[1:]
    if base.__module__.startswith("zosam_jax") and not _library_private(base)
  )


API = public_api()


def sections(doc: str) -> dict[str, list[str]]:
  """The Google-style sections of a cleaned docstring: name -> its lines (dedented)."""
  out: dict[str, list[str]] = {}
  current = None
  for line in doc.splitlines():
    match = re.fullmatch(r"(\w+):\s*", line)
    if match and match.group(1) in SECTIONS:
      current = out.setdefault(match.group(1), [])
    elif current is not None:
      if line and not line[0].isspace():
        current = None  # back to the body
      else:
        current.append(line)
  return {k: inspect.cleandoc("\n".join(v)).splitlines() for k, v in out.items()}


def entry_names(lines: list[str]) -> set[str]:
  """The names an ``Args:``/``Attributes:`` section documents (its unindented entries)."""
  names: set[str] = set()
  for line in lines:
    if not line or line[0].isspace():
      continue
    match = re.match(r"([\w*, ]+?)(\s*\(.*\))?:", line)
    if match:
      names.update(n.strip().lstrip("*") for n in match.group(1).split(","))
  return names


def parameters(obj: Any) -> list[str]:
  if inspect.isclass(obj):
    return []
  sig = inspect.signature(obj)
  return [p for p in sig.parameters if p not in ("self", "cls")]


def fields(cls: type) -> list[str]:
  if dataclasses.is_dataclass(cls):
    return [f.name for f in dataclasses.fields(cls)]
  if issubclass(cls, tuple) and hasattr(cls, "_fields"):
    return list(cls._fields)
  return []


def documented_fields(cls: type) -> set[str]:
  """Fields named under ``Attributes:`` by ``cls`` or a base class of this library."""
  names: set[str] = set()
  for base in cls.__mro__:
    if base.__module__.startswith("zosam_jax") and base.__doc__:
      names |= entry_names(sections(inspect.cleandoc(base.__doc__)).get("Attributes", []))
  return names


def returns_something(obj: Any) -> bool:
  annotation = inspect.signature(obj).return_annotation
  return annotation not in (None, "None", type(None))


def test_the_walk_finds_the_api():
  """The walk sees the modules and names it must (a broken walk would pass everything)."""
  modules = public_modules()
  for name in ("zosam_jax.sharpness", "zosam_jax.sparse.dynamic", "zosam_jax.diagnostics"):
    assert name in modules
  assert not [m for m in modules if "_src" in m]
  for name in (
    "zosam_jax.sharpness.sam",
    "zosam_jax.zeroth_order.mezo",
    "zosam_jax.sparse.dynamic.RigL",
    "zosam_jax.sparse.wrapper.SparseMethod.mask_from_scores",
    "zosam_jax.ZerothOrderOptions",
    "zosam_jax.diagnostics.hessian_vector_product",
    "zosam_jax.sparse.dynamic.DynamicMethod.schedule",
  ):
    assert name in API, name
  # The static methods' wrap, inherited from the private sparse.static._Static.
  assert [k for k in API if k.startswith("zosam_jax.sparse.static.") and k.endswith(".wrap")]
  assert len(API) > 130
  assert set(PAPERS) <= set(API), sorted(set(PAPERS) - set(API))
  # The override exemption covers methods only, e.g. MEST's drop (DynamicMethod documents it).
  assert "zosam_jax.sparse.dynamic.MEST.drop" in OVERRIDES
  assert all(
    name.count(".") >= 3 and inspect.isclass(API[name.rsplit(".", 1)[0]]) for name in OVERRIDES
  )


@pytest.mark.parametrize("name", list(API))
def test_docstring_sections(name):
  obj = API[name]
  doc = obj.__doc__
  assert doc and doc.strip(), f"{name} has no docstring"
  doc = inspect.cleandoc(doc)
  found = sections(doc)
  problems = []
  if isinstance(obj, property) or name in OVERRIDES:
    pass  # an attribute, or an override whose base documents the arguments
  elif inspect.isclass(obj):
    names = fields(obj)
    if names:
      missing = [n for n in names if n not in documented_fields(obj)]
      if missing:
        problems.append(f"fields not under Attributes: {missing}")
  else:
    params = parameters(obj)
    if params:
      if "Args" not in found:
        problems.append("no Args: section")
      else:
        missing = [p for p in params if p not in entry_names(found["Args"])]
        if missing:
          problems.append(f"parameters not under Args: {missing}")
    if returns_something(obj) and "Returns" not in found and "Yields" not in found:
      problems.append("no Returns: section")
  if name in PAPERS:
    refs = "\n".join(found.get("References", []))
    if not refs:
      problems.append("no References: section")
    missing = [w for w in PAPERS[name] if w not in refs]
    if refs and missing:
      problems.append(f"References do not name {missing}")
  assert not problems, f"{name}: " + "; ".join(problems)


def test_the_checker_reads_google_sections():
  doc = inspect.cleandoc(
    """Summary.

    Args:
      a: first.
      b, c: the next two,
        on two lines.
      **extra: the rest.

    Returns:
      Something.
    """
  )
  found = sections(doc)
  assert entry_names(found["Args"]) == {"a", "b", "c", "extra"}
  assert found["Returns"] == ["Something."]
  assert "References" not in sections("Body.\n\nReferences: inline, not a section.")


API_PAGES = pathlib.Path(__file__).resolve().parents[1] / "docs" / "api"


def test_every_public_module_has_an_api_page():
  """``docs/api`` (the Sphinx reference) has an ``automodule`` of every public module."""
  if not API_PAGES.is_dir():
    pytest.skip(f"{API_PAGES} is not here (the wheel check runs without the checkout's docs)")
  pages = "\n".join(p.read_text() for p in API_PAGES.rglob("*.rst"))
  documented = set(re.findall(r"^\.\. automodule:: (\S+)$", pages, flags=re.M))
  assert set(public_modules()) - documented == set()
