"""Layering of the code base: no import cycle, no layer leak, no borrowed private name.

Every ``.py`` file under ``zosam_jax/``, ``experiments/``, ``benchmarks/`` and ``examples/`` is
parsed with ``ast`` (nothing is imported) and EVERY import in it counts, wherever it stands: at
module level, inside functions and classes, under ``if``/``try``, under
``if __name__ == "__main__":``, and ``importlib.import_module("...")`` / ``__import__("...")``
with a constant name. An import inside a function is a dependency like any other: it delays
loading, it does not remove the edge.

The graph. Each file is a module (a package's ``__init__.py`` is the package). An import is an
edge from the importing module to the module it names, relative imports resolved first:
``import a.b.c`` and ``from a.b.c import x`` name ``a.b.c``; ``from a.b import c`` names the
module ``a.b.c`` when there is one, else ``a.b``; a dotted name that is not a module of these
packages names its longest prefix that is. The parent packages Python also initialises (``a``
and ``a.b`` for ``a.b.c``) are not edges: a package whose ``__init__`` re-exports its submodules
would otherwise close a cycle with every submodule that imports a sibling.

The rules:

1. No cycle: no two modules reach each other (no strongly connected component of two or more).
2. Layers: ``zosam_jax`` (the library) imports nothing of ``experiments``, ``benchmarks``,
   ``examples`` or ``tests``; ``zosam_jax.sparse`` imports nothing of ``zosam_jax.diagnostics``
   (the read-only measurements sit above the training code: what both need is in
   ``zosam_jax._src``); ``experiments`` imports nothing of ``benchmarks``, ``examples`` or
   ``tests``.
3. Private names: a module uses no underscore name (``_x``; not ``__x__``) of another module of
   these packages, neither imported (``from m import _x``) nor reached as an attribute of a name
   an import bound (``m._x``, ``pkg.m._x``); its own ``self._x`` and other libraries' names
   (``jax._src``) are not checked. A private MODULE (a path segment starting with ``_``) is
   imported only from inside the package that holds it: ``zosam_jax._src`` (the library's
   private layer, whose modules expose public names) from ``zosam_jax`` modules, and e.g.
   ``benchmarks._pre_grain_batches`` from ``benchmarks`` modules.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("zosam_jax", "experiments", "benchmarks", "examples")
# importer package -> packages it must not import (rule 2); prefixes match whole segments.
FORBIDDEN = {
  "zosam_jax": ("experiments", "benchmarks", "examples", "tests"),
  "zosam_jax.sparse": ("zosam_jax.diagnostics",),
  "experiments": ("benchmarks", "examples", "tests"),
}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


FILES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))
MODULES = {_module_name(p): p for p in FILES}


def _within(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def _private(name: str) -> bool:
  return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclasses.dataclass(frozen=True)
class Import:
  """One imported module (``target``, absolute) at ``line``; ``name`` for ``from m import name``."""

  line: int
  target: str
  name: str | None = None
  dynamic: bool = False


def _package_of(module: str, is_package: bool) -> str:
  return module if is_package else module.rpartition(".")[0]


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
  """The module a ``from ... import`` reads from, relative imports resolved."""
  if not node.level:
    return node.module or ""
  base = _package_of(module, is_package).split(".")
  base = base[: len(base) - (node.level - 1)]
  return ".".join(base + ([node.module] if node.module else []))


def imports_of(tree: ast.AST, module: str, is_package: bool) -> list[Import]:
  """Every import of ``tree`` (see the module docstring), in any block."""
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [Import(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      source = _absolute(node, module, is_package)
      found += [Import(node.lineno, source, alias.name) for alias in node.names]
    elif isinstance(node, ast.Call) and node.args:
      fn = node.func
      called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
      arg = node.args[0]
      if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
        if isinstance(arg.value, str):
          found.append(Import(node.lineno, arg.value, dynamic=True))
  return found


def resolve(imp: Import, modules) -> str | None:
  """The module of ``modules`` an import names (see the module docstring), or None."""
  if imp.name is not None and f"{imp.target}.{imp.name}" in modules:
    return f"{imp.target}.{imp.name}"
  parts = imp.target.split(".")
  for end in range(len(parts), 0, -1):
    if ".".join(parts[:end]) in modules:
      return ".".join(parts[:end])
  return None


def _attribute_chain(node: ast.Attribute) -> tuple[str | None, list[str]]:
  """(root name, attributes in order) of ``root.a.b.c``; root None if not a plain name."""
  attrs = []
  while isinstance(node, ast.Attribute):
    attrs.append(node.attr)
    node = node.value
  attrs.reverse()
  return (node.id if isinstance(node, ast.Name) else None), attrs


def private_violations(tree: ast.AST, module: str, is_package: bool, modules) -> list[str]:
  """Rule 3 for one module: borrowed underscore names and private modules out of reach."""
  found = []
  bound: dict[str, str] = {}  # name bound by an import -> the dotted path it stands for

  def check_path(line: int, dotted: str, what: str) -> None:
    segments = dotted.split(".")
    for i, part in enumerate(segments):
      if not _private(part):
        continue
      if ".".join(segments[: i + 1]) not in modules:  # a name in a module, or of a class
        found.append(f"{module}:{line}: {what} {dotted} (private name {part})")
        return
      if not _within(module, ".".join(segments[:i])):
        found.append(f"{module}:{line}: {what} {dotted} (private module {part})")
        return

  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        if resolve(Import(node.lineno, alias.name), modules) is None:
          continue
        check_path(node.lineno, alias.name, "import")
        if alias.asname:
          bound[alias.asname] = alias.name
        else:
          root = alias.name.split(".")[0]
          bound[root] = root
    elif isinstance(node, ast.ImportFrom):
      source = _absolute(node, module, is_package)
      if resolve(Import(node.lineno, source), modules) is None:
        continue
      for alias in node.names:
        check_path(node.lineno, f"{source}.{alias.name}", "from-import of")
        bound[alias.asname or alias.name] = f"{source}.{alias.name}"

  inner = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
  for node in ast.walk(tree):
    if isinstance(node, ast.Attribute) and id(node) not in inner:  # each chain once, whole
      root, attrs = _attribute_chain(node)
      if root in bound and any(_private(a) for a in attrs):
        check_path(node.lineno, ".".join([bound[root], *attrs]), "use of")
  return sorted(set(found))


def layer_violations(module: str, imports: list[Import], modules) -> list[str]:
  """Rule 2 for one module."""
  found = []
  for imp in imports:
    target = resolve(imp, modules) or imp.target
    for importer, forbidden in FORBIDDEN.items():
      if _within(module, importer):
        for package in forbidden:
          if _within(target, package) or _within(imp.target, package):
            how = "dynamically " if imp.dynamic else ""
            found.append(f"{module}:{imp.line}: imports {how}{target} ({importer} -> {package})")
  return sorted(set(found))


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, dict[str, int]]:
  """``{module: {imported module: first line}}`` over ``{module: (source, is_package)}``."""
  graph: dict[str, dict[str, int]] = {m: {} for m in sources}
  for module, (source, is_package) in sources.items():
    for imp in imports_of(ast.parse(source), module, is_package):
      target = resolve(imp, sources)
      if target is not None and target != module:
        graph[module].setdefault(target, imp.line)
  return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
  """The strongly connected components of two or more modules (Tarjan), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  out = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return sorted(out)


