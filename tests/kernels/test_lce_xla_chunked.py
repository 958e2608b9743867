"""``implementation='xla_chunked'`` against the materialized reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lce_common as C
import lce_contract
from diversity_jax.kernels import linear_cross_entropy


def pytest_generate_tests(metafunc):
  if "case" in metafunc.fixturenames:
    metafunc.parametrize("case", metafunc.cls.CASES,
                         ids=["-".join(c) for c in metafunc.cls.CASES])


class TestXlaChunked(lce_contract.LceContract):
  """The streaming path (forward, recomputing backward)."""
  IMPL = "xla_chunked"
  OPTIONS = {"block_tokens": 16, "block_vocab": 16, "fused_backward": False}


class TestXlaChunkedFusedBackward(lce_contract.LceContract):
  """Gradients in the forward pass. It applies to scalar losses without the
  lse output, so those are differentiated without ``return_lse`` (and
  without an lse cotangent); ``'none'`` streams."""
  IMPL = "xla_chunked"
  OPTIONS = {"block_tokens": 16, "block_vocab": 16, "fused_backward": True}

  @staticmethod
  def _scalar(kw):
    return kw.get("reduction", "mean") != "none"

  def run(self, x, w, y, impl=None, **kw):
    if self._scalar(kw):
      kw.update(lse_cotangent=False, lse_output=False)
    return super().run(x, w, y, impl, **kw)

  def expected(self, x, w, y, **kw):
    if self._scalar(kw):
      kw["lse_cotangent"] = False
    return super().expected(x, w, y, **kw)

  def test_filter(self):
    """No gradient filter on this path: a bound of 2, which drops every
    tile of the streaming path, leaves the exact gradients."""
    x, w, y = C.make_inputs(lce_contract.N, lce_contract.D, lce_contract.V,
                            seed=7)[:3]
    self.compare(x, w, y, filter_eps=2.0)


def test_blocks_larger_than_inputs():
  inputs = C.make_inputs(lce_contract.N, lce_contract.D, lce_contract.V, seed=8)
  x, w, y, bias, cw = inputs
  kw = dict(bias=bias, class_weights=cw, label_smoothing=0.1, softcap=3.0)
  got = C.evaluate(x, w, y, implementation="xla_chunked", block_tokens=4096,
                   block_vocab=4096, **kw)
  want = C.evaluate(x, w, y, implementation="reference", **kw)
  C.assert_tree_close(got, want, rtol=2e-5, atol=2e-5)


def test_block_of_one_row_and_column():
  inputs = C.make_inputs(5, 3, 7, seed=9)
  x, w, y = inputs[:3]
  got = C.evaluate(x, w, y, implementation="xla_chunked", block_tokens=1,
                   block_vocab=1, bias=inputs[3], label_smoothing=0.1)
  want = C.evaluate(x, w, y, implementation="reference", bias=inputs[3],
                    label_smoothing=0.1)
  C.assert_tree_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("feature, reduction", [("all", "mean"),
                                                ("plain", "sum"),
                                                ("bias", "mean")])
def test_fused_backward_scalar_losses(feature, reduction):
  """``fused_backward=True`` (gradients formed in the forward pass)."""
  inputs = C.make_inputs(lce_contract.N, lce_contract.D, lce_contract.V,
                         seed=10)
  x, w, y = inputs[:3]
  kw = lce_contract._kwargs(feature, inputs)
  bias = kw.pop("bias")

  @jax.jit
  def grads(x, w, bias):
    def f(x, w, bias):
      return linear_cross_entropy(x, w, y, bias=bias, reduction=reduction,
                                  fused_backward=True, block_tokens=16,
                                  block_vocab=16, **kw)   # dW chunk tail
    loss, vjp = jax.vjp(f, x, w, bias)
    return (loss,) + vjp(jnp.float32(2.0))      # cotangent 2: scaling checked

  got = grads(x, w, bias)
  want = C.numpy_evaluate(x, w, y, bias=bias, reduction=reduction,
                          cotangent=(2.0, np.zeros(lce_contract.N)), **kw)
  C.assert_tree_close(got, (want[0],) + want[2:], rtol=2e-5, atol=2e-5,
                      names=("loss", "dx", "dw", "db"))


def test_fused_backward_all_ignored_and_bf16_fallback():
  x, w, _, _, _ = C.make_inputs(12, 5, 9, seed=11)
  y = jnp.full((12,), C.IGNORE, jnp.int32)
  f = jax.jit(jax.value_and_grad(lambda x, w: linear_cross_entropy(
      x, w, y, fused_backward=True), (0, 1)))
  loss, (dx, dw) = f(x, w)
  assert float(loss) == 0.0
  np.testing.assert_array_equal(dx, 0.0)
  np.testing.assert_array_equal(dw, 0.0)
  # bf16 inputs fall back to the streaming path (same values as without).
  xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
  y2 = C.make_inputs(12, 5, 9, seed=11)[2]
  a = jax.jit(jax.grad(lambda x: linear_cross_entropy(
      x, wb, y2, fused_backward=True)))(xb)
  b = jax.jit(jax.grad(lambda x: linear_cross_entropy(x, wb, y2)))(xb)
  np.testing.assert_array_equal(np.asarray(a, np.float32),
                                np.asarray(b, np.float32))


def test_fused_backward_temporary_is_one_row_block():
  """Compile-only: ``fused_backward=True`` keeps one ``(rows, V)`` f32 logit
  tile (``n_fused_rows``), not a second masked or gradient tile, while the
  reference's logits are ``n / rows`` times larger. The XLA of jax / jaxlib
  < 0.10.2 (the floor is older) does not let the gradient tile reuse the
  logits' buffer: two tiles there."""
  from diversity_jax.kernels.linear_cross_entropy import xla_fused
  n, d, v = 1024, 64, 65536
  rows = xla_fused.n_fused_rows(v)
  assert rows < n
  shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32),
            jax.ShapeDtypeStruct((v, d), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32))

  def temp_bytes(**kw):
    f = jax.value_and_grad(
        lambda x, w, y: linear_cross_entropy(x, w, y, **kw), (0, 1))
    return jax.jit(f).lower(*shapes).compile().memory_analysis(
    ).temp_size_in_bytes

  tile = rows * v * 4
  tiles = 1 if jax.__version_info__ >= (0, 10, 2) else 2
  got = temp_bytes(fused_backward=True, block_tokens=1024)
  assert tile <= got < (tiles + 0.25) * tile, (got, tiles, tile)
  assert temp_bytes(implementation="reference") >= n * v * 4


