#!/usr/bin/env bash
# Builds the wheel and tests it as a user gets it: installed into a fresh virtual environment,
# with the library's tests and the examples run from a folder where the checkout cannot be
# imported, so a file the wheel leaves out (a module, py.typed) fails here and not for users.
# Called by .ci/run after its own steps; runs alone too: bash .ci/wheel_check.sh [--all]
#
# What runs: every installed module is imported, then a subset of the tests, one file per public
# module (heads, efficient SAM, estimators, zeroth-order, diagnostics, perturbation masks,
# flax_utils, accumulation, sparse masks, static methods, validation and wrapper), and the
# examples (tests/test_examples.py): 340 tests. On this project's 2 cores shared with a training
# job and a test suite (load 9): the subset 8.6 min, 10 min with the build and install; the
# library's whole default set (493 tests) 23 min. `--all` runs that whole set:
# every test under tests/ that imports only zosam_jax, jax, optax, chex, flax, numpy and pytest,
# i.e. all but tests/experiments/ (the trainer, not in the wheel), test_layering.py (it parses
# the source tree), test_zosa_compare.py (it imports studies/) and test_readme.py (it runs the
# checkout's README.md).
set -euo pipefail
TESTS=(
  tests/test_sharpness.py tests/test_efficient_sam.py tests/test_estimators.py
  tests/test_zosa.py tests/test_diagnostics.py tests/test_perturbation_masks.py
  tests/test_flax_utils.py tests/test_accumulation.py tests/test_control_flow.py
  tests/sparse/test_masks.py tests/sparse/test_static.py tests/sparse/test_validation.py
  tests/sparse/test_wrap_heads.py tests/test_examples.py
)
if [[ "${1:-}" == --all ]]; then TESTS=(tests); fi
cd "$(dirname "$0")/.."
REPO=$PWD
PYTHON=${PYTHON:-python3}
WORK=$(mktemp -d /tmp/wheel-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
start=$SECONDS
say() { echo "wheel check [$((SECONDS - start)) s]: $*"; }

# A fresh environment without the system's packages; it also builds (no pip outside it is
# assumed). `build` makes the sdist, then the wheel from the unpacked sdist in a temporary
# folder, as a user's pip would from PyPI: nothing stale in the checkout's build/ can slip in.
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "build>=1"
"$WORK/venv/bin/python" -m build -q --outdir "$WORK/dist" "$REPO" >/dev/null
wheel=$(ls "$WORK"/dist/zosam_jax-*.whl)
say "built $(cd "$WORK/dist" && echo *)"
# The sdist: the library and its licence, no tests (MANIFEST.in says why).
sdist_files=$(tar tzf "$WORK"/dist/zosam_jax-*.tar.gz)
grep -q '^zosam_jax-[^/]*/LICENSE$' <<<"$sdist_files" || { echo "sdist lacks LICENSE"; exit 1; }
grep -q '^zosam_jax-[^/]*/zosam_jax/py.typed$' <<<"$sdist_files" || { echo "sdist lacks py.typed"; exit 1; }
if grep -q '^zosam_jax-[^/]*/tests/' <<<"$sdist_files"; then echo "sdist holds tests/"; exit 1; fi
# The wheel with its dependencies at the versions requirements.txt pins (PyPI or pip's cache).
"$WORK/venv/bin/python" -m pip install -q "${wheel}[flax]" "pytest>=8" -c "$REPO/requirements.txt"
say "installed into $WORK/venv"

# The tests and examples, copied without the package: only the installed zosam_jax can answer.
mkdir "$WORK/src"
cp -r "$REPO/tests" "$REPO/examples" "$REPO/pyproject.toml" "$WORK/src/"
rm -rf "$WORK/src/tests/experiments" "$WORK/src/tests/test_layering.py" \
  "$WORK/src/tests/test_zosa_compare.py" "$WORK/src/tests/test_readme.py"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
cd "$WORK/src"
unset PYTHONPATH
"$WORK/venv/bin/python" - "$wheel" "$REPO" <<'PY'
import importlib, os, pathlib, pkgutil, sys
import zosam_jax
wheel = os.path.basename(sys.argv[1])
where = os.path.dirname(zosam_jax.__file__)
assert where.startswith(os.path.join(sys.prefix, "lib")), f"zosam_jax imported from {where}"
assert wheel.startswith(f"zosam_jax-{zosam_jax.__version__}-"), (wheel, zosam_jax.__version__)
assert os.path.isfile(os.path.join(where, "py.typed")), "py.typed is not installed"
# The wheel holds every module of the checkout, and each imports (the tests run below may not
# reach each one).
modules = [m.name for m in pkgutil.walk_packages(zosam_jax.__path__, "zosam_jax.")]
source = pathlib.Path(sys.argv[2])
expected = {".".join(p.relative_to(source).with_suffix("").parts).removesuffix(".__init__")
            for p in (source / "zosam_jax").rglob("*.py")} - {"zosam_jax"}
assert expected == set(modules), ("missing", expected - set(modules), "extra", set(modules) - expected)
for name in modules:
  importlib.import_module(name)
print(f"zosam_jax {zosam_jax.__version__} from {where}: {len(modules)} modules import")
PY
# The default selection, as the checkout's pyproject.toml gives it (not copied here): its slow
# tests stay out and tests/conftest.py compiles as for the default suite.
"$WORK/venv/bin/python" -m pytest -q -p no:cacheprovider -m "not slow" "${TESTS[@]}"
say "done"
