"""Vendi score: golden values from `vendi-score`, exact cases, gradients."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax.diversity import vendi_score
from diversity_jax.diversity import vendi_score_dual
from diversity_jax.diversity import vendi_score_from_features

_GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "..", "golden",
                               "vendi_score.npz"))
_ORDERS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, "inf"]


def _key(q):
  return "inf" if q == "inf" else str(float(q)).replace(".", "p")


def _jit(fn, **kw):
  return jax.jit(lambda *a: fn(*a, **kw))


def _stacked(f, orders, **kw):
  """One jit computing f for every order (one compilation, not one per q)."""
  return jax.jit(lambda *a: jnp.stack([f(*a, q=q, **kw) for q in orders]))


def test_golden_vendi_score_package():
  kernel = jnp.asarray(_GOLDEN["kernel"], jnp.float32)
  p = jnp.asarray(_GOLDEN["p"], jnp.float32)
  x = jnp.asarray(_GOLDEN["x"], jnp.float32)
  got = {
      "kernel": _stacked(vendi_score, _ORDERS)(kernel),
      "kernel_p": jax.jit(lambda a, w: jnp.stack(
          [vendi_score(a, q=q, weights=w) for q in _ORDERS]))(kernel, p),
      "x": _stacked(vendi_score_from_features, _ORDERS)(x),
      "dual": _stacked(vendi_score_dual, _ORDERS)(x),
  }
  for name, values in got.items():
    for q, value in zip(_ORDERS, np.asarray(values)):
      if name == "x" and q == 0.0:
        assert value == 4.0  # exact rank (the reference counts round-off)
        continue
      np.testing.assert_allclose(value, _GOLDEN[f"{name}_q{_key(q)}"],
                                 rtol=2e-5, err_msg=f"{name} q={q}")


def test_golden_normalize():
  scaled = jnp.asarray(_GOLDEN["scaled_kernel"], jnp.float32)
  got = _jit(vendi_score, normalize=True)(scaled)
  np.testing.assert_allclose(float(got), _GOLDEN["scaled_kernel_norm_q1p0"],
                             rtol=2e-5)


def test_reference_test_vectors():
  # Values quoted (verified-run) in the reference notes.
  k = jnp.array([[1., 1., 0.], [1., 1., 0.], [0., 0., 1.]])
  orders = [1, 2, "inf", 0.5, 0]
  expected = [1.8898815748423097, 1.8, 1.5, 1.9428090415820634, 2.0]
  np.testing.assert_allclose(np.asarray(_stacked(vendi_score, orders)(k)),
                             expected, rtol=1e-5)
  w = jnp.array([0.5, 0.25, 0.25])
  np.testing.assert_allclose(
      float(jax.jit(lambda a, b: vendi_score(a, weights=b))(k, w)),
      1.7547653506033252, rtol=1e-5)
  x = jnp.asarray(np.random.RandomState(0).randn(10, 4), jnp.float32)
  np.testing.assert_allclose(float(_jit(vendi_score_dual, q=2)(x)),
                             2.7089402163790024, rtol=1e-5)
  # q is honoured for features (the reference score_X ignores it).
  assert abs(float(_jit(vendi_score_from_features, q=2)(x))
             - 2.7089402163790024) < 1e-4


def test_q0_is_numerical_rank_and_bounds():
  x = jnp.array([[1., 0., 0.], [1., 0., 0.], [0., 1., 0.], [0., 1., 0.]])
  for f in (vendi_score_from_features, vendi_score_dual):
    # rank 2; two equal clusters give 2 for every order.
    np.testing.assert_allclose(np.asarray(_stacked(f, _ORDERS)(x)), 2.0,
                               rtol=1e-5)
  both = _stacked(vendi_score, _ORDERS)
  np.testing.assert_allclose(np.asarray(both(jnp.eye(5))), 5.0, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(both(jnp.ones((5, 5)))), 1.0,
                             rtol=1e-5)


def test_where_equals_subset_and_empty_is_zero():
  rng = np.random.RandomState(1)
  x = jnp.asarray(rng.randn(7, 3), jnp.float32)
  mask = jnp.array([True, False, True, True, False, True, True])
  orders = [1.0, 2.0, "inf"]
  for f in (vendi_score_from_features, vendi_score_dual):
    fm = jax.jit(lambda a, m: jnp.stack([f(a, q=q, where=m) for q in orders]))
    sub = x[np.asarray(mask)]
    np.testing.assert_allclose(np.asarray(fm(x, mask)),
                               np.asarray(_stacked(f, orders)(sub)), rtol=1e-5)
    empty = jnp.zeros(7, bool)
    np.testing.assert_array_equal(np.asarray(fm(x, empty)), 0.0)
    g = jax.jit(jax.jacrev(lambda a: fm(a, empty)))(x)
    assert np.all(np.isfinite(np.asarray(g)))
  kern = x @ x.T
  kern = kern / jnp.sqrt(jnp.diag(kern)[:, None] * jnp.diag(kern)[None, :])
  fm = jax.jit(lambda a, m: vendi_score(a, q=1.5, where=m))
  sub = np.asarray(kern)[np.ix_(np.asarray(mask), np.asarray(mask))]
  np.testing.assert_allclose(float(fm(kern, mask)),
                             float(_jit(vendi_score, q=1.5)(jnp.asarray(sub))),
                             rtol=1e-5)


def _directional_fd(f, x, v, h):
  return (f(x + h * v) - f(x - h * v)) / (2 * h)


def test_gradient_finite_differences_features():
  """Random, duplicated-row and orthonormal (repeated-eigenvalue) features."""
  orders = [0.5, 1.0, 1.5, 2.0, 3.0]
  rng = np.random.RandomState(2)
  base = rng.randn(5, 3)
  cases = {
      "random": base,
      "duplicated": np.stack([base[0], base[0], base[1], base[1], base[2]]),
      "orthonormal": np.concatenate([np.eye(3), np.eye(3)[:2]]),
  }
  with jax.enable_x64(True):
    for f in (vendi_score_from_features, vendi_score_dual):
      fq = _stacked(f, orders)
      jac = jax.jit(jax.jacrev(fq))
      for name, xc in cases.items():
        x = jnp.asarray(xc, jnp.float64)
        g = np.asarray(jac(x))                       # (len(orders), 5, 3)
        assert np.all(np.isfinite(g)), (name, f.__name__)
        for seed in range(2):
          v = np.random.RandomState(seed).randn(*xc.shape)
          fd = np.asarray(_directional_fd(fq, x, jnp.asarray(v), 1e-5))
          np.testing.assert_allclose(np.einsum("qij,ij->q", g, v), fd,
                                     rtol=1e-4, atol=1e-5,
                                     err_msg=f"{name} {f.__name__}")


@pytest.mark.parametrize("q", [0.5, 1.0, 2.0])
def test_gradient_kernel_at_repeated_eigenvalues(q):
  """K = I (all eigenvalues equal): grad = c * I, matching FD along any D."""
  n = 4
  with jax.enable_x64(True):
    fq = jax.jit(lambda a: vendi_score(a, q=q))
    g = np.asarray(jax.jit(jax.grad(lambda a: vendi_score(a, q=q)))(
        jnp.eye(n, dtype=jnp.float64)))
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, g[0, 0] * np.eye(n), atol=1e-10)
    d = np.random.RandomState(3).randn(n, n)
    d = jnp.asarray(d + d.T)
    fd = float(_directional_fd(fq, jnp.eye(n, dtype=jnp.float64), d, 1e-5))
    np.testing.assert_allclose(float(np.sum(g * np.asarray(d))), fd,
                               rtol=1e-5, atol=1e-8)


def test_gradient_inf_order_is_basis_independent():
  g = np.asarray(jax.jit(jax.grad(lambda a: vendi_score(a, q="inf")))(
      jnp.eye(4)))
  np.testing.assert_allclose(g, g[0, 0] * np.eye(4), atol=1e-6)
  x = jnp.array([[1., 0.], [1., 0.], [0., 1.], [0., 1.]])
  g = jax.jit(jax.grad(lambda a: vendi_score_dual(a, q="inf")))(x)
  assert np.all(np.isfinite(np.asarray(g)))


def test_errors():
  k = jnp.eye(3)
  with pytest.raises(ValueError, match="vendi_score: `kernel` must be square"):
    vendi_score(jnp.ones((3, 4)))
  with pytest.raises(ValueError, match="`kernel` must have rank 2"):
    vendi_score(jnp.ones(3))
  with pytest.raises(TypeError, match="`kernel` must have a floating dtype"):
    vendi_score(jnp.eye(3, dtype=jnp.int32))
  for bad in (-1.0, "foo", float("nan")):
    with pytest.raises(ValueError, match="`q` must be"):
      vendi_score(k, q=bad)
  with pytest.raises(ValueError, match="`weights` must have shape"):
    vendi_score(k, weights=jnp.ones(2))
  with pytest.raises(ValueError, match="`weights` must be non-negative"):
    vendi_score(k, weights=jnp.array([1., -1., 1.]))
  with pytest.raises(TypeError, match="`where` must be a boolean"):
    vendi_score(k, where=jnp.ones(3))
  with pytest.raises(ValueError, match="vendi_score_dual: `features`"):
    vendi_score_dual(jnp.ones((2, 3, 1)))
  with pytest.raises(TypeError, match="`q` must be a static"):
    jax.jit(lambda q: vendi_score(k, q=q))(2.0)


def test_empty_batch_is_zero():
  out = jax.jit(lambda k, x: jnp.stack([
      vendi_score(k), vendi_score_from_features(x), vendi_score_dual(x)]))(
          jnp.zeros((0, 0)), jnp.zeros((0, 3)))
  np.testing.assert_array_equal(np.asarray(out), 0.0)


def test_vmap_over_batches_of_feature_sets():
  x = jnp.asarray(np.random.RandomState(4).randn(3, 5, 2), jnp.float32)
  batched = jax.jit(jax.vmap(lambda a: vendi_score_dual(a, q=2)))(x)
  single = [float(_jit(vendi_score_dual, q=2)(x[i])) for i in range(3)]
  np.testing.assert_allclose(np.asarray(batched), single, rtol=1e-5)


def test_constant_weights_under_jit():
  # Closed-over weights (numpy or jax) are concrete under jit: the
  # non-negativity check must not trace them (TracerBoolConversionError).
  kern = jnp.eye(4).at[0, 1].set(0.5).at[1, 0].set(0.5)
  w_np = np.array([1.0, 2.0, 1.0, 0.5], np.float32)
  want = float(jax.jit(lambda a, b: vendi_score(a, weights=b))(kern, w_np))
  for w in (w_np, jnp.asarray(w_np)):
    got = jax.jit(lambda a: vendi_score(a, weights=w))(kern)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
  with pytest.raises(ValueError, match="`weights` must be non-negative"):
    jax.jit(lambda a: vendi_score(a, weights=-w_np))(kern)


def test_nan_in_gives_nan_out_unless_dropped():
  x = jnp.asarray(np.random.RandomState(6).randn(5, 3), jnp.float32)
  x = x.at[1, 2].set(jnp.nan)
  kern = jnp.eye(5).at[1, 3].set(jnp.nan)
  keep = jnp.array([True, False, True, True, True])

  @jax.jit
  def run(x, kern, m):
    return jnp.stack([vendi_score(kern), vendi_score(kern, normalize=True),
                      vendi_score_from_features(x), vendi_score_dual(x),
                      vendi_score(kern, where=m),
                      vendi_score_from_features(x, where=m),
                      vendi_score_dual(x, where=m)])

  out = np.asarray(run(x, kern, keep))
  assert np.all(np.isnan(out[:4])), out
  # A dropped sample holding the NaN leaves the score (and its gradient).
  sub = np.asarray(keep)
  np.testing.assert_allclose(out[4], 4.0, rtol=1e-6)
  want = float(_jit(vendi_score_from_features)(x[sub]))
  np.testing.assert_allclose(out[5:], want, rtol=1e-5)
  g = jax.jit(jax.grad(lambda a: vendi_score_from_features(a, where=keep)))(x)
  assert np.all(np.isfinite(np.asarray(g)))


def _psd_projection_score(kernel, q):
  """numpy: Vendi score of order q of the symmetric part of ``kernel / n``
  with negative eigenvalues set to 0 and the rest rescaled to the trace."""
  k = np.asarray(kernel, np.float64)
  lam = np.linalg.eigvalsh(0.5 * (k + k.T)) / k.shape[0]
  pos = np.maximum(lam, 0.0)
  lam = pos * lam.sum() / pos.sum()
  lam = lam[lam > 1e-12]
  if q == 1:
    return np.exp(-np.sum(lam * np.log(lam)))
  return np.sum(lam ** q) ** (1.0 / (1.0 - q))


def test_non_symmetric_or_non_psd_kernel():
  asym = np.array([[1.0, 0.9, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
  indefinite = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
  assert np.linalg.eigvalsh(indefinite)[0] < -0.5
  # Concrete kernels (eager, or closed over under jit) are checked.
  with pytest.raises(ValueError, match="`kernel` must be symmetric"):
    vendi_score(jnp.asarray(asym, jnp.float32))
  closed = jnp.asarray(indefinite, jnp.float32)
  with pytest.raises(ValueError, match="`kernel` must be positive semi-def"):
    jax.jit(lambda: vendi_score(closed))()
  # Round-off asymmetry / negative eigenvalues of a valid kernel pass.
  x = np.random.RandomState(7).randn(6, 2)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  vendi_score(jnp.asarray(x @ x.T, jnp.float32))
  # Traced: the symmetric part, projected onto the PSD cone with its trace
  # kept, so the score stays in [1, n] (it used to drop to 0.38 / 0.54).
  for kern in (asym, indefinite):
    got = np.asarray(_stacked(vendi_score, [1.0, 2.0])(
        jnp.asarray(kern, jnp.float32)))
    want = [_psd_projection_score(kern, q) for q in (1.0, 2.0)]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all((got >= 1.0) & (got <= 3.0)), got
