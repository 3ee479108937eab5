"""Layering of the library: modules use only each other's public names.

Every ``.py`` under ``zosam_jax/`` is parsed with ``ast`` (nothing is imported). A module may not
``from <zosam_jax module> import _name``, nor reach ``mod._name`` through a name bound by an
import of a zosam_jax module. The private package ``zosam_jax._src`` is allowed as an import path
(``from zosam_jax._src import trees``): its modules expose public names. No library module may
import the ``experiments`` or ``benchmarks`` packages.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "zosam_jax"
PRIVATE_PACKAGE = "_src"  # a private path segment whose modules are imported by name
FORBIDDEN_PACKAGES = ("experiments", "benchmarks")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: pathlib.Path) -> str:
  name = _module_name(path)
  return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(node: ast.ImportFrom, path: pathlib.Path) -> str:
  """The absolute module a ``from ... import`` reads from."""
  if not node.level:
    return node.module or ""
  base = _package_of(path).split(".")
  base = base[: len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def _is_library(module: str) -> bool:
  return module == "zosam_jax" or module.startswith("zosam_jax.")


def _private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _attribute_chain(node: ast.Attribute) -> tuple[str | None, list[str]]:
  """(root name, attributes in order) of ``root.a.b.c``; root None if not a plain name."""
  attrs = []
  while isinstance(node, ast.Attribute):
    attrs.append(node.attr)
    node = node.value
  attrs.reverse()
  return (node.id if isinstance(node, ast.Name) else None), attrs


def violations(source: str, path: pathlib.Path) -> list[str]:
  """Every use of another module's underscore name, and every import of a forbidden package."""
  tree = ast.parse(source, filename=str(path))
  where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
  found = []
  bound: set[str] = set()  # names bound by imports of zosam_jax modules

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if alias.name.split(".")[0] in FORBIDDEN_PACKAGES:
          found.append(f"{where}:{node.lineno}: imports {alias.name}")
        if _is_library(alias.name):
          private = [p for p in alias.name.split(".") if _private(p) and p != PRIVATE_PACKAGE]
          if private:
            found.append(f"{where}:{node.lineno}: import {alias.name} (private {private})")
          bound.add(alias.asname or alias.name.split(".")[0])
    elif isinstance(node, ast.ImportFrom):
      module = _resolve(node, path)
      if module.split(".")[0] in FORBIDDEN_PACKAGES:
        found.append(f"{where}:{node.lineno}: imports from {module}")
      if not _is_library(module):
        continue
      private = [p for p in module.split(".") if _private(p) and p != PRIVATE_PACKAGE]
      if private:
        found.append(f"{where}:{node.lineno}: from {module} (private {private})")
      for alias in node.names:
        if _private(alias.name) and alias.name != PRIVATE_PACKAGE:
          found.append(f"{where}:{node.lineno}: from {module} import {alias.name}")
        bound.add(alias.asname or alias.name)
    elif isinstance(node, ast.Call):
      # importlib.import_module("experiments...") / __import__("benchmarks...")
      fn = node.func
      name = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
      if name in ("import_module", "__import__") and node.args:
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
          if arg.value.split(".")[0] in FORBIDDEN_PACKAGES:
            found.append(f"{where}:{node.lineno}: imports {arg.value} dynamically")

  inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and id(node) not in inner:  # each chain once, whole
      root, attrs = _attribute_chain(node)
      if root in bound:
        private = [a for a in attrs if _private(a) and a != PRIVATE_PACKAGE]
        if private:
          found.append(f"{where}:{node.lineno}: {root}.{'.'.join(attrs)} uses {private}")
  return sorted(set(found))


LIBRARY_FILES = sorted(PACKAGE.rglob("*.py"))


def test_the_library_has_modules_to_check():
  names = {_module_name(p) for p in LIBRARY_FILES}
  assert {
    "zosam_jax",
    "zosam_jax.sharpness",
    "zosam_jax._src",
    "zosam_jax._src.trees",
    "zosam_jax.sparse",
    "zosam_jax.sparse.wrapper",
  } <= names


@pytest.mark.parametrize("path", LIBRARY_FILES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_uses_another_modules_private_names(path):
  assert violations(path.read_text(), path) == []


FAKE = PACKAGE / "sparse" / "fake.py"  # a path inside the package, for relative imports


@pytest.mark.parametrize(
  "source, expected",
  [
    ("from zosam_jax.estimators import _flatten\n", "import _flatten"),
    ("from zosam_jax import _control_flow\n", "import _control_flow"),
    ("from zosam_jax._src.trees import _mask_counts\n", "import _mask_counts"),
    ("from .masks import _ranks\n", "from zosam_jax.sparse.masks import _ranks"),
    ("from .. import _validation\n", "from zosam_jax import _validation"),
    ("from zosam_jax._src import trees\ntrees._mask_counts(1, 2, 3)\n", "trees._mask_counts"),
    ("from zosam_jax._src import trees as t\nx = t._mask_counts\n", "t._mask_counts"),
    ("import zosam_jax\nzosam_jax.estimators._flatten\n", "zosam_jax.estimators._flatten"),
    ("import zosam_jax.sparse.masks as m\nm._ranks\n", "m._ranks"),
    ("import zosam_jax._private\n", "private ['_private']"),
    ("from . import masks\nmasks._ranks\n", "masks._ranks"),
    ("import experiments.models\n", "imports experiments.models"),
    ("from benchmarks import step_cost\n", "imports from benchmarks"),
    ("from experiments.models import CifarResNet\n", "imports from experiments.models"),
    ("import importlib\nimportlib.import_module('experiments.models')\n", "dynamically"),
  ],
)
def test_the_checker_finds_what_it_forbids(source, expected):
  found = violations(source, FAKE)
  assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
  "source",
  [
    "from zosam_jax._src import trees, validation\ntrees.flatten\nvalidation.check_int\n",
    "from zosam_jax import _src\n",
    "import zosam_jax\nzosam_jax._src.trees.flatten\nzosam_jax.__version__\n",
    "from zosam_jax._src.options import ZerothOrderOptions\n",
    "import jax\njax._src.core\n",  # another package's private names are not ours to police
    "class A:\n  def f(self):\n    return self._x\n",  # a module's own private names
    "from .masks import keep_top_k\n",
  ],
)
def test_the_checker_allows_public_names_and_the_private_package(source):
  assert violations(source, FAKE) == []
