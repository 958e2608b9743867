"""QuaDMix sampling values and sampling: brute-force numpy and statistics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax.selection import quadmix_sample
from diversity_jax.selection import quadmix_sampling_values


def _numpy_quadmix(quality, domains, alpha, lam, omega, eta, eps, tokens,
                   kept, normalize=True):
  """Eqs. (1)-(3) of the paper with O(n^2) loops over the kept items."""
  n, num_criteria = quality.shape
  q = quality.astype(np.float64).copy()
  if normalize:
    for c in range(num_criteria):
      col = quality[:, c]
      total = tokens[kept].sum()
      q[:, c] = [tokens[kept & (col <= col[i])].sum() / total
                 for i in range(n)]
  merged = np.array([q[i] @ alpha[domains[i]] for i in range(n)])
  out = np.zeros(n)
  for i in range(n):
    if not kept[i]:
      continue
    m = domains[i]
    same = kept & (domains == m)
    r = tokens[same & (merged <= merged[i])].sum() / tokens[same].sum()
    s = eps[m]
    if r <= omega[m]:
      s += (2.0 / (1.0 + np.exp(-lam[m] * (omega[m] - r)))) ** eta[m]
    out[i] = s
  return out


def _problem(seed, n=23, num_criteria=3, m=4):
  rng = np.random.RandomState(seed)
  quality = rng.randn(n, num_criteria)
  quality[3] = quality[5]  # ties
  domains = rng.randint(m, size=n)
  alpha = rng.rand(m, num_criteria)
  alpha /= alpha.sum(1, keepdims=True)
  lam = 10.0 ** (3 * rng.rand(m))  # Algorithm 1 ranges
  omega = 0.2 + 0.6 * rng.rand(m)
  eta = rng.rand(m)
  eps = rng.rand(m) / 1000
  tokens = rng.randint(1, 50, size=n).astype(np.float64)
  kept = rng.rand(n) > 0.2
  return quality, domains, alpha, lam, omega, eta, eps, tokens, kept


def _run(quality, domains, alpha, lam, omega, eta, eps, tokens, kept,
         normalize=True):
  f = jax.jit(lambda *a: quadmix_sampling_values(
      a[0], a[1], merge_weights=a[2], steepness=a[3], threshold=a[4],
      exponent=a[5], floor=a[6], num_tokens=a[7], where=a[8],
      normalize=normalize))
  args = [jnp.asarray(a, jnp.float32) for a in
          (quality, alpha, lam, omega, eta, eps, tokens)]
  return np.asarray(f(args[0], jnp.asarray(domains, jnp.int32), *args[1:],
                      jnp.asarray(kept)))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("normalize", [True, False])
def test_matches_numpy_brute_force(seed, normalize):
  prob = _problem(seed)
  got = _run(*prob, normalize=normalize)
  want = _numpy_quadmix(*prob, normalize=normalize)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  assert np.all(got[~prob[-1]] == 0.0)


def test_paper_shape_of_the_sampling_function():
  # One domain, distinct qualities: the best item gets the most copies,
  # items past the threshold get exactly the floor.
  n = 10
  quality = np.arange(n, dtype=np.float64)[:, None]
  out = _run(quality, np.zeros(n, int), np.ones((1, 1)), np.array([50.]),
             np.array([0.45]), np.array([0.7]), np.array([0.002]),
             np.ones(n), np.ones(n, bool))
  assert np.all(np.diff(out) <= 0)
  np.testing.assert_allclose(out[5:], 0.002, rtol=1e-6)  # ranks 0.6 .. 1
  np.testing.assert_allclose(out[0], (2 / (1 + np.exp(-50 * 0.35))) ** 0.7
                             + 0.002, rtol=1e-6)


def test_nan_and_out_of_range_domains():
  prob = list(_problem(2))
  quality = prob[0].copy()
  quality[0, 1] = np.nan
  kept = prob[-1].copy()
  kept[0] = True
  prob[-1] = kept
  out = _run(quality, *prob[1:])
  assert np.all(np.isnan(out[kept])) and np.all(out[~kept] == 0.0)
  kept[0] = False  # a NaN in a dropped item changes nothing
  np.testing.assert_allclose(_run(quality, *prob[1:]), _run(*prob),
                             rtol=1e-6)
  # Traced out-of-range domain: NaN for that item only.
  f = jax.jit(lambda d: quadmix_sampling_values(
      jnp.ones((3, 1)), d, merge_weights=jnp.ones((2, 1)),
      steepness=jnp.ones(2), threshold=jnp.ones(2), exponent=jnp.ones(2),
      floor=jnp.zeros(2)))
  out = np.asarray(f(jnp.array([0, 5, 1])))
  assert np.isnan(out[1]) and np.all(np.isfinite(out[[0, 2]]))


def test_errors():
  kw = dict(merge_weights=jnp.ones((2, 1)), steepness=jnp.ones(2),
            threshold=jnp.ones(2), exponent=jnp.ones(2), floor=jnp.zeros(2))
  with pytest.raises(ValueError, match="`domains` must lie in"):
    quadmix_sampling_values(jnp.ones((3, 1)), jnp.array([0, 2, 1]), **kw)
  with pytest.raises(ValueError, match="`merge_weights` must have shape"):
    quadmix_sampling_values(jnp.ones((3, 2)), jnp.array([0, 1, 1]), **kw)
  with pytest.raises(ValueError, match="`threshold` must have shape"):
    quadmix_sampling_values(jnp.ones((3, 1)), jnp.array([0, 1, 1]),
                            **{**kw, "threshold": jnp.ones(3)})
  with pytest.raises(TypeError, match="`domains` must have an integer"):
    quadmix_sampling_values(jnp.ones((3, 1)), jnp.ones(3), **kw)
  with pytest.raises(TypeError, match="`k` must be a static"):
    jax.jit(lambda k: quadmix_sample(jax.random.key(0), jnp.ones(3), k))(2)


def test_sample_counts_have_the_expected_values():
  s = jnp.array([0.0, 0.3, 1.0, 2.5, 0.9])
  draw = jax.jit(jax.vmap(lambda key: quadmix_sample(key, s, 16)))
  idx = np.asarray(draw(jax.random.split(jax.random.key(0), 4000)))
  assert idx.shape == (4000, 16) and idx.dtype == np.int32
  counts = np.stack([(idx == i).sum(1) for i in range(5)], 1)
  # Per draw: floor(S) or floor(S) + 1 copies; on average S (quota unused).
  assert np.all(counts >= np.floor(np.asarray(s)))
  assert np.all(counts <= np.floor(np.asarray(s)) + 1)
  np.testing.assert_allclose(counts.mean(0), np.asarray(s), atol=0.03)
  assert np.all((idx == -1).sum(1) == 16 - counts.sum(1))


def test_sample_quota_and_invalid_values():
  s = jnp.full((6,), 2.0)
  idx = np.asarray(jax.jit(quadmix_sample, static_argnums=2)(
      jax.random.key(1), s, 5))
  assert np.all(idx >= 0) and len(idx) == 5  # quota full: 12 copies > 5
  _, counts = np.unique(idx, return_counts=True)
  assert counts.max() <= 2
  for bad in (jnp.nan, -1.0):
    out = quadmix_sample(jax.random.key(0), s.at[2].set(bad), 4)
    np.testing.assert_array_equal(np.asarray(out), -1)
  assert quadmix_sample(jax.random.key(0), jnp.zeros((0,)), 3).tolist() == [
      -1, -1, -1]
