"""Under jit with the batch sharded over 4 (virtual CPU) devices, every device draws the same
directions and sees the global loss: the update equals the single-device one."""

import os
import subprocess
import sys
import textwrap

from tests.conftest import xla_flags

SCRIPT = textwrap.dedent(
  """
  import jax, jax.numpy as jnp, numpy as np, optax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  import zosam_jax as zj

  assert jax.device_count() == 4, jax.devices()
  k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(0), 4)
  params = {"w1": jax.random.normal(k1, (6, 16)), "w2": jax.random.normal(k2, (16, 3))}
  x = jax.random.normal(k3, (32, 6))
  y = jax.random.randint(k4, (32,), 0, 3)

  def loss(p, x, y):
    logits = jnp.tanh(x @ p["w1"]) @ p["w2"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  mesh = Mesh(np.array(jax.devices()), ("batch",))
  shard = NamedSharding(mesh, P("batch"))
  replicated = NamedSharding(mesh, P())
  for head in (zj.zo_sam(0.05, num_directions=4, smoothing=1e-3, seed=7), zj.sam(0.05),
               zj.random_perturbation(0.05, seed=3),
               zj.sparse_sam(0.05, 0.5, mask_method="dynamic", end_step=10, update_every=1,
                             ascent="zeroth_order",
                             zeroth_order=zj.ZerothOrderOptions(num_directions=2))):
    tx = optax.chain(head, optax.sgd(0.1))

    def step(p, s, x, y):
      u, s = tx.update(None, s, p, loss_fn=lambda q: loss(q, x, y))
      return optax.apply_updates(p, u), s

    single = jax.jit(step)
    p1, s1 = params, tx.init(params)
    p4 = jax.device_put(params, replicated)
    s4 = jax.device_put(tx.init(params), replicated)
    xs, ys = jax.device_put(x, shard), jax.device_put(y, shard)
    assert len(xs.sharding.device_set) == 4
    for _ in range(3):
      p1, s1 = single(p1, s1, x, y)
      p4, s4 = single(p4, s4, xs, ys)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  print("DATA_PARALLEL_OK")
  """
)


def test_sharded_update_equals_single_device_update():
  env = dict(
    os.environ, XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=4"), JAX_PLATFORMS="cpu"
  )
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  result = subprocess.run(
    [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "DATA_PARALLEL_OK" in result.stdout
