"""Family-wide properties of every rule in ``diversity_jax.transforms``."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from diversity_jax import transforms
import transforms_testlib as tl

IDS = [f"{s.name}-{i}" for i, s in enumerate(tl.RULE_SPECS)]


def test_spec_list_covers_public_api():
  rules = {s.name for s in tl.RULE_SPECS}
  assert rules | set(tl.OTHER_PUBLIC) == set(transforms.__all__)
  assert not rules & set(tl.OTHER_PUBLIC)


@pytest.mark.parametrize("spec", tl.RULE_SPECS, ids=IDS)
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_converges_compiles_once_mixed_dtypes_orbax(spec, opt, tmp_path):
  """One jitted step per rule and optimizer, on nested params with a bf16
  leaf: converges on a quadratic without retracing, keeps every dtype, and
  its state round-trips through orbax (resuming gives the same step)."""
  base = optax.sgd(0.2) if opt == "sgd" else optax.adam(0.05)
  tx = optax.chain(spec.make(), base)
  params = tl.init_quadratic(bias_dtype=jnp.bfloat16)
  batch = tl.quad_batch(domains=3 if spec.domains else None)
  counter = []
  step = tl.make_step(tx, tl.quad_loss_fn, counter)
  state = tx.init(params)
  loss0 = float(tl.quad_loss_fn(params, batch)[0])
  base_key = jax.random.key(0)
  for i in range(150):
    params, state, _ = step(params, state, batch,
                            jax.random.fold_in(base_key, i))
  loss = float(tl.quad_loss_fn(params, batch)[0])
  assert len(counter) == 1, "the step retraced"
  assert np.isfinite(loss)
  assert loss < spec.converge_tol * loss0, (loss, loss0)
  assert params["head"]["b"].dtype == jnp.bfloat16
  assert params["body"]["w"].dtype == jnp.float32
  assert np.all(np.isfinite(tl.flat(state)))
  if opt == "sgd":
    return
  ckpt = ocp.StandardCheckpointer()
  path = tmp_path / "state"
  ckpt.save(path, state)
  ckpt.wait_until_finished()
  restored = ckpt.restore(path, jax.tree_util.tree_map(
      ocp.utils.to_shape_dtype_struct, state))
  assert (jax.tree_util.tree_structure(restored)
          == jax.tree_util.tree_structure(state))
  for x, y in zip(jax.tree_util.tree_leaves(state),
                  jax.tree_util.tree_leaves(restored)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  key = jax.random.key(5)
  p1, _, _ = step(params, state, batch, key)
  p2, _, _ = step(params, restored, batch, key)
  np.testing.assert_array_equal(tl.flat(p1), tl.flat(p2))
  assert len(counter) == 1


def test_ignores_unknown_extra_args():
  tx = optax.chain(transforms.sam(0.05), optax.sgd(0.1))
  params = tl.init_quadratic()
  batch = tl.quad_batch()
  grads = jax.grad(lambda p: tl.quad_loss_fn(p, batch)[0])(params)
  u1, _ = tx.update(grads, tx.init(params), params, loss_fn=tl.quad_loss_fn,
                    batch=batch)
  u2, _ = tx.update(grads, tx.init(params), params, loss_fn=tl.quad_loss_fn,
                    batch=batch, key=jax.random.key(0), step=3, other="x")
  np.testing.assert_array_equal(tl.flat(u1), tl.flat(u2))


@pytest.mark.parametrize("spec", tl.RULE_SPECS, ids=IDS)
def test_missing_extra_args_raise_naming_them(spec):
  tx = spec.make()
  params = tl.init_quadratic()
  grads = jax.tree_util.tree_map(jnp.ones_like, params)
  batch = tl.quad_batch(domains=2 if spec.domains else None)
  state = tx.init(params)
  with pytest.raises(TypeError, match="loss_fn"):
    tx.update(grads, state, params, batch=batch, key=jax.random.key(0))
  with pytest.raises(TypeError, match="batch"):
    tx.update(grads, state, params, loss_fn=tl.quad_loss_fn,
              key=jax.random.key(0))


LOSS_ONLY = [s for s in tl.RULE_SPECS if s.needs_aux is None]
NEEDS_AUX = [s for s in tl.RULE_SPECS if s.needs_aux is not None]


@pytest.mark.parametrize("spec", LOSS_ONLY,
                         ids=[IDS[tl.RULE_SPECS.index(s)] for s in LOSS_ONLY])
def test_loss_only_rules_take_scalar_loss_fn_and_tuple_batch(spec):
  """``optax.chain(rule, optax.sgd(0.1))`` with a scalar ``loss_fn`` on a
  tuple batch, under jit, gives the update of the (loss, aux) protocol."""
  tx = optax.chain(spec.make(), optax.sgd(0.1))
  params = tl.init_quadratic()
  batch = tl.quad_batch(domains=2 if spec.domains else None)
  pair = (batch["x"], batch["t"])
  key = jax.random.key(3)

  @jax.jit
  def scalar_step(params, state, pair):
    grads = jax.grad(tl.quad_scalar_loss_fn)(params, pair)
    return tx.update(grads, state, params, loss_fn=tl.quad_scalar_loss_fn,
                     batch=pair, key=key)

  @jax.jit
  def protocol_step(params, state, batch):
    grads = jax.grad(lambda p: tl.quad_loss_fn(p, batch)[0])(params)
    return tx.update(grads, state, params, loss_fn=tl.quad_loss_fn,
                     batch=batch, key=key)

  u1, s1 = scalar_step(params, tx.init(params), pair)
  u2, s2 = protocol_step(params, tx.init(params), batch)
  assert np.all(np.isfinite(tl.flat(u1)))
  assert np.any(tl.flat(u1) != 0)
  np.testing.assert_allclose(tl.flat(u1), tl.flat(u2), rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(tl.flat(s1), tl.flat(s2), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spec", NEEDS_AUX,
                         ids=[IDS[tl.RULE_SPECS.index(s)] for s in NEEDS_AUX])
def test_aux_rules_reject_scalar_loss_fn_naming_the_key(spec):
  tx = spec.make()
  params = tl.init_quadratic()
  batch = tl.quad_batch(domains=2 if spec.domains else None)
  scalar = lambda p, b: tl.quad_loss_fn(p, b)[0]
  grads = jax.grad(scalar)(params, batch)
  with pytest.raises(TypeError,
                     match=rf"{spec.name}: .*aux\['{spec.needs_aux}'\]"):
    jax.jit(lambda g, s, p: tx.update(g, s, p, loss_fn=scalar, batch=batch,
                                      key=jax.random.key(0)))(
                                          grads, tx.init(params), params)


@pytest.mark.parametrize("spec", tl.RULE_SPECS, ids=IDS)
def test_diagnostics_readable_with_optax_tree_get(spec):
  """Every field of the rule's state is found by name in a chain's state."""
  tx = optax.chain(spec.make(), optax.sgd(0.1))
  params = tl.init_quadratic()
  batch = tl.quad_batch(domains=2 if spec.domains else None)
  _, state, _ = tl.make_step(tx, tl.quad_loss_fn)(
      params, tx.init(params), batch, jax.random.key(0))
  rule_state = state[0]
  for field in rule_state._fields:
    found = optax.tree_utils.tree_get(state, field)
    np.testing.assert_array_equal(tl.flat(found),
                                  tl.flat(getattr(rule_state, field)))
