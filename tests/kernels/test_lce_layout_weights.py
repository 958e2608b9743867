"""``weight_layout='dv'`` (a ``(D, V)`` Dense kernel) and per-token ``weights``.

Every path (``reference``, ``xla_chunked`` streaming, with ``fused_backward``,
with vocab sorting, vocab-parallel inside ``jax.shard_map``, and the Pallas
kernels in interpret mode for ``weights``) is checked against optax on logits
built here (``optax.softmax_cross_entropy`` of ``x @ W`` with smoothed
one-hot targets, the z-loss added by hand), both layouts, under ``jax.jit``.
A compile-only test checks that the ``'dv'`` layout keeps no ``V x D``
temporary (no transposed copy of ``w``).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from diversity_jax.kernels import linear_cross_entropy

N, D, V = 48, 16, 40
IGNORE = -100


def _inputs(seed=0, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((N, D)) / np.sqrt(D) * 3
  w = rng.standard_normal((V, D))
  labels = rng.integers(0, V, N)
  labels[rng.random(N) < 0.2] = IGNORE
  weights = rng.uniform(0.0, 2.0, N)
  weights[:5] = 0.0
  bias = rng.standard_normal(V) * 0.5
  cast = lambda a: jnp.asarray(a, dtype)
  return (cast(x), cast(w), jnp.asarray(labels, jnp.int32),
          jnp.asarray(weights, jnp.float32), cast(bias))


def _optax_loss(x, w_vd, labels, bias, weights, reduction, smoothing, z, cap):
  """Independent formula: optax on the materialized logits."""
  logits = x.astype(jnp.float32) @ w_vd.astype(jnp.float32).T + bias
  if cap:
    logits = cap * jnp.tanh(logits / cap)
  valid = labels != IGNORE
  safe = jnp.where(valid, labels, 0)
  targets = optax.smooth_labels(jax.nn.one_hot(safe, V), smoothing)
  per = optax.softmax_cross_entropy(logits, targets)
  per = per + z * jax.nn.logsumexp(logits, axis=-1) ** 2
  m = jnp.ones(N) if weights is None else weights
  per = jnp.where(valid, per * m, 0.0)
  if reduction == "none":
    return per
  if reduction == "sum":
    return jnp.sum(per)
  return jnp.sum(per) / jnp.sum(jnp.where(valid, m, 0.0))


def _value_and_grads(f, x, w, bias, reduction):
  ct = jnp.asarray(np.random.default_rng(3).standard_normal(N), jnp.float32)
  def g(x, w, b):
    out = f(x, w, b)
    return jnp.sum(out * ct) if reduction == "none" else out
  return jax.jit(jax.value_and_grad(g, argnums=(0, 1, 2)))(x, w, bias)


def _check(kw, layout, use_weights, reduction, opts, tol=2e-5):
  x, w, labels, weights, bias = _inputs()
  weights = weights if use_weights else None
  w_in = w if layout == "vd" else w.T

  def ours(x, w, b):
    return linear_cross_entropy(x, w, labels, bias=b, weights=weights,
                                weight_layout=layout, reduction=reduction,
                                label_smoothing=opts[0],
                                log_partition_penalty=opts[1],
                                softcap=opts[2], **kw)

  def ref(x, w, b):
    w_vd = w if layout == "vd" else w.T
    return _optax_loss(x, w_vd, labels, b, weights, reduction, *opts)

  (l1, g1), (l2, g2) = (_value_and_grads(f, x, w_in, bias, reduction)
                        for f in (ours, ref))
  np.testing.assert_allclose(l1, l2, rtol=tol, atol=tol)
  for a, b in zip(g1, g2):
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


PATHS = {
    "reference": dict(implementation="reference"),
    "xla_chunked": dict(implementation="xla_chunked", block_tokens=16,
                        block_vocab=16, filter_eps=None),
    "xla_chunked_filter_sorted": dict(implementation="xla_chunked",
                                      block_tokens=16, block_vocab=16,
                                      vocab_sorting=True),
}
OPTS = [(0.0, 0.0, None), (0.1, 1e-2, 4.0)]


@pytest.mark.parametrize("path", sorted(PATHS))
@pytest.mark.parametrize("layout", ["vd", "dv"])
@pytest.mark.parametrize("use_weights", [False, True])
def test_paths_against_optax(path, layout, use_weights):
  for reduction, opts in (("mean", OPTS[1]), ("none", OPTS[0])):
    _check(PATHS[path], layout, use_weights, reduction, opts)


@pytest.mark.parametrize("layout", ["vd", "dv"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_backward_against_optax(layout, reduction):
  kw = dict(implementation="xla_chunked", fused_backward=True,
            block_tokens=16, block_vocab=16)
  _check(kw, layout, True, reduction, OPTS[1])
  _check(kw, layout, False, reduction, OPTS[0])


def test_fused_backward_forward_only_call():
  """The forward of ``fused_backward=True`` without a gradient."""
  x, w, labels, weights, _ = _inputs()
  got = jax.jit(lambda x, w: linear_cross_entropy(
      x, w, labels, weights=weights, fused_backward=True))(x, w)
  want = _optax_loss(x, w, labels, 0.0, weights, "mean", 0.0, 0.0, None)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize("impl", ["pallas_gpu", "pallas_tpu"])
def test_pallas_weights_and_layout(impl):
  kw = dict(implementation=impl, interpret=True)
  _check(kw, "vd", True, "mean", OPTS[1], tol=1e-4)
  x, w, labels, _, _ = _inputs()
  with pytest.raises(NotImplementedError, match="weight_layout"):
    linear_cross_entropy(x, w.T, labels, weight_layout="dv", **kw)


@pytest.mark.parametrize("layout", ["vd", "dv"])
def test_vocab_parallel_against_optax(layout):
  if jax.device_count() < 4:
    pytest.skip("needs 4 (host) devices; tests/conftest.py forces them")
  mesh = Mesh(np.array(jax.devices()[:4]), ("model",))
  x, w, labels, weights, bias = _inputs()
  w_in = w if layout == "vd" else w.T
  w_spec = P("model") if layout == "vd" else P(None, "model")

  def ours(x, w, b):
    body = functools.partial(
        linear_cross_entropy, weight_layout=layout, reduction="mean",
        label_smoothing=0.1, log_partition_penalty=1e-2, softcap=4.0,
        vocab_axis_name="model", block_tokens=16, block_vocab=8)
    return jax.shard_map(
        lambda x, w, b, y, m: body(x, w, y, bias=b, weights=m), mesh=mesh,
        in_specs=(P(), w_spec, P("model"), P(), P()),
        out_specs=P())(x, w, b, labels, weights)

  def ref(x, w, b):
    w_vd = w if layout == "vd" else w.T
    return _optax_loss(x, w_vd, labels, b, weights, "mean", 0.1, 1e-2, 4.0)

  (l1, g1), (l2, g2) = (_value_and_grads(f, x, w_in, bias, "mean")
                        for f in (ours, ref))
  np.testing.assert_allclose(l1, l2, rtol=2e-5)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)


def test_bf16_dv_layout_matches_vd():
  x, w, labels, weights, bias = _inputs(dtype=jnp.bfloat16)
  kw = dict(bias=bias, weights=weights, block_tokens=16, block_vocab=16)
  f = lambda layout, w: jax.jit(jax.value_and_grad(
      lambda x, w: linear_cross_entropy(x, w, labels, weight_layout=layout,
                                        **kw), (0, 1)))(x, w)
  l_vd, (dx_vd, dw_vd) = f("vd", w)
  l_dv, (dx_dv, dw_dv) = f("dv", w.T)
  assert dw_dv.dtype == jnp.bfloat16 and dw_dv.shape == (D, V)
  np.testing.assert_allclose(l_dv, l_vd, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(dx_dv, np.float32),
                                np.asarray(dx_vd, np.float32))
  np.testing.assert_array_equal(np.asarray(dw_dv.T, np.float32),
                                np.asarray(dw_vd, np.float32))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_dv_layout_keeps_no_transposed_copy(dtype):
  """Compile-only: with ``(D, V)`` weights loss + dX + dW hold no V x D
  temporary (a transposed copy of ``w`` or of ``dW`` would be one)."""
  n, d, v = 128, 64, 65536 - 100
  x = jax.ShapeDtypeStruct((n, d), dtype)
  y = jax.ShapeDtypeStruct((n,), jnp.int32)
  m = jax.ShapeDtypeStruct((n,), jnp.float32)

  def temp_bytes(w_shape, **kw):
    f = jax.value_and_grad(lambda x, w, y, m: linear_cross_entropy(
        x, w, y, weights=m, block_tokens=64, block_vocab=512, **kw), (0, 1))
    w = jax.ShapeDtypeStruct(w_shape, dtype)
    return jax.jit(f).lower(x, w, y, m).compile().memory_analysis(
        ).temp_size_in_bytes

  w_bytes = v * d * jnp.dtype(dtype).itemsize
  # The sorted path's gather of (D, V) columns is fused without a transposed
  # copy from jax 0.10.2 on; older XLA (the floor) keeps one.
  sorts = (False, True) if jax.__version_info__ >= (0, 10, 2) else (False,)
  for sort in sorts:
    got = temp_bytes((d, v), weight_layout="dv", vocab_sorting=sort,
                     fused_backward=False)
    assert got < w_bytes / 4, (sort, got, w_bytes)
  # The fused path (for bf16 with its f32 dW accumulator): no more than in
  # the (V, D) layout.
  got = temp_bytes((d, v), weight_layout="dv", fused_backward=True)
  assert got < temp_bytes((v, d), fused_backward=True) + w_bytes / 4


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(weight_layout="vd", w_t=True), ValueError, r"\(V, 16\)"),
    (dict(weight_layout="dv"), ValueError, r"\(16, V\)"),
    (dict(weight_layout="kv"), ValueError, "weight_layout"),
    (dict(weights=jnp.ones((N - 1,))), ValueError, "weights"),
    (dict(weights=jnp.ones((N,), jnp.int32)), TypeError, "weights"),
])
def test_bad_layout_or_weights(kwargs, error, match):
  x, w, labels, _, _ = _inputs()
  if kwargs.pop("w_t", False):
    w = w.T
  with pytest.raises((error, ValueError, TypeError), match=match):
    linear_cross_entropy(x, w, labels, **kwargs)


@pytest.mark.parametrize("layout", ["vd", "dv"])
def test_fused_backward_inside_shard_map_over_data(layout):
  """Rows split over a 'data' axis, ``w`` replicated: the fused path's loop
  carries vary over the axis and ``dW`` / ``db`` are summed over it."""
  if jax.device_count() < 4:
    pytest.skip("needs 4 (host) devices; tests/conftest.py forces them")
  mesh = Mesh(np.array(jax.devices()[:4]), ("data",))
  x, w, labels, weights, bias = _inputs()
  w_in = w if layout == "vd" else w.T
  kw = dict(weight_layout=layout, reduction="sum", fused_backward=True,
            log_partition_penalty=1e-2, block_tokens=8, block_vocab=16)

  def mapped(x, w, b):
    body = lambda x, w, b, y, m: jax.lax.psum(
        linear_cross_entropy(x, w, y, bias=b, weights=m, **kw), "data")
    return jax.shard_map(body, mesh=mesh,
                         in_specs=(P("data"), P(), P(), P("data"), P("data")),
                         out_specs=P())(x, w, b, labels, weights)

  def ref(x, w, b):
    w_vd = w if layout == "vd" else w.T
    return _optax_loss(x, w_vd, labels, b, weights, "sum", 0.0, 1e-2, None)

  (l1, g1), (l2, g2) = (_value_and_grads(f, x, w_in, bias, "sum")
                        for f in (mapped, ref))
  np.testing.assert_allclose(l1, l2, rtol=2e-5)
  for a, b in zip(g1, g2):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
