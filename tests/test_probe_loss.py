"""``probe_loss_fn=``: the zeroth-order probes evaluate it (SAM's exact ascent, and exact
LookSAM's on refresh steps, differentiate it), the exact pass keeps ``loss_fn``.

Every evaluation is recorded at run time (``jax.debug.callback``) with the point it was made at,
so the tests see which function each probe called and can rebuild the estimate from the RGE
formula ``g = (1/m) sum_i c_i u_i``, ``c_i = (L(x + delta u_i) - L(x - delta u_i)) / (2 delta)``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zosam_jax as zj

D = 6
A = jnp.diag(jnp.linspace(1.0, 2.0, D))
B = jnp.linspace(-1.0, 1.0, D)
C = jnp.linspace(2.0, -1.0, D)
THETA = {"w": jnp.linspace(-0.5, 0.8, D)}
RHO, DELTA, M = 0.2, 1e-2, 3
ZO = zj.ZerothOrderOptions(num_directions=M, smoothing=DELTA)


def train_loss(p):  # what the exact pass evaluates
  return 0.5 * p["w"] @ A @ p["w"] - B @ p["w"]


def other_loss(p):  # a different loss for the probes (its gradient points elsewhere)
  return 0.5 * jnp.sum(p["w"] ** 2) + C @ p["w"]


def recorded(fn, log):
  """``fn`` that appends ``(point, value)`` to ``log`` at every run-time evaluation."""

  def wrapped(p):
    value = fn(p)
    jax.debug.callback(lambda w, v: log.append((np.asarray(w), float(v))), p["w"], value)
    return value

  return wrapped


def rge_from_points(log, theta):
  """The central RGE rebuilt from the recorded probes: pairs ``x, 2 theta - x``."""
  points = [(w, v) for w, v in log]
  used, total, m = set(), np.zeros(D), 0
  for i, (w, v) in enumerate(points):
    if i in used:
      continue
    j = min(
      (k for k in range(len(points)) if k != i and k not in used),
      key=lambda k: np.abs(points[k][0] - (2 * theta - w)).max(),
    )
    np.testing.assert_allclose(points[j][0], 2 * theta - w, atol=1e-5)  # it is the mirror point
    used |= {i, j}
    u = (w - theta) / DELTA
    total += (v - points[j][1]) / (2 * DELTA) * u  # c_i u_i (a swapped pair gives the same)
    m += 1
  return total / m, m


def test_zo_sam_probes_see_probe_loss_fn_and_the_update_follows_from_them():
  probes, exact = [], []
  tx = zj.zo_sam(RHO, zeroth_order=ZO, seed=1)
  update = jax.jit(
    lambda s: tx.update(
      None,
      s,
      THETA,
      loss_fn=recorded(train_loss, exact),
      probe_loss_fn=recorded(other_loss, probes),
    )
  )
  grads, state = update(tx.init(THETA))
  jax.effects_barrier()
  theta = np.asarray(THETA["w"])
  assert len(probes) == 2 * M  # every probe went to probe_loss_fn ...
  assert len(exact) == 1  # ... and loss_fn ran once, the exact pass at theta + eps
  g_hat, m = rge_from_points(probes, theta)
  assert m == M
  eps = RHO * g_hat / np.linalg.norm(g_hat)
  np.testing.assert_allclose(exact[0][0], theta + eps, atol=1e-4)
  expected = np.asarray(jax.grad(train_loss)({"w": jnp.asarray(theta + eps)})["w"])
  np.testing.assert_allclose(grads["w"], expected, atol=1e-4)
  np.testing.assert_allclose(state.value, train_loss({"w": jnp.asarray(theta + eps)}), rtol=1e-5)
  # The probe loss mattered: the same step on loss_fn alone perturbs elsewhere.
  plain, _ = jax.jit(lambda s: tx.update(None, s, THETA, loss_fn=train_loss))(tx.init(THETA))
  assert np.abs(np.asarray(plain["w"]) - expected).max() > 1e-2


def _per_example(log):
  """ESAM's ``(params, batch) -> losses[B]``: two examples, mean ``train_loss``, recorded."""

  def fn(p, batch):
    jax.debug.callback(lambda w: log.append((np.asarray(w), 0.0)), p["w"])
    return train_loss(p) + batch

  return fn


ESAM_BATCH = jnp.array([-0.1, 0.1])

