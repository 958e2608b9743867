"""Vendi at scale (RFF, Nystrom), quality-weighted Vendi, RKE mode count.

References: golden values from `vendi-score` / `rke-score`
(tests/golden/make_vendi_kin.py), the exact float64 Vendi score on 2000
items (same file), and the exact `vendi_score` on small inputs.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax.diversity import quality_weighted_vendi_score
from diversity_jax.diversity import relative_rke
from diversity_jax.diversity import rke_mode_count
from diversity_jax.diversity import vendi_score
from diversity_jax.diversity import vendi_score_nystrom
from diversity_jax.diversity import vendi_score_rff

_GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "..", "golden",
                               "vendi_kin.npz"))
_ORDERS = [0.5, 1.0, 2.0, "inf"]


def _key(q):
  return "inf" if q == "inf" else str(float(q)).replace(".", "p")


def _rbf(x, sigma):
  x = np.asarray(x, np.float64)
  sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  return np.exp(-sq / (2 * sigma ** 2))


def _mixture_2000():
  rng = np.random.RandomState(0)
  centers = 3.0 * rng.randn(10, 8)
  return centers[rng.randint(10, size=2000)] + 0.5 * rng.randn(2000, 8)


def test_golden_quality_weighted_vendi():
  kernel = jnp.asarray(_GOLDEN["qvs_kernel"], jnp.float32)
  quality = jnp.asarray(_GOLDEN["qvs_quality"], jnp.float32)
  p = jnp.asarray(_GOLDEN["qvs_p"], jnp.float32)
  run = jax.jit(lambda k, s, w: jnp.stack(
      [quality_weighted_vendi_score(k, s, q=q) for q in _ORDERS]
      + [quality_weighted_vendi_score(k, s, q=q, weights=w)
         for q in _ORDERS]))
  got = np.asarray(run(kernel, quality, p))
  want = ([_GOLDEN[f"qvs_q{_key(q)}"] for q in _ORDERS]
          + [_GOLDEN[f"qvs_p_q{_key(q)}"] for q in _ORDERS])
  np.testing.assert_allclose(got, want, rtol=2e-5)
  readme = jax.jit(quality_weighted_vendi_score)(
      jnp.asarray(_GOLDEN["qvs_readme_kernel"], jnp.float32),
      jnp.asarray(_GOLDEN["qvs_readme_quality"], jnp.float32))
  np.testing.assert_allclose(float(readme), 0.793705659274703, rtol=1e-5)


def test_quality_weighted_vendi_where_is_subset():
  kernel = jnp.asarray(_GOLDEN["qvs_kernel"], jnp.float32)
  quality = jnp.asarray(_GOLDEN["qvs_quality"], jnp.float32)
  keep = np.array([True, False, True, True, False, True, True, True])
  run = jax.jit(lambda k, s, m: quality_weighted_vendi_score(k, s, where=m))
  sub = run(kernel[keep][:, keep], quality[keep], None)
  np.testing.assert_allclose(float(run(kernel, quality, jnp.asarray(keep))),
                             float(sub), rtol=1e-5)
  # A NaN quality of a dropped item is ignored; of a kept item gives NaN.
  bad = quality.at[1].set(jnp.nan)
  np.testing.assert_allclose(float(run(kernel, bad, jnp.asarray(keep))),
                             float(sub), rtol=1e-5)
  assert np.isnan(float(run(kernel, bad, None)))
  with pytest.raises(ValueError, match="`quality` must have shape"):
    quality_weighted_vendi_score(kernel, quality[:3])


def test_golden_rke_mode_count():
  x = jnp.asarray(_GOLDEN["rke_x"], jnp.float32)
  for sigma in (0.5, 1.5):
    frob = _GOLDEN[f"rke_frob_sigma{str(sigma).replace('.', 'p')}"]
    for block in (5, 12, 1024):  # padded, exact and a single block
      got = jax.jit(lambda a: rke_mode_count(a, bandwidth=sigma,
                                             block_size=block))(x)
      np.testing.assert_allclose(float(got), 1.0 / frob, rtol=2e-5)


def test_rke_mode_count_is_order_two_vendi():
  rng = np.random.RandomState(1)
  x = rng.randn(9, 2)
  w = rng.rand(9) + 0.1
  keep = np.array([True] * 6 + [False] * 3)
  kern = jnp.asarray(_rbf(x, 0.8), jnp.float32)
  xf, wf = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
  got = jax.jit(lambda a, b, m: jnp.stack([
      rke_mode_count(a, bandwidth=0.8, weights=b, block_size=4),
      rke_mode_count(a, bandwidth=0.8, where=m)]))(xf, wf, jnp.asarray(keep))
  want = [vendi_score(kern, q=2, weights=wf),
          vendi_score(kern[keep][:, keep], q=2)]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5)


def test_nystrom_with_every_item_as_landmark_is_exact():
  rng = np.random.RandomState(2)
  x = rng.randn(12, 3)
  kern = jnp.asarray(_rbf(x, 1.2), jnp.float32)
  orders = [1.0, 2.0, "inf"]
  got = jax.jit(lambda a: jnp.stack([
      vendi_score_nystrom(a, jax.random.key(3), bandwidth=1.2, q=q,
                          num_landmarks=12, block_size=5)
      for q in orders]))(jnp.asarray(x, jnp.float32))
  want = [vendi_score(kern, q=q) for q in orders]
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=2e-3)


def test_rff_converges_to_exact_on_small_input():
  rng = np.random.RandomState(3)
  x = rng.randn(10, 3)
  exact = float(vendi_score(jnp.asarray(_rbf(x, 1.0), jnp.float32), q=2))
  run = jax.jit(lambda a, k: vendi_score_rff(a, k, bandwidth=1.0, q=2,
                                             num_features=8192))
  got = float(run(jnp.asarray(x, jnp.float32), jax.random.key(0)))
  assert abs(np.log(got) - np.log(exact)) < 0.03, (got, exact)


def test_approximations_where_weights_and_blocks():
  rng = np.random.RandomState(4)
  x = jnp.asarray(rng.randn(11, 3), jnp.float32)
  keep = jnp.asarray(rng.rand(11) > 0.4)
  every, nothing = jnp.ones(11, bool), jnp.zeros(11, bool)
  key = jax.random.key(1)
  sub = x[np.asarray(keep)]
  for f, kw in ((vendi_score_rff, {"num_features": 16}),
                (vendi_score_nystrom, {"num_landmarks": 4})):
    g = lambda a, m, b=4: f(a, key, bandwidth=1.0, where=m, block_size=b,
                            **kw)
    out = np.asarray(jax.jit(lambda a: jnp.stack([
        g(a, keep), g(a.at[~np.asarray(keep)].set(jnp.nan), keep), g(a, keep, 64),
        g(a, nothing), g(a.at[0, 0].set(jnp.nan), every)]))(x))
    # Dropped rows (NaN there included) change nothing; block size neither.
    np.testing.assert_allclose(out[1:3], out[0], rtol=1e-5)
    assert out[3] == 0.0 and np.isnan(out[4]), out
  # RFF: the frequencies depend on the key and d only, so the masked score
  # is the score of the kept subset.
  both = jax.jit(lambda a, b: jnp.stack([
      vendi_score_rff(a, key, bandwidth=1.0, num_features=16, where=keep),
      vendi_score_rff(b, key, bandwidth=1.0, num_features=16)]))(x, sub)
  np.testing.assert_allclose(float(both[0]), float(both[1]), rtol=1e-5)


def _check_directional_derivative(f, x, rng, rtol, atol):
  """jacrev(f)(x) . v against central differences along a random v."""
  g = np.asarray(jax.jit(jax.jacrev(f))(x))
  v = jnp.asarray(rng.randn(*x.shape))
  fd = (np.asarray(f(x + 1e-5 * v)) - np.asarray(f(x - 1e-5 * v))) / 2e-5
  np.testing.assert_allclose(np.einsum("qij,ij->q", g, np.asarray(v)), fd,
                             rtol=rtol, atol=atol)


def test_rff_gradient_finite_differences():
  rng = np.random.RandomState(5)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.randn(6, 2), jnp.float64)
    f = jax.jit(lambda a: jnp.stack([
        vendi_score_rff(a, jax.random.key(2), bandwidth=1.0, q=q,
                        num_features=8) for q in (1.0, 2.0)]))
    _check_directional_derivative(f, x, rng, rtol=1e-4, atol=1e-6)


def test_error_against_exact_at_n2000_shrinks_with_features():
  """The documented bounds: mean |log VS_approx - log VS| over 3 keys on the
  2000-item mixture (exact VS_1 = 58.0, float64 golden): RFF below 1.3 at 16
  frequencies and 0.35 at 128; Nystrom below 1.6 at 32 landmarks and 0.45 at
  256; the larger map at least halves the error."""
  x = jnp.asarray(_mixture_2000(), jnp.float32)
  exact = float(_GOLDEN["mixture_vs_q1p0"])
  keys = jax.random.split(jax.random.key(0), 3)

  @jax.jit
  def scores(a, ks):
    one = lambda k: jnp.stack([
        vendi_score_rff(a, k, bandwidth=2.0, num_features=16),
        vendi_score_rff(a, k, bandwidth=2.0, num_features=128),
        vendi_score_nystrom(a, k, bandwidth=2.0, num_landmarks=32),
        vendi_score_nystrom(a, k, bandwidth=2.0, num_landmarks=256)])
    return jax.lax.map(one, ks)

  err = np.mean(np.abs(np.log(np.asarray(scores(x, keys))) - np.log(exact)),
                axis=0)
  rff_small, rff_big, nys_small, nys_big = err
  assert rff_small < 1.3 and rff_big < 0.35, err
  assert nys_small < 1.6 and nys_big < 0.45, err
  assert rff_big < rff_small / 2 and nys_big < nys_small / 2, err


def test_errors():
  x = jnp.ones((4, 2))
  key = jax.random.key(0)
  with pytest.raises(ValueError, match="vendi_score_rff: `bandwidth`"):
    vendi_score_rff(x, key, bandwidth=0.0)
  with pytest.raises(ValueError, match="`num_features` must be >= 1"):
    vendi_score_rff(x, key, bandwidth=1.0, num_features=0)
  with pytest.raises(TypeError, match="`num_features` must be an int"):
    vendi_score_rff(x, key, bandwidth=1.0, num_features=2.5)
  with pytest.raises(TypeError, match="`key` must be a PRNG key"):
    vendi_score_rff(x, jnp.ones(3), bandwidth=1.0)
  with pytest.raises(ValueError, match="`num_landmarks` must be >= 1 and <= 4"):
    vendi_score_nystrom(x, key, bandwidth=1.0, num_landmarks=5)
  with pytest.raises(ValueError, match="`block_size` must be >= 1"):
    vendi_score_nystrom(x, key, bandwidth=1.0, num_landmarks=2, block_size=0)
  with pytest.raises(ValueError, match="rke_mode_count: `features` must have"):
    rke_mode_count(jnp.ones(3), bandwidth=1.0)
  with pytest.raises(ValueError, match="`q` must be"):
    vendi_score_rff(x, key, bandwidth=1.0, q=-1)
  with pytest.raises(ValueError, match="`weights` must be non-negative"):
    rke_mode_count(x, bandwidth=1.0, weights=jnp.array([1., -1., 1., 1.]))
  out = jax.jit(lambda a: jnp.stack([
      vendi_score_rff(a, key, bandwidth=1.0), rke_mode_count(a, bandwidth=1.),
      vendi_score_nystrom(a, key, bandwidth=1.0, num_landmarks=1)]))
  # Empty batches give 0 (num_landmarks is checked against n only when n > 0).
  np.testing.assert_array_equal(np.asarray(out(jnp.zeros((0, 2)))), 0.0)


def test_rke_and_quality_weighted_gradients_finite_differences():
  rng = np.random.RandomState(6)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.randn(7, 2), jnp.float64)
    s = jnp.asarray(rng.rand(7), jnp.float64)

    def f(a):
      kern = jnp.exp(-jnp.sum((a[:, None] - a[None]) ** 2, -1) / 2.0)
      return jnp.stack([rke_mode_count(a, bandwidth=1.0, block_size=3),
                        quality_weighted_vendi_score(kern, s, q=1.5)])

    _check_directional_derivative(f, x, rng, rtol=1e-5, atol=1e-7)


def test_golden_relative_rke():
  x = jnp.asarray(_GOLDEN["rrke_x"], jnp.float32)
  y = jnp.asarray(_GOLDEN["rrke_y"], jnp.float32)
  for sigma in (0.7, 2.0):
    want = _GOLDEN[f"rrke_sigma{str(sigma).replace('.', 'p')}"]
    run = jax.jit(lambda a, b: jnp.stack([relative_rke(a, b, bandwidth=sigma),
                                          relative_rke(b, a, bandwidth=sigma)]))
    np.testing.assert_allclose(np.asarray(run(x, y)), want, rtol=1e-4)
  same = jax.jit(lambda a: relative_rke(a, a, bandwidth=0.7))(x)
  np.testing.assert_allclose(float(same), 0.0, atol=1e-5)
  assert np.isnan(float(relative_rke(x, y.at[0, 0].set(jnp.nan),
                                     bandwidth=1.0)))
  with pytest.raises(ValueError, match="`reference` must have 3 columns"):
    relative_rke(x, y[:, :2], bandwidth=1.0)


def test_rff_order_two_estimates_the_rke_mode_count():
  # rke_mode_count's documented large-n route: vendi_score_rff(q=2) (FKEA).
  x = jnp.asarray(_mixture_2000()[:100], jnp.float32)
  both = jax.jit(lambda a: jnp.stack([
      rke_mode_count(a, bandwidth=2.0),
      vendi_score_rff(a, jax.random.key(0), bandwidth=2.0, q=2,
                      num_features=2048)]))(x)
  exact, approx = np.asarray(both)
  assert abs(np.log(approx) - np.log(exact)) < 0.1, (exact, approx)


def test_exact_f32_keeps_the_spectrum_tail_at_n2000():
  """The exact f32 score on the 2000-item mixture's RBF kernel matches the
  float64 golden: the rank tolerance ``sqrt(n) eps max(lambda)`` keeps the
  small real eigenvalues (``n eps max(lambda)`` dropped 5% of VS_1 here) and
  still drops round-off (a rank-2 cosine kernel keeps its rank)."""
  kernel = jnp.asarray(_rbf(_mixture_2000(), 2.0), jnp.float32)
  run = jax.jit(lambda k: jnp.stack([vendi_score(k, q=1.0),
                                     vendi_score(k, q=2.0)]))
  got = np.asarray(run(kernel))
  np.testing.assert_allclose(got, [_GOLDEN["mixture_vs_q1p0"],
                                   _GOLDEN["mixture_vs_q2p0"]], rtol=2e-3)
  rng = np.random.RandomState(1)
  x = rng.randn(1000, 2)
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  low_rank = jnp.asarray(x @ x.T, jnp.float32)
  assert float(jax.jit(lambda k: vendi_score(k, q=0.0))(low_rank)) == 2.0
