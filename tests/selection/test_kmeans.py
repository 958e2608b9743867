"""k-means: same inertia as scikit-learn from the same initial centers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans

from diversity_jax import selection


def blobs(seed, n=300, d=5, k=4):
  rng = np.random.default_rng(seed)
  centers = rng.normal(scale=4.0, size=(k, d))
  x = centers[rng.integers(0, k, n)] + rng.normal(size=(n, d))
  return x.astype(np.float32)


@pytest.mark.parametrize("seed,block_size", [(0, 64), (1, 7), (2, 1000)])
def test_kmeans_inertia_matches_sklearn(seed, block_size):
  x = blobs(seed)
  k, steps = 4, 5
  init = selection.kmeans_plus_plus_init(jax.random.key(seed), x, k)
  f = jax.jit(selection.kmeans, static_argnames=("num_steps", "block_size"))
  out = f(x, init, num_steps=steps, block_size=block_size)
  ref = KMeans(n_clusters=k, init=np.asarray(init, np.float64), n_init=1,
               algorithm="lloyd", max_iter=steps, tol=0.0).fit(
                   x.astype(np.float64))
  np.testing.assert_allclose(float(out.inertia), ref.inertia_, rtol=1e-5)
  np.testing.assert_allclose(out.centers, ref.cluster_centers_, atol=1e-4)
  assert out.labels.tolist() == ref.labels_.tolist()


def test_kmeans_zero_steps_is_nearest_center_brute_force():
  x = blobs(3, n=40)
  c = x[:3]
  out = selection.kmeans(x, c, num_steps=0, block_size=6)
  d = ((x[:, None] - c[None]) ** 2).sum(-1)
  assert out.labels.tolist() == d.argmin(1).tolist()
  np.testing.assert_allclose(float(out.inertia), d.min(1).sum(), rtol=1e-5)


def test_kmeans_nan_in_nan_out():
  x = blobs(4, n=30)
  x[5, 1] = np.nan
  out = selection.kmeans(x, x[:3] + 0.5, num_steps=2, block_size=8)
  assert np.isnan(float(out.inertia))


def test_kmeans_memory_is_blocked():
  # the compiled program's temporaries stay far below one n x k matrix
  n, d, k, block = 20000, 8, 64, 256
  f = jax.jit(selection.kmeans, static_argnames=("num_steps", "block_size"))
  compiled = f.lower(jax.ShapeDtypeStruct((n, d), jnp.float32),
                     jax.ShapeDtypeStruct((k, d), jnp.float32),
                     num_steps=2, block_size=block).compile()
  mem = compiled.memory_analysis()
  if mem is None:
    pytest.skip("no memory analysis on this backend")
  assert mem.temp_size_in_bytes < n * k * 4 / 4


def test_kmeans_plus_plus_init_properties():
  x = blobs(5, n=50)
  c1 = selection.kmeans_plus_plus_init(jax.random.key(1), x, 6)
  c2 = jax.jit(selection.kmeans_plus_plus_init, static_argnames="k")(
      jax.random.key(1), x, k=6)
  np.testing.assert_array_equal(c1, c2)
  rows = [int(np.flatnonzero((x == c).all(1))[0]) for c in np.asarray(c1)]
  assert len(set(rows)) == 6  # distinct items (D^2 = 0 is never drawn)
  # fewer distinct points than k: the extra centers repeat, no error or NaN
  dup = np.repeat(x[:2], 5, axis=0)
  c = selection.kmeans_plus_plus_init(jax.random.key(0), dup, 4)
  assert np.isfinite(np.asarray(c)).all()


def test_kmeans_errors():
  x = blobs(0, n=10)
  with pytest.raises(ValueError, match="kmeans: `init_centers`"):
    selection.kmeans(x, x[:2, :3], num_steps=1)
  with pytest.raises(ValueError, match="`block_size`"):
    selection.kmeans(x, x[:2], num_steps=1, block_size=0)
  with pytest.raises(ValueError, match="kmeans_plus_plus_init: `k`"):
    selection.kmeans_plus_plus_init(jax.random.key(0), x, 11)


def test_kmeans_million_items_fit_in_two_gib():
  # issue 17's budget: 10^6 items of dimension 256 (1 GiB of f32 data) with
  # k-means++ seeding and Lloyd steps in 2 GiB (compiled, not run)
  n, d, k = 10**6, 256, 1024
  x = jax.ShapeDtypeStruct((n, d), jnp.float32)
  lloyd = jax.jit(selection.kmeans, static_argnames=("num_steps", "block_size"))
  seed = jax.jit(selection.kmeans_plus_plus_init, static_argnames="k")
  for compiled in (
      lloyd.lower(x, jax.ShapeDtypeStruct((k, d), jnp.float32),
                  num_steps=10, block_size=4096).compile(),
      seed.lower(jax.random.key(0), x, k=k).compile()):
    mem = compiled.memory_analysis()
    if mem is None:
      pytest.skip("no memory analysis on this backend")
    total = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
             + mem.output_size_in_bytes)
    assert total < 2 * 2**30, total