def _describe(component: list[str], graph: dict[str, dict[str, int]]) -> str:
  edges = [f"{a}:{graph[a][b]} -> {b}" for a in component for b in graph[a] if b in component]
  return "; ".join(edges)


SOURCES = {m: (p.read_text(), p.name == "__init__.py") for m, p in MODULES.items()}
GRAPH = import_graph(SOURCES)


def test_every_package_has_modules_to_check():
  assert {
    "zosam_jax",
    "zosam_jax.sharpness",
    "zosam_jax._src.trees",
    "zosam_jax.sparse.wrapper",
    "experiments.train",
    "experiments.runner.pool",
    "experiments.analyze.cli",
    "benchmarks.timing",
    "examples.flax_linen",
  } <= set(MODULES)


def test_no_import_cycle():
  found = cycles(GRAPH)
  assert found == [], "\n".join(_describe(c, GRAPH) for c in found)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_layer_leak_and_no_borrowed_private_name(module):
  source, is_package = SOURCES[module]
  tree = ast.parse(source)
  assert layer_violations(module, imports_of(tree, module, is_package), MODULES) == []
  assert private_violations(tree, module, is_package, MODULES) == []


# ----------------------------------------------------------------------------- the checker


FAKE_MODULES = {
  "zosam_jax",
  "zosam_jax.estimators",
  "zosam_jax._src",
  "zosam_jax._src.trees",
  "zosam_jax.sparse",
  "zosam_jax.sparse.fake",
  "zosam_jax.sparse.masks",
  "zosam_jax.diagnostics",
  "zosam_jax.diagnostics.hessian",
  "experiments",
  "experiments.models",
  "experiments.fake",
  "benchmarks",
  "benchmarks._helpers",
  "benchmarks.step_cost",
}


