"""Sphinx configuration of the API reference, built from the docstrings.

Build (from the repository root; CI runs it with warnings as errors, ``.ci/docs.sh``)::

    python -m sphinx -W --keep-going -b html docs/api docs/api/_build/html

The pages are reStructuredText, one per public module; ``sphinx.ext.napoleon`` reads the
docstrings' Google-style sections. The Markdown guides in ``docs/`` are not part of this build.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys

# The checkout's package, not an installed copy.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

import zosam_jax  # noqa: E402
import zosam_jax.typing  # noqa: E402

project = "zosam_jax"
author = "The zosam_jax Authors"
copyright = "2026, The zosam_jax Authors"  # noqa: A001
version = release = zosam_jax.__version__

extensions = [
  "sphinx.ext.autodoc",
  "sphinx.ext.autosummary",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
]
exclude_patterns = ["_build"]
templates_path: list[str] = []

# Google-style docstrings. Attributes as ``:ivar:`` fields: NamedTuple and dataclass fields are
# then described once, under their class, and not again as attribute objects.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_use_rtype = False

autosummary_generate = False  # summary tables link to the module pages; no stub pages
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"  # `Array`, not `jax.jaxlib._jax.Array`
# The modules write `from __future__ import annotations`: keep the aliases' names in signatures.
# The public ones (zosam_jax.typing) link to their entries on the typing page.
autodoc_type_aliases = {name: name for name in ("Prunable", "Leaves", "GradFn")} | {
  name: f"zosam_jax.typing.{name}" for name in zosam_jax.typing.__all__
}

# Every cross-reference to this library's own objects must resolve (a broken one is a warning,
# so an error in CI); references to other projects (jax, optax, typing), to the type aliases in
# signatures (``PyTree``, a ``Literal``: plain text, see `_resolve_reexport`) and to private helpers
# are not checked (there is no intersphinx: CI is offline).
nitpicky = True
nitpick_ignore_regex = [
  (r"py:.*", r"(jax|jaxlib|numpy|optax|flax|collections|typing)\b.*"),
  (r"py:class", r"TypeAliasForwardRef"),  # how Sphinx 8 wraps autodoc_type_aliases
  (r"py:.*", r"zosam_jax\._src\..*"),  # private helpers named in a signature
  # A dataclass's generated __init__ escapes autodoc_type_aliases: ZerothOrderOptions' fields.
  (r"py:class", r"(DirectionDistribution|Scheme)"),
]

html_theme = "alabaster"
html_title = f"zosam_jax {release} API"
html_theme_options = {"description": "SAM and zeroth-order optimisation for sparse training"}


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields are described in their class's ``Attributes:``; their generated
  ``Alias for field number N`` entries would repeat them."""
  if (getattr(obj, "__doc__", "") or "").startswith("Alias for field number"):
    return True
  return skip


def _object(name: str):
  """The Python object a dotted ``name`` denotes, or None."""
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module(".".join(parts[:i]))
    except ImportError:
      continue
    try:
      for part in parts[i:]:
        obj = getattr(obj, part)
    except AttributeError:
      return None
    return obj
  return None


def _documented_name(domain, obj) -> str | None:
  """The name under which ``obj`` is documented, by identity (re-exports share the object)."""
  if inspect.ismodule(obj):
    defined = obj.__name__
  else:
    defined = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
  if defined in domain.objects:
    return defined
  for name in domain.objects:
    if name.startswith("zosam_jax") and _object(name) is obj:
      return name
  return None


def _resolve_reexport(app, env, node, contnode):
  """A reference to a name by a module that re-exports it (``zosam_jax.rge``,
  ``zosam_jax.sparse.rigl``, or ``rge`` inside ``zosam_jax.sharpness``) resolves to the page of
  the module that documents it, where each object is documented once."""
  if node.get("refdomain") != "py":
    return None
  target = node["reftarget"].lstrip("~.")
  module = node.get("py:module")
  domain = env.get_domain("py")
  package = module.rsplit(".", 1)[0] if module and "." in module else None
  candidates = [
    f"{module}.{target}" if module else None,  # a name of the current module
    f"{package}.{target}" if package else None,  # of its package (sparse, diagnostics)
    target,  # a full name
    f"zosam_jax.{target}",  # a top-level export named short
  ]
  for candidate in candidates:
    if not candidate or not candidate.startswith("zosam_jax"):
      continue
    obj = _object(candidate)
    if obj is None or isinstance(obj, int | float | str | bool):
      continue
    if type(obj).__module__ in ("typing", "types", "collections.abc"):
      return contnode  # a type alias of this library (PyTree, a Literal): plain text, no page
    name = _documented_name(domain, obj)
    if name is not None:
      for reftype in (node["reftype"], "obj"):
        found = domain.resolve_xref(env, node["refdoc"], app.builder, reftype, name, node, contnode)
        if found is not None:
          return found
  return None


def _public_bases(app, name, obj, options, bases):
  """Bases shown under a class: a private base of this library (``sparse.static._Static``) is
  replaced by its own bases, which are documented."""

  def public(base):
    if base.__name__.startswith("_") and base.__module__.startswith("zosam_jax"):
      return [b for parent in base.__bases__ for b in public(parent)]
    return [base]

  bases[:] = [b for base in list(bases) for b in public(base)]


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
  app.connect("autodoc-process-bases", _public_bases)
  app.connect("missing-reference", _resolve_reexport)
