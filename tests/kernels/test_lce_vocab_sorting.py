"""``linear_cross_entropy(..., vocab_sorting=True)`` (CCE vocabulary sorting).

The sorted backward (vocab blocks in ``argsort`` order of the per-class logit
average, gathered ``w`` rows, scattered ``dW`` rows) is checked against
``lce_common.numpy_evaluate`` (float64 brute force on materialized logits) and
against ``lce_sorting_model`` (an independent numpy model of the filtered
gradient on the sorted tile grid) for ``xla_chunked`` and both Pallas kernels
in interpret mode; the logit average against a numpy mean; the skipped-tile
count against a numpy count, and shown to rise with sorting on a peaked
problem (Wijmans et al. 2025, arXiv:2411.09009, Sec. 4.3 / Table 1).
Everything under ``jax.jit``. The vocab-parallel mode's sorting is tested in
``test_lce_vocab_parallel.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lce_common as C
import lce_sorting_model as M
from diversity_jax.kernels import linear_cross_entropy
from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy import xla_chunked

N, D, V = 37, 19, 53            # ragged: V % 16 = 5, N % 16 = 5
BLOCKS = {"block_tokens": 16, "block_vocab": 16}
SORT = dict(BLOCKS, implementation="xla_chunked", vocab_sorting=True)
# pallas_gpu in interpret mode: zero-padded (not clamped) token blocks,
# padded classes kept at the end of the order.
SORT_GPU = dict(BLOCKS, implementation="pallas_gpu", interpret=True,
                block_dim=16, vocab_sorting=True)
# pallas_tpu in interpret mode: vocab blocks are multiples of 128 lanes; the
# kernels stream sorted copies of w / bias / class weights.
SORT_TPU = dict(block_tokens=16, block_vocab=128, implementation="pallas_tpu",
                interpret=True, vocab_sorting=True)
F32_TOL = 2e-5


def _features(name, inputs):
  _, _, _, bias, cw = inputs
  if name == "plain":
    return {}
  # Every filter-compatible feature (label smoothing turns the filter off).
  return {"bias": bias, "class_weights": cw, "softcap": 2.5,
          "log_partition_penalty": 1e-3}


@pytest.mark.parametrize("feature, reduction, v", [
    ("plain", "mean", V),            # ragged vocab tail
    ("plain", "sum", 48),            # V a multiple of block_vocab
    ("features", "sum", V),
    ("features", "none", V),         # per-row cotangent + lse cotangent
])
def test_matches_reference_f32(feature, reduction, v):
  inputs = C.make_inputs(N, D, v, seed=len(feature) + v)
  x, w, y = inputs[:3]
  kw = dict(_features(feature, inputs), reduction=reduction)
  # filter_eps tiny: the filter is on (sorting active) but drops nothing.
  got = C.evaluate(x, w, y, filter_eps=1e-30, **SORT, **kw)
  want = C.numpy_evaluate(x, w, y, **kw)
  C.assert_tree_close(got, want, rtol=F32_TOL, atol=F32_TOL)
  # The order used is a real permutation of the vocabulary here.
  la = M.logit_average(x, w, y, kw.get("bias"), kw.get("softcap"))
  assert not np.array_equal(np.argsort(la, kind="stable"), np.arange(v))


@pytest.mark.parametrize("opts", [
    SORT_GPU, SORT_TPU,
    pytest.param(dict(SORT_GPU, interpret=False), marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not C.has_platform("gpu"), reason="needs a GPU")]),
    pytest.param(dict(SORT_TPU, interpret=False), marks=[
        pytest.mark.tpu,
        pytest.mark.skipif(not C.has_platform("tpu"), reason="needs a TPU")]),
], ids=["pallas_gpu", "pallas_tpu", "pallas_gpu_hardware",
        "pallas_tpu_hardware"])
def test_pallas_matches_reference(opts):
  inputs = C.make_inputs(N, D, 300, seed=4)     # TPU: 3 vocab blocks, ragged
  x, w, y = inputs[:3]
  kw = dict(_features("features", inputs), reduction="none")
  got = C.evaluate(x, w, y, filter_eps=1e-30, **opts, **kw)
  want = C.numpy_evaluate(x, w, y, **kw)
  C.assert_tree_close(got, want, rtol=F32_TOL, atol=F32_TOL)


def test_logit_average_side_output():
  inputs = C.make_inputs(N, D, V, seed=2)
  x, w, y, bias, _ = inputs
  hp = _math.Hyper(num_classes=V, softcap=3.0)
  f = jax.jit(lambda x, w, y, b: xla_chunked.logit_average(
      x, w, y, hp=hp, ignore_index=C.IGNORE, bias=b, **BLOCKS))
  want = M.logit_average(x, w, y, bias, 3.0)
  np.testing.assert_allclose(f(x, w, y, bias), want, rtol=1e-5, atol=1e-5)
  y_ign = jnp.full((N,), C.IGNORE, jnp.int32)
  np.testing.assert_array_equal(f(x, w, y_ign, bias), 0.0)


def test_bf16_scaled_tolerance():
  inputs = C.make_inputs(N, D, V, seed=3, dtype=jnp.bfloat16)
  x, w, y = inputs[:3]
  kw = dict(_features("features", inputs), reduction="sum")
  got = C.evaluate(x, w, y, **SORT, **kw)       # filter_eps='auto' (2^-12)
  want = C.numpy_evaluate(x, w, y, **kw)
  assert got[2].dtype == jnp.bfloat16 and got[3].dtype == jnp.bfloat16
  for name, g, e, k in zip(("loss", "lse", "dx", "dw", "db"), got, want,
                           (N * D, D, V, N, N)):
    g, e = np.asarray(g, np.float32), np.asarray(e, np.float32)
    assert np.all(np.isfinite(g)), name
    tol = C.bf16_tolerance(k, max(1.0, float(np.max(np.abs(e)))) / 8)
    np.testing.assert_allclose(g, e, atol=tol, rtol=2.0 ** -7, err_msg=name)


def test_bf16_scatter_path_equals_packed_path(monkeypatch):
  """GPU / TPU data path (``dW`` scatter, no uint16 row writes) on CPU."""
  x, w, y, b, _ = C.make_inputs(N, D, V, seed=12, dtype=jnp.bfloat16)
  monkeypatch.setattr(xla_chunked, "bitcast_narrow_inputs", lambda: False)
  got = C.evaluate(x, w, y, bias=b, reduction="sum", **SORT)
  monkeypatch.undo()
  want = C.evaluate(x, w, y, bias=b, reduction="sum", **SORT)
  C.assert_tree_close(got, want, rtol=0, atol=0)


def test_all_labels_ignored():
  x, w, _, bias, _ = C.make_inputs(N, D, V, seed=5)
  y = jnp.full((N,), C.IGNORE, jnp.int32)
  loss, lse, dx, dw, db = C.evaluate(x, w, y, bias=bias, lse_cotangent=False,
                                     **SORT)
  assert float(loss) == 0.0
  for g in (dx, dw, db):
    np.testing.assert_array_equal(np.asarray(g), 0.0)
  assert np.all(np.isfinite(np.asarray(lse)))


def test_sorting_raises_skipped_tiles():
  x, w, y = M.peaked()
  eps, bt, bv = 1e-3, 16, 16
  n, v = x.shape[0], w.shape[0]
  hp = _math.Hyper(num_classes=v)
  la = jax.jit(lambda x, w, y: xla_chunked.logit_average(
      x, w, y, hp=hp, ignore_index=C.IGNORE, block_tokens=bt,
      block_vocab=bv))(x, w, y)
  order_np = np.argsort(M.logit_average(x, w, y), kind="stable")
  np.testing.assert_array_equal(np.argsort(np.asarray(la), kind="stable"),
                                order_np)
  p, onehot, lse, _ = M.probs(x, w, y)
  count = jax.jit(lambda o: xla_chunked.skipped_tiles(
      x, w, y, jnp.asarray(lse, jnp.float32), filter_eps=eps, order=o,
      ignore_index=C.IGNORE, block_tokens=bt, block_vocab=bv)[0])
  counts = {}
  for name, order in (("natural", np.arange(v)), ("sorted", order_np)):
    want = sum(np.abs(p - onehot)[np.ix_(r, c)].max() < eps
               for r, _, c in M.tiles(n, v, bt, bv, order))
    assert int(count(jnp.asarray(order, jnp.int32))) == want, name
    counts[name] = want
  # 8 hot classes in 8 different blocks vs all in the last (ragged) block.
  assert counts["natural"] == 0
  assert counts["sorted"] >= 0.8 * len(M.tiles(n, v, bt, bv, order_np))


@pytest.mark.parametrize("impl, v", [("xla_chunked", 122),
                                     ("pallas_gpu", 122), ("pallas_tpu", 300)])
def test_filtered_gradient_on_sorted_grid(impl, v):
  """With a real filter (eps = 1e-3) the sorted backward equals a numpy model
  that zeroes exactly the skipped tiles of the sorted grid; the filter
  changes the gradient and sorting changes which tiles it skips, so the
  comparison can fail either way."""
  x, w, y = M.peaked(v=v)
  opts = {"xla_chunked": SORT, "pallas_gpu": SORT_GPU,
          "pallas_tpu": SORT_TPU}[impl]
  eps, bt, bv = 1e-3, opts["block_tokens"], opts["block_vocab"]
  got = C.evaluate(x, w, y, reduction="sum", filter_eps=eps, **opts)
  order = np.argsort(M.logit_average(x, w, y), kind="stable")
  model = lambda order: M.filtered_gradients(
      x, w, y, eps=eps, bt=bt, bv=bv, orders=[order],
      clamp=impl == "xla_chunked")
  want_dx, want_dw, skipped = model(order)
  assert skipped > 0
  np.testing.assert_allclose(got[2], want_dx, rtol=F32_TOL, atol=F32_TOL)
  np.testing.assert_allclose(got[3], want_dw, rtol=F32_TOL, atol=F32_TOL)
  exact = C.numpy_evaluate(x, w, y, reduction="sum")
  assert np.abs(exact[3] - want_dw).max() > 1e-4       # the filter bites
  natural_dw = model(np.arange(v))[1]
  assert np.abs(natural_dw - want_dw).max() > 1e-4     # the order matters
  # And within the filter's own tolerance of the exact gradient.
  np.testing.assert_allclose(got[3], exact[3], atol=eps * x.shape[0] * 10)


def test_ignored_without_filter():
  """No filter (filter_eps=None, label smoothing): no sort in the program."""
  x, w, y = C.make_inputs(N, D, V, seed=7)[:3]

  def program(**kw):
    f = jax.grad(lambda x, w: linear_cross_entropy(x, w, y, **SORT, **kw),
                 (0, 1))
    return str(jax.make_jaxpr(f)(x, w))

  assert "sort[" in program(filter_eps="auto")      # the sort primitive
  assert "sort[" not in program(filter_eps=None)
  assert "sort[" not in program(label_smoothing=0.1)


def test_bad_input():
  x, w, y = C.make_inputs(N, D, V, seed=8)[:3]
  with pytest.raises(TypeError, match="vocab_sorting"):
    linear_cross_entropy(x, w, y, vocab_sorting="yes")