def _check(source: str, module: str = "zosam_jax.sparse.fake") -> list[str]:
  tree = ast.parse(source)
  imports = imports_of(tree, module, False)
  return layer_violations(module, imports, FAKE_MODULES) + private_violations(
    tree, module, False, FAKE_MODULES
  )


@pytest.mark.parametrize(
  "source, expected",
  [
    ("from zosam_jax.estimators import _flatten\n", "private name _flatten"),
    ("from zosam_jax._src.trees import _mask_counts\n", "private name _mask_counts"),
    ("from .masks import _ranks\n", "zosam_jax.sparse.masks._ranks (private name"),
    ("from .. import _validation\n", "zosam_jax._validation (private name"),
    ("from zosam_jax._src import trees\ntrees._mask_counts(1, 2, 3)\n", "trees._mask_counts"),
    ("from zosam_jax._src import trees as t\nx = t._mask_counts\n", "trees._mask_counts"),
    ("import zosam_jax\nzosam_jax.estimators._flatten\n", "zosam_jax.estimators._flatten"),
    ("import zosam_jax.sparse.masks as m\nm._ranks\n", "masks._ranks"),
    ("from . import masks\nmasks._ranks\n", "masks._ranks"),
    ("from .masks import Spec\nSpec._cache\n", "masks.Spec._cache (private name"),
    ("import experiments.models\n", "imports experiments.models"),
    ("from benchmarks import step_cost\n", "imports benchmarks.step_cost"),
    ("from experiments.models import CifarResNet\n", "imports experiments.models"),
    ("import importlib\nimportlib.import_module('experiments.models')\n", "dynamically"),
    ("def f():\n  from zosam_jax.diagnostics import hessian\n", "zosam_jax.diagnostics.hessian"),
    ("if __name__ == '__main__':\n  import tests.helpers\n", "imports tests.helpers"),
  ],
)
def test_the_checker_finds_what_it_forbids(source, expected):
  found = _check(source)
  assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
  "source, module",
  [
    ("from zosam_jax._src import trees\ntrees.flatten\n", "zosam_jax.sparse.fake"),
    ("from zosam_jax import _src\n", "zosam_jax.sparse.fake"),
    ("import zosam_jax\nzosam_jax._src.trees.flatten\nzosam_jax.__version__\n", "zosam_jax"),
    ("import jax\njax._src.core\n", "zosam_jax.sparse.fake"),  # not ours to police
    ("class A:\n  def f(self):\n    return self._x\n", "zosam_jax.sparse.fake"),
    ("from .masks import keep_top_k\n", "zosam_jax.sparse.fake"),
    ("from benchmarks import _helpers\n_helpers.run()\n", "benchmarks.step_cost"),
    ("from zosam_jax.estimators import rge\n", "experiments.fake"),
  ],
)
def test_the_checker_allows_public_names_and_private_modules_of_ones_own_package(source, module):
  assert _check(source, module) == []


@pytest.mark.parametrize(
  "source, module",
  [
    ("from zosam_jax._src import trees\n", "experiments.fake"),
    ("from benchmarks import _helpers\n", "experiments.fake"),
  ],
)
def test_a_private_module_is_private_to_its_package(source, module):
  found = _check(source, module)
  assert any("private module" in f for f in found), found


def test_the_cycle_finder_sees_imports_inside_functions():
  sources = {
    "experiments": ("", True),
    "experiments.a": ("from experiments import b\n", False),
    "experiments.b": ("def f():\n  from experiments.a import x\n", False),
    "experiments.c": ("import experiments.a\n", False),
  }
  graph = import_graph(sources)
  assert graph["experiments.a"] == {"experiments.b": 1}
  assert cycles(graph) == [["experiments.a", "experiments.b"]]
  sources["experiments.b"] = ("import json\n", False)
  assert cycles(import_graph(sources)) == []


def test_a_package_reexporting_its_submodules_is_not_a_cycle():
  sources = {
    "experiments.p": ("from experiments.p.a import x\nfrom experiments.p.b import y\n", True),
    "experiments.p.a": ("from experiments.p import b\n", False),
    "experiments.p.b": ("y = 1\n", False),
  }
  assert cycles(import_graph(sources)) == []