# name -> (head, extra update arguments given the recorded train loss, [(probes, exact passes)]
# per step for the first two steps)
ZO_HEADS = {
  "zo_sam": (lambda: zj.zo_sam(RHO, zeroth_order=ZO), None, [(2 * M, 1)] * 2),
  "sparse_zo_sam": (
    lambda: zj.sparse_sam(
      RHO, 0.5, mask_method="random", ascent="zeroth_order", zeroth_order=ZO, update_every=1
    ),
    None,
    [(2 * M, 1)] * 2,
  ),
  # a refresh step (ZO ascent), then a step that reuses it: no probes
  "zo_looksam": (
    lambda: zj.looksam(RHO, 2, ascent="zeroth_order", zeroth_order=ZO),
    None,
    [(2 * M, 1), (0, 1)],
  ),
  "zo_esam": (
    lambda: zj.esam(RHO, 1.0, 1.0, ascent="zeroth_order", zeroth_order=ZO),
    "esam",
    [(2 * M, 1)] * 2,
  ),
  # the noise measurement's forward at theta is a probe too; m starts at num_directions
  "adaptive_zo_sam": (
    lambda: zj.adaptive_zo_sam(RHO, 8, zeroth_order=ZO),
    None,
    [(2 * M + 1, 1)],
  ),
}


def _arguments(kind, exact_log, probe_fn):
  if kind == "esam":
    args = {"per_example_loss_fn": _per_example(exact_log), "batch": ESAM_BATCH}
  else:
    args = {"loss_fn": recorded(train_loss, exact_log)}
  if probe_fn is not None:
    args["probe_loss_fn"] = probe_fn
  return args


@pytest.mark.parametrize("name", list(ZO_HEADS))
def test_every_zo_head_sends_its_probes_to_probe_loss_fn(name):
  make, kind, counts = ZO_HEADS[name]
  tx = make()
  state = tx.init(THETA)
  for want_probes, want_exact in counts:
    probes, exact = [], []
    args = _arguments(kind, exact, recorded(other_loss, probes))
    _, state = jax.jit(functools.partial(tx.update, None, **args))(state, THETA)
    jax.effects_barrier()
    assert len(probes) == want_probes
    assert len(exact) == want_exact


@pytest.mark.parametrize("name", list(ZO_HEADS))
def test_probe_loss_fn_equal_to_loss_fn_is_bit_for_bit_todays_step(name):
  make, kind, counts = ZO_HEADS[name]
  tx = make()

  def run(with_probe):
    state, out = tx.init(THETA), []
    for _ in range(len(counts)):
      if kind == "esam":
        args = {"per_example_loss_fn": lambda p, b: train_loss(p) + b, "batch": ESAM_BATCH}
        probe = lambda p: jnp.mean(train_loss(p) + ESAM_BATCH)  # noqa: E731  (its mean loss)
      else:
        args = {"loss_fn": train_loss}
        probe = train_loss
      if with_probe:
        args["probe_loss_fn"] = probe
      grads, state = jax.jit(functools.partial(tx.update, None, **args))(state, THETA)
      out.append((grads, state))
    return out

  for (g0, s0), (g1, s1) in zip(run(False), run(True), strict=True):
    for a, b in zip(jax.tree.leaves((g0, s0)), jax.tree.leaves((g1, s1)), strict=True):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_pure_function_takes_probe_loss_fn_too():
  key = jax.random.PRNGKey(4)
  kw = dict(rho=RHO, zeroth_order=ZO)
  today = zj.zo_sam_gradient(train_loss, THETA, key, **kw)
  same = zj.zo_sam_gradient(train_loss, THETA, key, probe_loss_fn=train_loss, **kw)
  other = zj.zo_sam_gradient(train_loss, THETA, key, probe_loss_fn=other_loss, **kw)
  np.testing.assert_array_equal(today[1]["w"], same[1]["w"])
  assert np.abs(np.asarray(today[1]["w"]) - np.asarray(other[1]["w"])).max() > 1e-2


def test_sam_exact_ascent_differentiates_probe_loss_fn():
  # The ascent is g = grad other_loss(theta) = theta + C, eps = rho g / ||g||; the update is the
  # exact gradient of train_loss at theta + eps, A (theta + eps) - B.
  theta = THETA["w"]
  g = theta + C
  expected = A @ (theta + RHO * g / jnp.linalg.norm(g)) - B
  for tx in (zj.sam(RHO), zj.sparse_sam(RHO, 0.0, mask_method="random")):
    updates, state = tx.update(
      None, tx.init(THETA), THETA, loss_fn=train_loss, probe_loss_fn=other_loss
    )
    np.testing.assert_allclose(updates["w"], expected, rtol=1e-5)
    np.testing.assert_allclose(state.value, train_loss({"w": theta + RHO * g / jnp.linalg.norm(g)}))


ALPHA = 0.3