def test_bf16_without_bit_packing(monkeypatch):
  """The GPU / TPU data path (no uint16 packing of narrow floats) on CPU."""
  from diversity_jax.kernels.linear_cross_entropy import xla_chunked
  monkeypatch.setattr(xla_chunked, "bitcast_narrow_inputs", lambda: False)
  x, w, y, b, _ = C.make_inputs(lce_contract.N, lce_contract.D, lce_contract.V,
                                seed=12, dtype=jnp.bfloat16)
  got = C.evaluate(x, w, y, bias=b, block_tokens=16, block_vocab=16,
                   reduction="sum", seed=3)
  monkeypatch.undo()
  want = C.evaluate(x, w, y, bias=b, block_tokens=16, block_vocab=16,
                    reduction="sum", seed=3)
  C.assert_tree_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_no_vocab_sized_temporaries(dtype):
  """Compile-only: loss + dX + dW keep no V x D temporary buffer (also with
  ``vocab_sorting=True``).

  XLA:CPU normalizes bf16 slices / updates of loop-carried arrays to f32 and
  hoists the convert, which used to keep a full copy of ``w`` (and of ``dW``)
  alive; the reference path (materialized logits) is checked to be large on
  the same shapes, so the bound is meaningful.
  """
  n, d, v = 128, 64, 65536
  x = jax.ShapeDtypeStruct((n, d), dtype)
  w = jax.ShapeDtypeStruct((v, d), dtype)
  y = jax.ShapeDtypeStruct((n,), jnp.int32)

  def temp_bytes(**kw):
    f = jax.value_and_grad(
        lambda x, w, y: linear_cross_entropy(x, w, y, **kw), (0, 1))
    mem = jax.jit(f).lower(x, w, y).compile().memory_analysis()
    return mem.temp_size_in_bytes

  w_bytes = v * d * jnp.dtype(dtype).itemsize
  assert temp_bytes(implementation="reference") >= n * v * 4
  for tail in (0, 100):                  # V a multiple of block_vocab or not
    w = jax.ShapeDtypeStruct((v - tail, d), dtype)
    # vocab_sorting: gathered w rows, scattered dW rows, (V,) LA + argsort.
    for sort in (False, True):
      got = temp_bytes(block_tokens=64, block_vocab=512, vocab_sorting=sort,
                       fused_backward=False)
      assert got < w_bytes / 4, (tail, sort, got, w_bytes)


def test_default_block_sizes_per_backend(monkeypatch):
  """CPU keeps its measured 1024 x 512 tiles; GPU / TPU get larger tiles
  (fewer loop trips); explicit sizes win; all clamped to (N, V)."""
  from diversity_jax.kernels.linear_cross_entropy import xla_chunked
  assert xla_chunked.block_sizes(4096, 65536) == (1024, 512)
  assert xla_chunked.block_sizes(100, 300) == (100, 300)
  assert xla_chunked.block_sizes(4096, 65536, 64, 128) == (64, 128)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert xla_chunked.block_sizes(8192, 256000) == (2048, 4096)
  assert xla_chunked.block_sizes(8192, 256000, None, 1024) == (2048, 1024)


