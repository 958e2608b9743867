"""Data-parallel steps over an 8-device mesh equal the single-device step."""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np
import optax
import pytest

from diversity_jax import transforms
import transforms_testlib as tl

RULES = {
    "sam": (lambda: transforms.sam(0.05), False),
    "gsam": (lambda: transforms.gsam(optax.linear_schedule(0.1, 0.01, 2),
                                     lr_max=0.1, lr_min=0.01, rho_max=0.1,
                                     rho_min=0.02, alpha=0.5), False),
    "every_k_steps": (lambda: transforms.every_k_steps(transforms.sam(0.05),
                                                       2), False),
    "gnp": (lambda: transforms.gradient_norm_penalty(0.1), False),
    "saf": (lambda: transforms.saf(64, tl.K, steps_per_epoch=1, lag=1,
                                   start_epoch=0), False),
    "hgp": (lambda: transforms.hessian_alignment("hgp", head="head"), True),
}


@pytest.fixture(scope="module")
def mesh():
  return jax.make_mesh((8,), ("data",))


@pytest.mark.parametrize("name", sorted(RULES))
def test_sharded_step_equals_single_device(name, mesh):
  make, domains = RULES[name]
  tx = optax.chain(make(), optax.sgd(0.1))
  params = tl.init_mlp()
  batch = tl.make_batch(n=16, domains=2 if domains else None)
  step = tl.make_step(tx, tl.ce_loss_fn)
  state = tx.init(params)
  key = jax.random.key(0)
  # Two steps so SAF's buffer round-trips too.
  p_ref, s_ref = params, state
  for _ in range(2):
    p_ref, s_ref, _ = step(p_ref, s_ref, batch, key)
  spec = P(None, "data") if domains else P("data")
  sharded = jax.tree_util.tree_map(
      lambda x: jax.device_put(x, NamedSharding(mesh, spec)), batch)
  rep = NamedSharding(mesh, P())
  p_sh = jax.device_put(params, rep)
  s_sh = jax.device_put(state, rep)
  for _ in range(2):
    p_sh, s_sh, _ = step(p_sh, s_sh, sharded, key)
  np.testing.assert_allclose(tl.flat(p_sh), tl.flat(p_ref), rtol=1e-5,
                             atol=1e-6)
  # every_k_steps stores v / ||v||, v a small difference of two gradients:
  # the normalization scales reduction-order rounding by ||u|| / ||v||.
  atol = 1e-4 if name == "every_k_steps" else 1e-6
  np.testing.assert_allclose(tl.flat(s_sh), tl.flat(s_ref), rtol=1e-5,
                             atol=atol)


def _shard_map_update(tx, mesh, params, batch):
  def local(p, b):
    g = jax.grad(lambda q: tl.ce_loss_fn(q, b)[0])(p)
    u, s = tx.update(g, tx.init(p), p, loss_fn=tl.ce_loss_fn, batch=b)
    return u, s
  f = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                    out_specs=(P(), P()))  # state is reduced too
  batch = jax.device_put(batch, NamedSharding(mesh, P("data")))
  params = jax.device_put(params, NamedSharding(mesh, P()))
  return jax.jit(f)(params, batch)


def test_sam_shard_map_global_and_m_sharpness(mesh):
  rho = 0.1
  params = tl.init_mlp()
  batch = tl.make_batch(n=16)
  w, unravel = ravel_pytree(params)
  loss = lambda v, b: tl.ce_loss_fn(unravel(v), b)[0]
  grad = jax.jit(jax.grad(loss))
  shards = [jax.tree_util.tree_map(lambda x: x[2 * k:2 * k + 2], batch)
            for k in range(8)]
  # Global SAM under shard_map equals single-device SAM.
  u, _ = _shard_map_update(transforms.sam(rho, batch_axis_name="data"), mesh,
                           params, batch)
  g = np.asarray(grad(w, batch), np.float64)
  e = rho * g / np.linalg.norm(g)
  expected = grad(jnp.asarray(np.asarray(w) + e, jnp.float32), batch)
  np.testing.assert_allclose(tl.flat(u), np.asarray(expected), rtol=1e-5,
                             atol=1e-6)
  # m-sharpness (m = 2 examples per device): per-shard perturbations.
  u_m, _ = _shard_map_update(
      transforms.sam(rho, batch_axis_name="data", m_sharpness=True), mesh,
      params, batch)
  per = []
  for b in shards:
    gk = np.asarray(grad(w, b), np.float64)
    ek = rho * gk / np.linalg.norm(gk)
    per.append(np.asarray(grad(jnp.asarray(np.asarray(w) + ek, jnp.float32),
                               b), np.float64))
  np.testing.assert_allclose(tl.flat(u_m), np.mean(per, 0), rtol=1e-5,
                             atol=1e-6)
  assert not np.allclose(tl.flat(u_m), tl.flat(u), atol=1e-4)


