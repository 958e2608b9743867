"""The references themselves: ``implementation='reference'`` and the float64
numpy brute force of ``lce_common`` against PyTorch golden values
(``tests/golden/make_linear_cross_entropy.py``), and against each other."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lce_common as C
from diversity_jax.kernels import linear_cross_entropy

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden",
                      "linear_cross_entropy.npz")
CASES = {
    "plain_mean": dict(reduction="mean"),
    "bias_sum": dict(reduction="sum", bias=True),
    "smooth_weights_mean": dict(reduction="mean", label_smoothing=0.2,
                                class_weights=True),
    "smooth_weights_none": dict(reduction="none", label_smoothing=0.1,
                                class_weights=True, bias=True),
    "softcap_zloss_mean": dict(reduction="mean", softcap=2.0,
                               log_partition_penalty=1e-2, bias=True),
    "all_sum": dict(reduction="sum", softcap=3.0, log_partition_penalty=1e-3,
                    label_smoothing=0.1, class_weights=True, bias=True),
}


@pytest.fixture(scope="module")
def golden():
  return dict(np.load(GOLDEN))


def _kw(g, case):
  kw = dict(CASES[case])
  kw["bias"] = jnp.asarray(g["b"], jnp.float32) if kw.pop("bias", False) else None
  kw["class_weights"] = (jnp.asarray(g["k"], jnp.float32)
                         if kw.pop("class_weights", False) else None)
  return kw


@pytest.mark.parametrize("case, impl", [(c, "reference") for c in sorted(CASES)]
                         + [("all_sum", "xla_chunked"),
                            ("smooth_weights_none", "xla_chunked")])
def test_matches_torch_golden(golden, case, impl):
  g = golden
  x, w = jnp.asarray(g["x"], jnp.float32), jnp.asarray(g["w"], jnp.float32)
  y = jnp.asarray(g["y"], jnp.int32)
  kw = _kw(g, case)
  bias = kw.pop("bias")
  reduction = kw["reduction"]

  @jax.jit
  def value_and_grads(x, w, bias):
    def scalar(x, w, bias):
      loss = linear_cross_entropy(x, w, y, bias=bias, implementation=impl,
                                  block_tokens=4, block_vocab=8, **kw)
      if reduction == "none":
        return jnp.sum(loss * jnp.arange(1, y.shape[0] + 1)), loss
      return loss, loss
    return jax.value_and_grad(scalar, (0, 1, 2), has_aux=True)(x, w, bias)

  (_, loss), (dx, dw, db) = value_and_grads(x, w, bias)
  tol = dict(rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss, g[f"{case}/loss"], **tol)
  np.testing.assert_allclose(dx, g[f"{case}/dx"], **tol)
  np.testing.assert_allclose(dw, g[f"{case}/dw"], **tol)
  if bias is not None:
    np.testing.assert_allclose(db, g[f"{case}/db"], **tol)


@pytest.mark.parametrize("case", sorted(CASES))
def test_numpy_brute_force_matches_torch_golden(golden, case):
  """The float64 formula the contract tests use, checked once against torch."""
  g = golden
  kw = _kw(g, case)
  n = len(g["y"])
  ct_loss = np.arange(1.0, n + 1) if kw["reduction"] == "none" else 1.0
  loss, _, dx, dw, db = C.numpy_evaluate(
      g["x"], g["w"], g["y"], cotangent=(ct_loss, np.zeros(n)), **kw)
  tol = dict(rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(loss, g[f"{case}/loss"], **tol)
  np.testing.assert_allclose(dx, g[f"{case}/dx"], **tol)
  np.testing.assert_allclose(dw, g[f"{case}/dw"], **tol)
  if db is not None:
    np.testing.assert_allclose(db, g[f"{case}/db"], **tol)


def test_reference_forward_matches_numpy_extreme_logits():
  inputs = C.make_inputs(9, 5, 11, seed=2, scale=3e3)
  x, w, y, b, cw = inputs
  kw = dict(bias=b, class_weights=cw, label_smoothing=0.1,
            log_partition_penalty=1e-4)
  loss, lse = jax.jit(lambda x, w: linear_cross_entropy(
      x, w, y, implementation="reference", return_lse=True, reduction="none",
      **kw))(x, w)
  want_loss, want_lse = C.numpy_loss(x, w, y, reduction="none", **kw)
  assert np.abs(want_lse).max() > 1e3
  np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-2)
  np.testing.assert_allclose(lse, want_lse, rtol=1e-6, atol=1e-2)


def test_reference_nan_input_and_out_of_range_labels():
  # The behaviour of lce_contract's test of the same name, for the
  # materialized path (plain autodiff, no filter): a (2, 5) batch.
  x, w, y, bias, _, x_c, y_c = C.bad_inputs(10, 4, 20, seed=13, batch=(2, 5))
  kw = dict(bias=bias, reduction="none")
  got = C.evaluate(x, w, y, implementation="reference", **kw)
  C.assert_bad_rows(got, C.numpy_evaluate(x_c, w, y_c, **kw), rtol=2e-5,
                    atol=2e-5)
  assert np.isnan(C.evaluate(x, w, y, implementation="reference")[0])
