"""Explicit vocab-parallel ``linear_cross_entropy(..., vocab_axis_name=...)``.

Inside ``jax.shard_map`` over a 'model' axis of 4 host devices (forced by
tests/conftest.py), with ``w`` / ``bias`` / ``class_weights`` split over the
vocabulary and ``x`` / global labels replicated, loss, lse and the VJP
``(dx, dw, dbias)`` for random loss and lse cotangents must equal the plain
call on the full arrays and the float64 brute force of ``lce_common``. With
``vocab_sorting`` each shard sorts its own classes: checked against the plain
call and against ``lce_sorting_model``'s per-shard filtered tile grid.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

import lce_common as C
import lce_sorting_model as M
from diversity_jax.kernels import linear_cross_entropy

MODEL = 4


def _mesh(data=1):
  devices = jax.devices()
  if len(devices) < data * MODEL:
    pytest.skip("needs 8 (host) devices; tests/conftest.py forces them")
  return Mesh(np.array(devices[:data * MODEL]).reshape(data, MODEL),
              ("data", "model"))


@functools.partial(jax.jit, static_argnames=("kw", "data"))
def _vp_evaluate(x, w, labels, bias, class_weights, ct_loss, ct_lse, kw,
                 data=1):
  """(loss, lse, dx, dw, db) of the vocab-parallel call, VJP outside the map."""
  mesh = _mesh(data)
  rows = P("data") if data > 1 else P()
  out = rows if dict(kw).get("reduction") == "none" else P()

  def body(x, w, bias, cw, labels):
    return linear_cross_entropy(x, w, labels, bias=bias, class_weights=cw,
                                return_lse=True, vocab_axis_name="model",
                                **dict(kw))

  vocab = lambda a: None if a is None else P("model")
  f = jax.shard_map(
      body, mesh=mesh,
      in_specs=(rows, P("model"), vocab(bias), vocab(class_weights), rows),
      out_specs=(out, rows))
  (loss, lse), vjp = jax.vjp(lambda x, w, b: f(x, w, b, class_weights, labels),
                             x, w, bias)
  return (loss, lse) + tuple(vjp((ct_loss, ct_lse)))


def vp_evaluate(x, w, labels, *, bias=None, class_weights=None, data=1, **kw):
  ct = C.cotangents(labels, kw.get("reduction", "mean"))
  return _vp_evaluate(x, w, labels, bias, class_weights, *ct,
                      tuple(sorted(kw.items())), data)


CASES = {
    # name: (N, D, V, dtype, uses bias, uses class weights, options)
    "plain_mean": (12, 5, 32, jnp.float32, False, False, {}),
    "ragged_smoothing_class_weights": (
        12, 5, 28, jnp.float32, False, True,
        dict(label_smoothing=0.2, block_vocab=4, block_tokens=8)),
    "softcap_bias_zloss_sum": (
        12, 5, 32, jnp.float32, True, False,
        dict(softcap=3.0, log_partition_penalty=1e-2, reduction="sum",
             block_vocab=3)),
    "none_ignored_cw_smoothing_bias": (
        10, 4, 20, jnp.float32, True, True,
        dict(reduction="none", label_smoothing=0.1, block_vocab=2)),
    "bf16_ragged_bias_softcap": (
        16, 8, 36, jnp.bfloat16, True, False,
        dict(softcap=4.0, block_vocab=4, block_tokens=8)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_plain_call_and_brute_force(name):
  n, d, v, dtype, use_b, use_cw, kw = CASES[name]
  x, w, y, b, cw = C.make_inputs(n, d, v, seed=len(name), dtype=dtype)
  b = b if use_b else None
  cw = cw if use_cw else None
  got = vp_evaluate(x, w, y, bias=b, class_weights=cw, **kw)
  plain = C.evaluate(x, w, y, bias=b, class_weights=cw, **kw)
  brute = C.numpy_evaluate(x, w, y, bias=b, class_weights=cw, **kw)
  if dtype == jnp.float32:
    C.assert_tree_close(got, plain, rtol=2e-5, atol=2e-5)
    C.assert_tree_close(got, brute, rtol=2e-5, atol=2e-5)
  else:   # both bf16 paths round the same tiles; vs float64: sqrt(D) scaling
    C.assert_tree_close(got, plain, rtol=2e-2, atol=2e-2)
    tol = C.bf16_tolerance(max(d, n), 4.0)
    C.assert_tree_close(got, brute, rtol=tol, atol=tol)
  for g, e in zip(got[2:], plain[2:]):
    if e is not None:
      assert g.dtype == e.dtype


def test_all_ignored_gives_zero_not_nan():
  x, w, _, b, cw = C.make_inputs(8, 4, 16, seed=3)
  y = jnp.full((8,), C.IGNORE, jnp.int32)
  got = vp_evaluate(x, w, y, bias=b, class_weights=cw, block_vocab=2)
  want = C.numpy_evaluate(x, w, y, bias=b, class_weights=cw)
  assert float(got[0]) == 0.0
  C.assert_tree_close(got, want, rtol=2e-5, atol=2e-5)


def test_data_and_model_axes():
  """x / labels split over 'data' (2), w over 'model' (4): per-row outputs."""
  x, w, y, b, _ = C.make_inputs(16, 4, 24, seed=7)
  got = vp_evaluate(x, w, y, bias=b, data=2, reduction="none", block_vocab=4,
                    block_tokens=4)
  want = C.numpy_evaluate(x, w, y, bias=b, reduction="none")
  C.assert_tree_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["softcap_bias_zloss_sum",
                                  "none_ignored_cw_smoothing_bias",
                                  "bf16_ragged_bias_softcap"])
def test_vocab_sorting_matches_plain_call(name):
  """``vocab_sorting=True`` with a filter that drops nothing (eps = 1e-30;
  bf16 'auto'): each shard's sorted backward equals the plain call."""
  n, d, v, dtype, use_b, use_cw, kw = CASES[name]
  x, w, y, b, cw = C.make_inputs(n, d, v, seed=len(name), dtype=dtype)
  b = b if use_b else None
  cw = cw if use_cw else None
  eps = 1e-30 if dtype == jnp.float32 else "auto"
  got = vp_evaluate(x, w, y, bias=b, class_weights=cw, vocab_sorting=True,
                    filter_eps=eps, **kw)
  plain = C.evaluate(x, w, y, bias=b, class_weights=cw, filter_eps=eps, **kw)
  tol = 2e-5 if dtype == jnp.float32 else 2e-2
  C.assert_tree_close(got, plain, rtol=tol, atol=tol)