def test_cpu_defaults_follow_the_native_bf16_dot(monkeypatch):
  """CPU defaults by dtype and host (``native_bf16_dot``: AVX-512 BF16 / AMX,
  XLA not capped below AVX-512, YNNPACK dots on).

  ``fused_backward=None``: gradients in the forward pass (vocab-major
  ``(V, rows)`` tile) for f32, and for bf16 without the dot; the streaming
  path for bf16 with it. Streaming tiles: ``CPU_BLOCKS_WITHOUT_BF16_DOT``
  for bf16 without the dot, else 1024 x 512. Checked on the traced kernels.
  """
  from diversity_jax.kernels.linear_cross_entropy import xla_chunked as xc
  from diversity_jax.kernels.linear_cross_entropy import xla_fused
  assert xc.native_bf16_dot({"avx2", "avx512f", "avx512_bf16"}, "")
  assert xc.native_bf16_dot({"amx_bf16"}, "--xla_cpu_max_isa=AVX512 --x=1")
  assert not xc.native_bf16_dot({"avx", "avx2", "fma", "f16c"}, "")
  assert not xc.native_bf16_dot({"avx512_bf16"}, "--xla_cpu_max_isa=AVX2")
  assert not xc.native_bf16_dot({"avx512_bf16"}, "--xla_cpu_max_isa=avx")
  assert not xc.native_bf16_dot(
      {"avx512_bf16"}, "--xla_cpu_experimental_ynn_fusion_type=")
  assert isinstance(xc.cpu_flags(), frozenset)
  wide = xc.CPU_BLOCKS_WITHOUT_BF16_DOT
  assert wide != xc.DEFAULT_BLOCKS["cpu"]
  n, v = 4096, 1000
  x = jnp.ones((n, 8), jnp.bfloat16)
  w = jnp.ones((v, 8), jnp.bfloat16)
  y = jnp.zeros((n,), jnp.int32)
  trace = lambda x, w, **kw: str(jax.make_jaxpr(jax.grad(
      lambda x, w: linear_cross_entropy(x, w, y, **kw), (0, 1)))(x, w))
  f32 = lambda a: a.astype(jnp.float32)
  fused_tile = f"f32[{v},1024]"       # (V, rows): rows = min(bt, ...)
  for native in (False, True):
    monkeypatch.setattr(xc, "native_bf16_dot", lambda native=native: native)
    assert xla_fused.fused_by_default(jnp.float32)
    assert xla_fused.fused_by_default(jnp.bfloat16) is not native
    assert xc.block_sizes(n, 65536, dtype=jnp.float32) == (1024, 512)
    bt, bv = (1024, 512) if native else wide
    assert xc.block_sizes(n, 65536, dtype=jnp.bfloat16) == (bt, bv)
    streaming_bf16 = trace(x, w, fused_backward=False, block_vocab=512)
    assert f"f32[{bt},{bv}]" in streaming_bf16 and fused_tile not in (
        streaming_bf16)
    assert f"f32[1024,512]" in trace(f32(x), f32(w), fused_backward=False,
                                     block_vocab=512)
    assert (fused_tile in trace(x, w)) is not native
    assert fused_tile in trace(f32(x), f32(w))
    # Vocab sorting and a numeric filter_eps stream under the default.
    assert fused_tile not in trace(f32(x), f32(w), vocab_sorting=True)
    assert fused_tile not in trace(f32(x), f32(w), filter_eps=1e-6)
    assert fused_tile in trace(f32(x), f32(w), filter_eps=None)


def test_fused_backward_nan_input_and_out_of_range_labels():
  """``fused_backward=True`` (gradients in the forward pass) agrees with the
  reference on NaN rows: the same NaN pattern in loss, dX, dW and db (the
  bad rows' cotangents are NaN before the forward forms the gradients),
  the same finite values elsewhere."""
  x, w, y, bias, _, _, _ = C.bad_inputs(10, 4, 20, seed=13)

  @jax.jit
  def grads(x, w, bias, y):
    def run(**kw):
      f = lambda x, w, b: linear_cross_entropy(x, w, y, bias=b, **kw)
      loss, vjp = jax.vjp(f, x, w, bias)
      return (loss,) + vjp(jnp.float32(2.0))
    return (run(fused_backward=True, block_tokens=4, block_vocab=8),
            run(implementation="reference"))

  for got, want, name in zip(*grads(x, w, bias, y), ("loss", "dx", "dw", "db")):
    got, want = np.asarray(got), np.asarray(want)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)],
                               rtol=2e-5, atol=2e-5, err_msg=name)
  assert np.all(np.isnan(np.asarray(got)))        # db sums over every row