def test_looksam_exact_refresh_ascends_along_probe_loss_fn_and_reuse_steps_are_unchanged():
  # k = 2: step 1 refreshes, step 2 reuses, step 3 refreshes again. Refresh at theta: the ascent
  # is g_p = grad other_loss(theta) = theta + C, eps = rho g_p/||g_p||, the update is the full
  # loss's gradient there, g_s = A (theta + eps) - B, and the kept g_v = g_s - (<g_s, g_p> /
  # ||g_p||^2) g_p. Reuse at theta2: g = A theta2 - B, update g + alpha ||g||/||g_v|| g_v.
  tx = zj.looksam(RHO, 2, ALPHA)
  theta, theta2 = np.asarray(THETA["w"]), np.linspace(0.3, -0.4, D).astype(np.float32)
  g_p = theta + np.asarray(C)
  eps = RHO * g_p / np.linalg.norm(g_p)
  g_s = np.asarray(A) @ (theta + eps) - np.asarray(B)
  g_v = g_s - (g_s @ g_p) / (g_p @ g_p) * g_p
  g = np.asarray(A) @ theta2 - np.asarray(B)
  reuse = g + ALPHA * np.linalg.norm(g) / np.linalg.norm(g_v) * g_v

  state = tx.init(THETA)
  refresh = (theta, g_s, 1, theta + eps)  # (point, update, probe calls, exact pass at)
  expected = [refresh, (theta2, reuse, 0, theta2), refresh]
  for point, update, want_probes, exact_at in expected:
    probes, exact = [], []
    step = jax.jit(
      lambda s, p: tx.update(
        None,
        s,
        p,
        loss_fn=recorded(train_loss, exact),  # noqa: B023 (called within the iteration)
        probe_loss_fn=recorded(other_loss, probes),  # noqa: B023
      )
    )
    updates, state = step(state, {"w": jnp.asarray(point)})
    jax.effects_barrier()
    assert len(probes) == want_probes  # the sub-batch loss, at theta, on refresh steps only
    if want_probes:
      np.testing.assert_allclose(probes[0][0], point, atol=1e-6)
    assert len(exact) == 1  # one pass of the full loss: at theta + eps, or at theta2
    np.testing.assert_allclose(exact[0][0], exact_at, atol=1e-6)
    np.testing.assert_allclose(updates["w"], update, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.reused["w"], g_v, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.value, train_loss({"w": jnp.asarray(exact_at)}), rtol=1e-5)
  # The sub-batch mattered: LookSAM's own refresh ascends along grad train_loss(theta).
  plain, _ = tx.update(None, tx.init(THETA), THETA, loss_fn=train_loss)
  assert np.abs(np.asarray(plain["w"]) - g_s).max() > 1e-2


def test_looksam_exact_with_probe_loss_fn_equal_to_loss_fn_is_looksam():
  tx = zj.looksam(RHO, 2, ALPHA)
  points = [THETA, {"w": jnp.linspace(0.3, -0.4, D)}, {"w": jnp.linspace(-0.2, 0.1, D)}]
  with_probe, without = tx.init(THETA), tx.init(THETA)
  for p in points:
    u1, with_probe = tx.update(None, with_probe, p, loss_fn=train_loss, probe_loss_fn=train_loss)
    u0, without = tx.update(None, without, p, loss_fn=train_loss)
    for a, b in zip(jax.tree.leaves((u1, with_probe)), jax.tree.leaves((u0, without)), strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


NO_PROBES = {
  "random_perturbation": lambda: zj.random_perturbation(RHO),
  "exact_gradient": lambda: zj.exact_gradient(),
  "gsam": lambda: zj.gsam(RHO),
  "esam exact": lambda: zj.esam(RHO, 1.0, 1.0),
  "zosa": lambda: zj.zeroth_order.scale_by_zosa(RHO),
  "zo_sgd": lambda: zj.zeroth_order.scale_by_zo_gradient(),
  "mezo": lambda: zj.zeroth_order.scale_by_spsa(),
}


@pytest.mark.parametrize("name", list(NO_PROBES))
def test_heads_without_a_zeroth_order_ascent_refuse_probe_loss_fn(name):
  tx = NO_PROBES[name]()
  args = _arguments("esam" if name.startswith("esam") else None, [], other_loss)
  with pytest.raises(ValueError, match="probe_loss_fn must be None for"):
    tx.update(None, tx.init(THETA), THETA, **args)
  # None is "not given": accepted everywhere
  args["probe_loss_fn"] = None
  tx.update(None, tx.init(THETA), THETA, **args)


def test_the_refusal_names_every_head_that_takes_it():
  tx = zj.gsam(RHO)
  with pytest.raises(ValueError) as info:
    tx.update(None, tx.init(THETA), THETA, loss_fn=train_loss, probe_loss_fn=other_loss)
  assert str(info.value).startswith(
    "probe_loss_fn must be None for gsam, which does not evaluate it (it is taken only by sam, "
    "zo_sam / sharpness_aware(ascent='exact' or 'zeroth_order'), sparse_sam, looksam (either "
    "ascent), esam with ascent='zeroth_order', adaptive_zo_sam), got "
  )


def test_a_probe_loss_fn_that_is_not_callable_is_refused():
  tx = zj.zo_sam(RHO)
  with pytest.raises(ValueError, match="probe_loss_fn must be None or a callable"):
    tx.update(None, tx.init(THETA), THETA, loss_fn=train_loss, probe_loss_fn=0.5)