def test_vocab_sorting_per_shard_filtered_grid():
  """With a real filter (eps = 1e-3) on a peaked problem, the gradient equals
  the numpy model whose shard ``r`` visits its own classes in ``argsort`` of
  their logit average; a global order or no sorting gives another gradient,
  so the test sees which grid ran."""
  v, bt, bv, eps = 128, 16, 8, 1e-3     # 32 classes and 4 blocks per shard
  x, w, y = M.peaked(v=v)
  got = vp_evaluate(x, w, y, reduction="sum", filter_eps=eps,
                    vocab_sorting=True, block_tokens=bt, block_vocab=bv)
  la = M.logit_average(x, w, y)
  vl = v // MODEL
  per_shard = [np.argsort(la[r * vl:(r + 1) * vl], kind="stable")
               for r in range(MODEL)]
  model = lambda orders: M.filtered_gradients(
      x, w, y, eps=eps, bt=bt, bv=bv, orders=orders, clamp=True)
  want_dx, want_dw, skipped = model(per_shard)
  assert skipped > 0
  np.testing.assert_allclose(got[2], want_dx, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(got[3], want_dw, rtol=2e-5, atol=2e-5)
  natural_dw = model([np.arange(vl)] * MODEL)[1]
  assert np.abs(natural_dw - want_dw).max() > 1e-4
  unsorted = vp_evaluate(x, w, y, reduction="sum", filter_eps=eps,
                         block_tokens=bt, block_vocab=bv)
  np.testing.assert_allclose(unsorted[3], natural_dw, rtol=2e-5, atol=2e-5)


def test_docstring_example_single_shard():
  x = jnp.ones((4, 8)); w = jnp.zeros((16, 8)); y = jnp.arange(4)
  mesh = Mesh(np.array(jax.devices()[:1]), ("model",))
  f = jax.shard_map(
      lambda x, w, y: linear_cross_entropy(x, w, y, vocab_axis_name="model"),
      mesh=mesh, in_specs=(P(), P("model"), P()), out_specs=P())
  np.testing.assert_allclose(jax.jit(f)(x, w, y), np.log(16.0), rtol=1e-6)


def _good():
  return jnp.ones((4, 3)), jnp.ones((8, 3)), jnp.array([0, 5, 7, -100])


@pytest.mark.parametrize("kw, match, error", [
    (dict(vocab_axis_name="model"), "`vocab_axis_name`='model' is not a bound "
     "axis name", ValueError),
    (dict(vocab_axis_name="model", implementation="reference"),
     "`vocab_axis_name` is supported by implementation='xla_chunked'",
     ValueError),
    (dict(vocab_axis_name="model", fused_backward=True),
     "`vocab_axis_name` does not support fused_backward", NotImplementedError),
    (dict(vocab_axis_name=("model",)), "`vocab_axis_name` must be a mesh axis",
     TypeError),
])
def test_bad_usage_outside_shard_map(kw, match, error):
  x, w, y = _good()
  with pytest.raises(error, match="linear_cross_entropy: " + match):
    jax.jit(lambda x, w, y: linear_cross_entropy(x, w, y, **kw))(x, w, y)


@pytest.mark.parametrize("kw, match", [
    (dict(bias=jnp.ones((8,))), r"`bias` must have shape \(2,\)"),
    (dict(ignore_index=5), r"`ignore_index` must lie outside \[0, 8\)"),
    (dict(vocab_axis_name="data"), "`vocab_axis_name`='data' is not a bound"),
])
def test_bad_usage_inside_shard_map(kw, match):
  x, w, y = _good()
  mesh = Mesh(np.array(jax.devices()[:MODEL]), ("model",))
  kw = {"vocab_axis_name": "model", **kw}
  f = jax.shard_map(lambda x, w, y: linear_cross_entropy(x, w, y, **kw),
                    mesh=mesh, in_specs=(P(), P("model"), P()), out_specs=P())
  with pytest.raises(ValueError, match="linear_cross_entropy: " + match):
    jax.jit(f)(x, w, y)


@pytest.mark.parametrize("w_spec, check_vma", [(P(), True), (P("model"), False)],
                         ids=["w_replicated", "check_vma_false"])
def test_w_must_be_a_varying_shard(w_spec, check_vma):
  """A replicated w, or check_vma=False (whose transpose rescales the
  cotangents behind the explicit collectives), is refused."""
  x, w, y = _good()
  mesh = Mesh(np.array(jax.devices()[:MODEL]), ("model",))
  f = jax.shard_map(
      lambda x, w, y: linear_cross_entropy(x, w, y, vocab_axis_name="model"),
      mesh=mesh, in_specs=(P(), w_spec, P()), out_specs=P(),
      check_vma=check_vma)
  with pytest.raises(ValueError, match="`w` must vary over `vocab_axis_name`"):
    jax.jit(f)(x, w, y)


def test_nan_input_and_out_of_range_labels():
  # lce_contract's behaviour for the vocab-parallel path: a global label
  # outside [0, V) is held by no shard and must still give NaN.
  x, w, y, bias, _, x_c, y_c = C.bad_inputs(10, 4, 20, seed=13)
  kw = dict(reduction="none", block_vocab=2)
  got = vp_evaluate(x, w, y, bias=bias, **kw)
  C.assert_bad_rows(got, C.numpy_evaluate(x_c, w, y_c, bias=bias, **kw),
                    rtol=2e-5, atol=2e-5)
