#!/usr/bin/env bash
# The API reference and the docstring examples, as CI checks them: called by .ci/run after the
# test suite; runs alone too (bash .ci/docs.sh), with .venv/bin/python or $PYTHON.
#
# 1. Sphinx builds docs/api (autodoc + autosummary + napoleon, one page per public module) with
#    warnings as errors: a docstring that does not render, a page that names a missing object, or
#    a cross-reference to this library's own objects that does not resolve fails the build.
# 2. The docstrings' >>> examples run as doctests (pytest --doctest-modules on zosam_jax). They
#    are kept out of the README's test command to keep the default suite within its budget
#    (docs/testing.md); the README's own code blocks run there (tests/test_readme.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
start=$SECONDS
rm -rf docs/api/_build
"$PYTHON" -m sphinx -W --keep-going -q -b html docs/api docs/api/_build/html
echo "docs: API reference built in $((SECONDS - start)) s: docs/api/_build/html/index.html"
start=$SECONDS
# Compiled as the test suite compiles (tests/conftest.py, docs/testing.md): LLVM at level 0 and
# XLA:CPU's older emitters, which halve these small programs' compile time. The examples print
# only values that do not depend on float32 rounding.
XLA_FLAGS="${XLA_FLAGS:---xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false}" \
  "$PYTHON" -m pytest -q -p no:cacheprovider --doctest-modules zosam_jax
echo "docs: docstring examples ran in $((SECONDS - start)) s"
