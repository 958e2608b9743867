"""API-level behaviour of ``linear_cross_entropy``: validation errors, dispatch,
empty batches, vmap and sharded inputs (default implementation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import diversity_jax.kernels as kernels
import lce_common as C
from diversity_jax.kernels import linear_cross_entropy
from diversity_jax.kernels.linear_cross_entropy import IMPLEMENTATIONS
from diversity_jax.kernels.linear_cross_entropy import default_implementation

SPECS = ["linear_cross_entropy"]   # must equal kernels.__all__


def test_spec_list_matches_all():
  assert sorted(SPECS) == sorted(kernels.__all__)


def test_implementations_registry():
  assert set(IMPLEMENTATIONS) == {"reference", "xla_chunked", "pallas_gpu",
                                  "pallas_tpu"}
  assert default_implementation("cpu") == "xla_chunked"


def _good():
  x = jnp.ones((4, 3))
  w = jnp.ones((5, 3))
  y = jnp.array([0, 1, 2, -100])
  return x, w, y


@pytest.mark.parametrize("change, match, error", [
    (dict(w=jnp.ones((5, 4))), r"`w` must have shape \(V, 3\)", ValueError),
    (dict(labels=jnp.zeros((3,), jnp.int32)), "`labels` must have shape",
     ValueError),
    (dict(labels=jnp.zeros((4,), jnp.float32)), "`labels` must have an integer",
     TypeError),
    (dict(x=jnp.ones((4, 3), jnp.int32)), "`x` must have a floating", TypeError),
    (dict(w=jnp.ones((5,))), "`w` must have rank 2", ValueError),
    (dict(bias=jnp.ones((4,))), r"`bias` must have shape \(5,\)", ValueError),
    (dict(class_weights=jnp.ones((6,))), "`class_weights` must have shape",
     ValueError),
    (dict(implementation="triton"), "`implementation` must be one of",
     ValueError),
    (dict(reduction="avg"), "`reduction` must be one of", ValueError),
    (dict(label_smoothing=1.5), "`label_smoothing` must lie in", ValueError),
    (dict(log_partition_penalty=-1.0), "`log_partition_penalty` must lie in",
     ValueError),
    (dict(softcap=0.0), "`softcap` must lie in", ValueError),
    (dict(ignore_index=2), "`ignore_index` must lie outside", ValueError),
    (dict(filter_eps="fast"), "`filter_eps` must be 'auto'", ValueError),
    (dict(filter_eps=-1.0), "`filter_eps` must lie in", ValueError),
    (dict(block_vocab=0), "`block_vocab` must be a positive int", ValueError),
    (dict(fused_backward=1), "`fused_backward` must be None or a Python bool",
     TypeError),
])
def test_bad_input_raises_at_trace_time(change, match, error):
  x, w, y = _good()
  args = dict(x=x, w=w, labels=y)
  args.update(change)
  x, w, y = args.pop("x"), args.pop("w"), args.pop("labels")
  with pytest.raises(error, match="linear_cross_entropy: " + match):
    jax.jit(lambda x, w, y: linear_cross_entropy(x, w, y, **args))(x, w, y)


def test_out_of_range_labels_reported_when_concrete():
  x, w, _ = _good()
  with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 5\)"):
    linear_cross_entropy(x, w, jnp.array([0, 1, 7, -100]))


def test_docstring_example():
  x = jnp.ones((4, 8)); w = jnp.zeros((16, 8)); y = jnp.arange(4)
  np.testing.assert_allclose(jax.jit(linear_cross_entropy)(x, w, y),
                             np.log(16.0), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(reduction):
  x = jnp.zeros((0, 3)); w = jnp.ones((5, 3)); y = jnp.zeros((0,), jnp.int32)
  f = jax.jit(jax.value_and_grad(
      lambda x, w: jnp.sum(linear_cross_entropy(x, w, y, reduction=reduction)),
      (0, 1)))
  loss, (dx, dw) = f(x, w)
  assert float(loss) == 0.0 and dx.shape == (0, 3)
  np.testing.assert_array_equal(dw, 0.0)


def test_f16_inputs_compute_in_f32():
  x, w, y, b, _ = C.make_inputs(12, 5, 9, seed=3, dtype=jnp.float16)
  loss, lse, dx, dw, db = C.evaluate(x, w, y, bias=b, block_vocab=4,
                                     block_tokens=8)
  assert loss.dtype == jnp.float32 and dx.dtype == jnp.float16
  want = C.numpy_evaluate(x, w, y, bias=b)
  for g, e in zip((loss, lse, dx, dw, db), want):
    np.testing.assert_allclose(np.asarray(g, np.float64), e, rtol=5e-3,
                               atol=5e-3)


def test_vmap_over_leading_axis():
  xs, w, _, b, _ = C.make_inputs(3 * 10, 6, 11, seed=4, batch=(3, 10))
  ys = C.make_inputs(3 * 10, 6, 11, seed=5, batch=(3, 10))[2]

  def loss(x, y, w, b):
    return linear_cross_entropy(x, w, y, bias=b, block_tokens=4, block_vocab=4)

  @jax.jit
  def batched(xs, ys, w, b):
    f = lambda x, y: jax.value_and_grad(loss, (0, 2, 3))(x, y, w, b)
    return jax.vmap(f)(xs, ys)

  vals, (dxs, dws, dbs) = batched(xs, ys, w, b)
  for i in range(3):
    want = C.numpy_evaluate(xs[i], w, ys[i], bias=b, lse_cotangent=False,
                            cotangent=(1.0, np.zeros(10)))
    np.testing.assert_allclose(vals[i], want[0], rtol=2e-5, atol=2e-5)
    for g, e in zip((dxs[i], dws[i], dbs[i]), want[2:]):
      np.testing.assert_allclose(g, e, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("w_spec", [P(), P("model", None)],
                         ids=["w_replicated", "w_vocab_sharded"])
def test_sharded_inputs(w_spec):
  devices = np.array(jax.devices()[:8])
  if devices.size < 8:
    pytest.skip("needs 8 (host) devices; tests/conftest.py forces them")
  mesh = Mesh(devices.reshape(4, 2), ("data", "model"))
  x, w, y, b, _ = C.make_inputs(32, 6, 16, seed=6)
  xs = jax.device_put(x, NamedSharding(mesh, P("data", None)))
  ys = jax.device_put(y, NamedSharding(mesh, P("data")))
  ws = jax.device_put(w, NamedSharding(mesh, w_spec))
  f = jax.jit(jax.value_and_grad(
      lambda x, w: linear_cross_entropy(x, w, ys, softcap=5.0, block_tokens=8,
                                        block_vocab=8), (0, 1)))
  loss, (dx, dw) = f(xs, ws)
  want = C.numpy_evaluate(x, w, y, softcap=5.0, lse_cotangent=False,
                          cotangent=(1.0, np.zeros(32)))
  np.testing.assert_allclose(loss, want[0], rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(dx, want[2], rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(dw, want[3], rtol=2e-5, atol=2e-5)
