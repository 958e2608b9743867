"""Contract every ``linear_cross_entropy`` implementation must satisfy.

Subclasses set ``IMPL``, ``OPTIONS`` (block sizes, ``interpret``) and
``CASES``; each test compares against ``lce_common.numpy_evaluate``, a
float64 brute force on materialized logits (itself checked against PyTorch
golden values in ``test_lce_reference.py``, like ``implementation='reference'``)
on the same inputs, loss, lse and the VJP for x, w
and bias with random cotangents, all under ``jax.jit``. Shapes are ragged (N,
V, D multiples of no block size).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lce_common as C

N, D, V = 37, 19, 53          # ragged against every block size used below

FEATURES = {
    "plain": {},
    "bias": {"bias": True},
    "smoothing": {"label_smoothing": 0.15},
    "penalty": {"log_partition_penalty": 1e-2},
    "softcap": {"softcap": 2.5},
    "class_weights": {"class_weights": True},
    "all": {"bias": True, "label_smoothing": 0.1, "log_partition_penalty": 1e-3,
            "softcap": 4.0, "class_weights": True},
}
# Every feature alone with one reduction, each reduction with every feature
# combined (the "all" rows).
ALL_CASES = [("plain", "mean"), ("bias", "sum"), ("smoothing", "none"),
             ("penalty", "mean"), ("softcap", "none"), ("class_weights", "mean"),
             ("class_weights", "none"), ("all", "mean"), ("all", "sum"),
             ("all", "none")]


def _kwargs(feature, inputs):
  _, _, _, bias, cw = inputs
  kw = dict(FEATURES[feature])
  out = {"bias": bias if kw.pop("bias", False) else None,
         "class_weights": cw if kw.pop("class_weights", False) else None}
  out.update(kw)
  return out


class LceContract:
  IMPL = None
  OPTIONS = {}
  CASES = ALL_CASES
  F32_TOL = 2e-5

  def run(self, x, w, y, impl=None, **kw):
    opts = {} if impl == "reference" else dict(self.OPTIONS)
    opts.update(kw)
    return C.evaluate(x, w, y, implementation=impl or self.IMPL, **opts)

  def expected(self, x, w, y, **kw):
    """The float64 brute force of what ``run`` computes."""
    return C.numpy_evaluate(x, w, y, **kw)

  def compare(self, x, w, y, rtol=None, atol=None, **kw):
    got = self.run(x, w, y, **kw)
    want = self.expected(x, w, y, **kw)
    tol = self.F32_TOL if atol is None else atol
    C.assert_tree_close(got, want, rtol=rtol or tol, atol=tol)
    return got, want

  def test_matches_reference_f32(self, case):
    feature, reduction = case
    inputs = C.make_inputs(N, D, V, seed=len(feature))
    x, w, y = inputs[:3]
    self.compare(x, w, y, reduction=reduction, **_kwargs(feature, inputs))

  def test_bf16_scaled_tolerance(self):
    inputs = C.make_inputs(N, D, V, seed=3, dtype=jnp.bfloat16)
    x, w, y = inputs[:3]
    kw = dict(_kwargs("all", inputs), reduction="sum")
    got = self.run(x, w, y, **kw)
    want = self.expected(x, w, y, **kw)   # float64 on the bf16 values
    assert got[2].dtype == jnp.bfloat16 and got[3].dtype == jnp.bfloat16
    assert got[0].dtype == jnp.float32 and got[1].dtype == jnp.float32
    # loss: sum over N rows of length-D dots; dX: length-V sums; dW: length-N.
    lengths = (N * D, D, V, N, N)
    for name, g, e, k in zip(("loss", "lse", "dx", "dw", "db"), got, want,
                             lengths):
      e = np.asarray(e, np.float32)
      g = np.asarray(g, np.float32)
      assert np.all(np.isfinite(g)), name
      tol = C.bf16_tolerance(k, max(1.0, float(np.max(np.abs(e)))) / 8)
      # + one bf16 ulp of each output (the final rounding may differ).
      np.testing.assert_allclose(g, e, atol=tol, rtol=2.0 ** -7, err_msg=name)

  def test_extreme_logits_finite(self):
    # |z| ~ 1e4 (scale the embeddings): lse, loss and gradients stay finite.
    inputs = C.make_inputs(N, D, V, seed=4, scale=3e3)
    x, w, y = inputs[:3]
    z = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    assert np.abs(z).max() > 5e3
    got, _ = self.compare(x, w, y, rtol=1e-5, atol=1e-2, reduction="mean",
                          log_partition_penalty=1e-4)
    for g in got:
      if g is not None:
        assert np.all(np.isfinite(np.asarray(g, np.float32)))

  def test_all_labels_ignored(self):
    x, w, _, bias, _ = C.make_inputs(N, D, V, seed=5)
    y = jnp.full((N,), C.IGNORE, jnp.int32)
    loss, lse, dx, dw, db = self.run(x, w, y, bias=bias, reduction="mean",
                                     lse_cotangent=False)
    assert float(loss) == 0.0
    for g in (dx, dw, db):
      np.testing.assert_array_equal(np.asarray(g), 0.0)
    assert np.all(np.isfinite(np.asarray(lse)))

  def test_batch_2d(self):
    inputs = C.make_inputs(6 * 5, D, V, seed=6, batch=(6, 5))
    x, w, y = inputs[:3]
    got, _ = self.compare(x, w, y, reduction="none", softcap=3.0)
    assert got[0].shape == (6, 5) and got[1].shape == (6, 5)
    assert got[2].shape == x.shape

  def test_filter(self):
    inputs = C.make_inputs(N, D, V, seed=7)
    x, w, y = inputs[:3]
    # A filter bound of 2 drops every tile (|p - onehot| <= 1): zero gradient,
    # which proves the filter is wired; 'auto' stays within tolerance. (The
    # unfiltered path runs in every label-smoothing case.)
    _, _, dx, dw, _ = self.run(x, w, y, filter_eps=2.0, lse_cotangent=False)
    np.testing.assert_array_equal(np.asarray(dx), 0.0)
    np.testing.assert_array_equal(np.asarray(dw), 0.0)
    self.compare(x, w, y, filter_eps="auto")

  def test_nan_input_and_out_of_range_labels(self):
    # Under jit: a NaN in x or a label outside [0, V) (other than
    # ignore_index) gives NaN in that row's loss and dX row and in dW / db;
    # the other rows match the brute force of the clean rows.
    x, w, y, bias, _, x_c, y_c = C.bad_inputs(10, 4, 20, seed=13)
    kw = dict(bias=bias, reduction="none")
    got = self.run(x, w, y, **kw)
    C.assert_bad_rows(got, self.expected(x_c, w, y_c, **kw),
                      rtol=self.F32_TOL, atol=self.F32_TOL)
    # A filter bound of 2 skips every tile without a NaN coefficient: the
    # NaN still reaches dX and every block of dW / db; the mean is NaN.
    loss, _, dx, dw, db = self.run(x, w, y, bias=bias, filter_eps=2.0,
                                   lse_cotangent=False)
    assert np.isnan(loss)
    assert np.all(np.isnan(np.asarray(dx)[list(C.BAD_ROWS)]))
    assert np.all(np.isnan(np.asarray(dw))) and np.all(np.isnan(db))

