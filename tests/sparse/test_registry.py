"""Sparse methods by name: one name in any case, registered or built in."""

import pytest

from zosam_jax import sparse
from zosam_jax.sparse import registry


@pytest.fixture
def fresh_registry(monkeypatch):
  """A copy of the registry, so that registrations do not outlive the test."""
  monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_a_registered_name_is_found_in_any_case(fresh_registry):
  def factory(**kwargs):
    return sparse.rigl(**kwargs)

  sparse.register_method("MyMethod", factory)
  assert "mymethod" in sparse.method_names()
  for name in ("MyMethod", "mymethod", "MYMETHOD"):
    method = sparse.get_method(name, update_every=10, end_step=100)
    assert isinstance(method, sparse.RigL)
  with pytest.raises(ValueError, match="already registered"):
    sparse.register_method("MYMETHOD", factory)
  with pytest.raises(ValueError, match="already registered"):
    sparse.register_method("RigL", factory)  # a built-in name, in another case


def test_bad_names_are_refused(fresh_registry):
  with pytest.raises(ValueError, match="non-empty string"):
    sparse.register_method("", lambda **kw: None)
  with pytest.raises(ValueError, match="must be one of"):
    sparse.get_method("nope")