def test_sam_shard_map_with_per_shard_grads(mesh):
  """Trainer passes device-varying (per-shard) grads: same results."""
  rho = 0.1
  params = tl.init_mlp()
  batch = tl.make_batch(n=16)

  def run(m):
    tx = transforms.sam(rho, batch_axis_name="data", m_sharpness=m)

    def local(p, b):
      pv = jax.tree_util.tree_map(
          lambda x: jax.lax.pcast(x, "data", to="varying"), p)
      g = jax.grad(lambda q: tl.ce_loss_fn(q, b)[0])(pv)   # per-shard grads
      return tx.update(g, tx.init(p), p, loss_fn=tl.ce_loss_fn, batch=b)[0]
    f = jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                      out_specs=P())
    return jax.jit(f)(jax.device_put(params, NamedSharding(mesh, P())),
                      jax.device_put(batch, NamedSharding(mesh, P("data"))))

  for m in (False, True):
    tx = transforms.sam(rho, batch_axis_name="data", m_sharpness=m)
    expected, _ = _shard_map_update(tx, mesh, params, batch)
    np.testing.assert_allclose(tl.flat(run(m)), tl.flat(expected), rtol=1e-5,
                               atol=1e-6)


def _np_gsam(g, g_p, alpha):
  """big_vision's minimize_fp decomposition: g_p - alpha (g - <g, u> u),
  u = g_p / ||g_p||."""
  u = g_p / np.linalg.norm(g_p)
  return g_p - alpha * (g - np.dot(g, u) * u)


def test_gsam_shard_map_global_and_m_sharpness(mesh):
  """Global: the single-device GSAM step. m-sharpness: the mean over shards
  of per-shard GSAM gradients (big_vision's per-worker step)."""
  rho, alpha = 0.1, 0.5
  params = tl.init_mlp()
  batch = tl.make_batch(n=16)
  w, unravel = ravel_pytree(params)
  loss = lambda v, b: tl.ce_loss_fn(unravel(v), b)[0]
  grad = jax.jit(jax.grad(loss))

  def np_step(b):
    g = np.asarray(grad(w, b), np.float64)
    w_adv = jnp.asarray(np.asarray(w) + rho * g / np.linalg.norm(g),
                        jnp.float32)
    return _np_gsam(g, np.asarray(grad(w_adv, b), np.float64), alpha)

  shards = [jax.tree_util.tree_map(lambda x: x[2 * k:2 * k + 2], batch)
            for k in range(8)]
  sharded = jax.device_put(batch, NamedSharding(mesh, P("data")))
  replicated = jax.device_put(params, NamedSharding(mesh, P()))
  for m, expected in ((False, np_step(batch)),
                      (True, np.mean([np_step(b) for b in shards], 0))):
    tx = transforms.gsam(0.1, rho_max=rho, alpha=alpha,
                         batch_axis_name="data", m_sharpness=m)
    # Reduced grads (autodiff psums them; the rule recomputes per shard).
    u, state = _shard_map_update(tx, mesh, params, batch)
    np.testing.assert_allclose(tl.flat(u), expected, rtol=2e-5, atol=2e-6)
    assert float(state.rho) == pytest.approx(rho)

    def local(p, b, tx=tx):   # per-shard (device-varying) grads
      pv = jax.tree_util.tree_map(
          lambda x: jax.lax.pcast(x, "data", to="varying"), p)
      g = jax.grad(lambda q: tl.ce_loss_fn(q, b)[0])(pv)
      return tx.update(g, tx.init(p), p, loss_fn=tl.ce_loss_fn, batch=b)[0]
    u = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("data")),
                              out_specs=P()))(replicated, sharded)
    np.testing.assert_allclose(tl.flat(u), expected, rtol=2e-5, atol=2e-6)


def test_every_k_steps_in_shard_map_equals_single_device(mesh):
  """Three steps of every_k_steps(sam(batch_axis_name=...), 2) inside
  shard_map (reduced grads) give the single-device steps."""
  params = tl.init_mlp()
  batch = tl.make_batch(n=16)

  def run(tx, step):
    p, s = params, tx.init(params)
    for _ in range(3):
      p, s = step(tx, p, s)
    return p

  def single(tx, p, s):
    g = jax.grad(lambda q: tl.ce_loss_fn(q, batch)[0])(p)
    u, s = jax.jit(lambda g, s, p: tx.update(g, s, p, loss_fn=tl.ce_loss_fn,
                                             batch=batch))(g, s, p)
    return optax.apply_updates(p, u), s

  def sharded(tx, p, s):
    def local(p, s, b):
      g = jax.grad(lambda q: tl.ce_loss_fn(q, b)[0])(p)
      g = jax.tree_util.tree_map(lambda x: x / 8.0, g)         # psum / 8
      u, s = tx.update(g, s, p, loss_fn=tl.ce_loss_fn, batch=b)
      return optax.apply_updates(p, u), s
    f = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data")),
                      out_specs=(P(), P()))
    return jax.jit(f)(p, s, jax.device_put(
        batch, NamedSharding(mesh, P("data"))))

  expected = run(transforms.every_k_steps(transforms.sam(0.1), 2), single)
  got = run(transforms.every_k_steps(
      transforms.sam(0.1, batch_axis_name="data"), 2), sharded)
  np.testing.assert_allclose(tl.flat(got), tl.flat(expected), rtol=1e-5,
                             atol=1e-6)
