"""The README's Python code blocks run, as a user would paste them.

Each ```python block of ``README.md`` must follow a marker comment the test recognises (nothing
is skipped silently):

* ``<!-- readme-test: setup=NAME -->``: the block runs after the setup ``NAME`` of
  :data:`SETUPS`, which defines the names the README leaves to the reader (``params``,
  ``model``, ``cross_entropy``, ``x``, ``y``, ...: a small Flax MLP on random data). Then
  ``train_step``, which every such block defines, runs once and its results are checked.
* ``<!-- readme-test: skip REASON -->``: the block does not run; the reason is required and
  said in the README's source (for a block needing data that may be absent, or too slow).

The README is read from the checkout (the wheel check, which has none, leaves this file out).
"""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->")


def python_blocks(text: str) -> list[tuple[int, str, str]]:
  """``(line, marker, code)`` of every ```python block (``line``: its opening fence's, from 1);
  ``marker`` is the text of the marker comment on the closest non-blank line above the block
  (``""`` if there is none)."""
  lines = text.splitlines()
  blocks = []
  i = 0
  while i < len(lines):
    if lines[i].strip() == "```python":
      j = i - 1
      while j >= 0 and not lines[j].strip():
        j -= 1
      match = MARKER.fullmatch(lines[j].strip()) if j >= 0 else None
      end = lines.index("```", i + 1)
      blocks.append((i + 1, match.group(1) if match else "", "\n".join(lines[i + 1 : end])))
      i = end
    i += 1
  return blocks


def _cross_entropy(logits, labels):
  logp = jax.nn.log_softmax(logits)
  return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))


def _data():
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 6))
  y = jnp.arange(8) % 3
  return x, y


def setup_mlp() -> dict:
  """A two-layer MLP: ``params`` are its whole variables, as ``model.apply(params, x)`` takes."""
  nn = pytest.importorskip("flax.linen")

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
      return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))

  model = MLP()
  x, y = _data()
  return {"model": model, "params": model.init(jax.random.PRNGKey(0), x), "x": x, "y": y}


def setup_batchnorm() -> dict:
  """The MLP with BatchNorm: ``params`` and ``batch_stats`` apart, as Flax linen keeps them."""
  nn = pytest.importorskip("flax.linen")

  class MLP(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      x = nn.BatchNorm(use_running_average=not train)(nn.Dense(16)(x))
      return nn.Dense(3)(nn.relu(x))

  model = MLP()
  x, y = _data()
  variables = model.init(jax.random.PRNGKey(0), x)
  return {
    "model": model,
    "params": variables["params"],
    "batch_stats": variables["batch_stats"],
    "x": x,
    "y": y,
  }


SETUPS = {"mlp": setup_mlp, "batchnorm": setup_batchnorm}


def _finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


BLOCKS = python_blocks(README.read_text()) if README.exists() else []


def test_the_readme_has_marked_python_blocks():
  assert README.exists(), f"{README} is missing (this test runs from the checkout)"
  assert BLOCKS, "README.md has no ```python block"
  for line, marker, _ in BLOCKS:
    assert marker, f"README.md:{line}: a ```python block without a <!-- readme-test: ... -->"
    if marker.startswith("skip"):
      assert marker[len("skip") :].strip(), f"README.md:{line}: a skip needs its reason"
    else:
      setup = re.fullmatch(r"setup=(\w+)", marker)
      assert setup and setup.group(1) in SETUPS, f"README.md:{line}: unknown marker {marker!r}"


@pytest.mark.parametrize(
  "line,marker,code",
  [pytest.param(*b, id=f"line{b[0]}") for b in BLOCKS if not b[1].startswith("skip")],
)
def test_readme_block_runs(line, marker, code):
  setup = SETUPS[marker.removeprefix("setup=")]()
  namespace = {"cross_entropy": _cross_entropy, **setup}
  exec(compile(code, f"README.md:{line}", "exec"), namespace)  # noqa: S102
  assert "train_step" in namespace, f"README.md:{line}: the block defines no train_step"
  params, x, y = namespace["params"], namespace["x"], namespace["y"]
  out = namespace["train_step"](params, namespace["opt_state"], x, y)
  new_params = out[0]
  assert jax.tree.structure(new_params) == jax.tree.structure(params)
  assert _finite(new_params) and _finite(out[1:])
  changed = [
    not np.array_equal(a, b)
    for a, b in zip(jax.tree.leaves(new_params), jax.tree.leaves(params), strict=True)
  ]
  assert any(changed), "the step left every parameter as it was"


def test_the_block_finder():
  text = (
    "<!-- readme-test: setup=mlp -->\n\n```python\na = 1\n```\n"
    "text\n```python\nb = 2\n```\n"
    "<!-- readme-test: skip needs CIFAR-10 -->\n```python\nc = 3\n```\n"
  )
  assert python_blocks(text) == [
    (3, "setup=mlp", "a = 1"),
    (7, "", "b = 2"),
    (11, "skip needs CIFAR-10", "c = 3"),
  ]
