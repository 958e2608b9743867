"""kMQ sampling across clusters and iterative cluster reweighting.

References written separately in numpy: the budget allocation as a loop that
saturates full clusters one round at a time (then largest remainders), the
within-cluster draws as a per-cluster sort of the same Gumbel-perturbed
scores, the inclusion probabilities of sequential sampling without
replacement (``np.random.choice(..., replace=False, p=softmax(q))``, the
authors' procedure) in closed form, and the cluster weights as loops.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax.selection import cluster_sample
from diversity_jax.selection import kmeans
from diversity_jax.selection import kmeans_plus_plus_init
from diversity_jax.selection import reweight_clusters

_sample = jax.jit(cluster_sample, static_argnames=("k", "num_clusters"))
_reweight = jax.jit(reweight_clusters, static_argnames="num_clusters")


def _np_allocate(k, caps, weights):
  """Water-filling by rounds, then largest remainders (ties: lower index)."""
  caps = np.asarray(caps, np.int64)
  w = np.asarray(weights, np.float64)
  active = (w > 0) & (caps > 0)
  total = min(k, int(caps[active].sum()))
  share = np.zeros(len(caps))
  full = np.zeros(len(caps), bool)
  while True:
    free = active & ~full
    left = total - caps[full].sum()
    if not free.any():
      break
    trial = left * w[free] / w[free].sum()
    over = trial >= caps[free]
    if not over.any():
      share[free] = trial
      break
    idx = np.flatnonzero(free)[over]
    full[idx] = True
  share[full] = caps[full]
  counts = np.floor(share + 1e-9).astype(np.int64)
  counts = np.minimum(counts, caps)
  rest = total - counts.sum()
  frac = np.where(active & (counts < caps),
                  np.round((share - counts) * 4096), -1.0)
  for j in sorted(range(len(caps)), key=lambda j: (-frac[j], j))[:rest]:
    counts[j] += 1
  return counts


def _np_sample(gumbel, clusters, counts, quality, kept, k):
  """Per cluster (ascending), the top ``counts[j]`` kept items by q + G."""
  score = gumbel.astype(np.float32)
  if quality is not None:
    score = score + quality.astype(np.float32)
  out = []
  for j in range(len(counts)):
    items = [i for i in range(len(clusters)) if clusters[i] == j and kept[i]]
    items.sort(key=lambda i: -score[i])
    out += items[:counts[j]]
  return np.array(out + [-1] * (k - len(out)))


def _problem(seed, n=17, num=4):
  rng = np.random.default_rng(seed)
  clusters = rng.integers(0, num, n)
  quality = rng.normal(size=n).astype(np.float32)
  kept = rng.random(n) < 0.8
  weights = rng.random(num).astype(np.float32)
  weights[rng.integers(num)] = 0.0 if seed % 2 else weights[0]
  return clusters, quality, kept, weights


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("use_weights", [False, True])
def test_matches_numpy_given_the_same_gumbel_draws(seed, use_weights):
  clusters, quality, kept, weights = _problem(seed)
  n, num = len(clusters), len(weights)
  caps = np.bincount(clusters[kept], minlength=num)
  w = weights if use_weights else caps.astype(np.float64)
  key = jax.random.key(seed)
  gumbel = np.asarray(jax.random.gumbel(key, (n,), jnp.float32))
  for k in (0, 1, 5, 9, int(kept.sum()), n):
    idx = _sample(key, jnp.asarray(clusters), k,
                  cluster_weights=jnp.asarray(weights) if use_weights else None,
                  num_clusters=num, quality=jnp.asarray(quality),
                  where=jnp.asarray(kept))
    counts = _np_allocate(k, caps, w)
    expected = _np_sample(gumbel, clusters, counts, quality, kept, k)
    np.testing.assert_array_equal(np.asarray(idx), expected)


def test_counts_proportional_to_cluster_size():
  clusters = jnp.asarray(np.repeat(np.arange(3), [10, 6, 4]))
  idx = np.asarray(_sample(jax.random.key(1), clusters, 10, num_clusters=3))
  np.testing.assert_array_equal(np.bincount(np.asarray(clusters)[idx]),
                                [5, 3, 2])
  # shares 1, 13/3, 1/3, 7/3: floors 1, 4, 0, 2 and the last pick to the
  # lowest of the three tied remainders 1/3 (cluster 1), in any float order
  clusters = jnp.asarray(np.repeat(np.arange(4), [3, 13, 1, 7]))
  idx = np.asarray(_sample(jax.random.key(1), clusters, 8, num_clusters=4))
  np.testing.assert_array_equal(
      np.bincount(np.asarray(clusters)[idx], minlength=4), [1, 5, 0, 2])


def test_small_cluster_budget_goes_to_the_others():
  # equal weights, k = 7: cluster 0 holds 1 item, its remaining share is
  # split between the other two (3 + 3).
  clusters = jnp.asarray([0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2])
  idx = np.asarray(_sample(jax.random.key(0), clusters, 7,
                           cluster_weights=jnp.ones(3)))
  assert len(set(idx.tolist())) == 7 and (idx >= 0).all()
  np.testing.assert_array_equal(np.bincount(np.asarray(clusters)[idx]),
                                [1, 3, 3])


def test_exactly_k_picks_at_larger_sizes_in_f32():
  # 5000 items, 37 clusters of skewed sizes and weights: float rounding of
  # the shares never loses or adds a pick, and counts match the reference.
  rng = np.random.default_rng(7)
  clusters = rng.choice(37, 5000, p=rng.dirichlet(np.full(37, 0.3)))
  caps = np.bincount(clusters, minlength=37)
  weights = rng.random(37).astype(np.float32)
  sample = jax.jit(lambda key, k: cluster_sample(
      key, jnp.asarray(clusters), k, cluster_weights=jnp.asarray(weights)),
                   static_argnums=1)
  for k in (1, 999, 3001, 5000):
    idx = np.asarray(sample(jax.random.key(k), k))
    assert (idx >= 0).all() and len(np.unique(idx)) == k
    counts = np.bincount(clusters[idx], minlength=37)
    assert (counts <= caps).all()
    np.testing.assert_allclose(counts, _np_allocate(k, caps, weights),
                               atol=1)


def test_with_kmeans_labels():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(24, 3)), jnp.float32)
  key = jax.random.key(0)
  centers = kmeans_plus_plus_init(key, x, 4)
  labels = kmeans(x, centers, num_steps=3).labels
  idx = np.asarray(_sample(key, labels, 8, num_clusters=4))
  sizes = np.bincount(np.asarray(labels), minlength=4)
  np.testing.assert_array_equal(
      np.bincount(np.asarray(labels)[idx], minlength=4),
      _np_allocate(8, sizes, sizes))


def test_budget_beyond_what_is_available_leaves_unfilled_slots():
  clusters = jnp.asarray([0, 0, 1, 1, 2, 2])
  kept = jnp.asarray([True, False, True, True, True, True])
  weights = jnp.asarray([1.0, 2.0, 0.0])   # cluster 2 excluded
  idx = np.asarray(_sample(jax.random.key(0), clusters, 5,
                           cluster_weights=weights, where=kept))
  assert sorted(idx.tolist()) == [-1, -1, 0, 2, 3]


def test_no_repeats_and_dropped_items_never_picked():
  for seed in range(5):
    clusters, quality, kept, _ = _problem(seed, n=30, num=5)
    idx = np.asarray(_sample(jax.random.key(seed), jnp.asarray(clusters), 12,
                             num_clusters=5, quality=jnp.asarray(quality),
                             where=jnp.asarray(kept)))
    picked = idx[idx >= 0]
    assert len(set(picked.tolist())) == len(picked) == min(12, kept.sum())
    assert kept[picked].all()


def _inclusion_exact(p, m):
  """P(item in the sample) of m sequential draws without replacement."""
  n = len(p)
  incl = np.zeros(n)
  for seq in itertools.permutations(range(n), m):
    prob, left = 1.0, 1.0
    for i in seq:
      prob *= p[i] / left
      left -= p[i]
    incl[list(seq)] += prob
  return incl


def test_within_cluster_inclusion_matches_sampling_without_replacement():
  # cluster 0: 4 items, 2 picked with softmax(quality) draws; cluster 1: 2.
  quality = np.array([2.0, 0.5, 0.0, -1.0, 0.0, 0.0], np.float32)
  clusters = jnp.asarray([0, 0, 0, 0, 1, 1])
  keys = jax.random.split(jax.random.key(3), 4000)
  idx = jax.vmap(lambda key: cluster_sample(
      key, clusters, 3, cluster_weights=jnp.array([2.0, 1.0]),
      quality=jnp.asarray(quality)))(keys)
  mask = np.asarray(jax.nn.one_hot(idx, 6).sum(axis=1))
  p = np.exp(quality[:4]) / np.exp(quality[:4]).sum()
  np.testing.assert_allclose(mask[:, :4].mean(0), _inclusion_exact(p, 2),
                             atol=0.035)
  np.testing.assert_allclose(mask[:, 4:].mean(0), [0.5, 0.5], atol=0.035)


def test_uniform_within_cluster_without_quality():
  clusters = jnp.zeros((5,), jnp.int32)
  keys = jax.random.split(jax.random.key(4), 3000)
  idx = jax.vmap(lambda key: cluster_sample(key, clusters, 2,
                                            num_clusters=1))(keys)
  freq = np.asarray(jax.nn.one_hot(idx, 5).sum(axis=1)).mean(0)
  np.testing.assert_allclose(freq, np.full(5, 0.4), atol=0.04)


def test_nan_policy_cluster_sample():
  clusters = jnp.asarray([0, 0, 1, 1])
  q = jnp.asarray([0.0, 1.0, jnp.nan, 0.5])
  key = jax.random.key(0)
  out = _sample(key, clusters, 2, num_clusters=2, quality=q)
  assert (np.asarray(out) == -1).all()
  # a NaN in a dropped item changes nothing
  kept = jnp.asarray([True, True, False, True])
  a = _sample(key, clusters, 2, num_clusters=2, quality=q, where=kept)
  b = _sample(key, clusters, 2, num_clusters=2, where=kept,
              quality=jnp.where(kept, q, 0.0))
  np.testing.assert_array_equal(a, b)
  assert (np.asarray(a) >= 0).all()
  for w in ([1.0, jnp.nan], [1.0, -1.0], [jnp.inf, 1.0]):
    out = _sample(key, clusters, 2, cluster_weights=jnp.asarray(w))
    assert (np.asarray(out) == -1).all()
  # traced out-of-range label: no pick
  out = jax.jit(lambda c: cluster_sample(key, c, 2, num_clusters=2))(
      jnp.asarray([0, 0, 2, 1]))
  assert (np.asarray(out) == -1).all()


def test_bad_arguments_cluster_sample():
  key = jax.random.key(0)
  c = jnp.asarray([0, 1, 1])
  with pytest.raises(TypeError, match="clusters"):
    cluster_sample(key, jnp.asarray([0.0, 1.0]), 1, num_clusters=2)
  with pytest.raises(ValueError, match="clusters"):
    cluster_sample(key, jnp.asarray([0, 3]), 1, num_clusters=2)
  with pytest.raises(ValueError, match="num_clusters"):
    cluster_sample(key, c, 1)
  with pytest.raises(ValueError, match="num_clusters"):
    cluster_sample(key, c, 1, num_clusters=0)
  with pytest.raises(ValueError, match="num_clusters"):
    cluster_sample(key, c, 1, num_clusters=3, cluster_weights=jnp.ones(2))
  with pytest.raises(ValueError, match="cluster_weights"):
    cluster_sample(key, c, 1, cluster_weights=jnp.ones((2, 1)))
  with pytest.raises(ValueError, match="quality"):
    cluster_sample(key, c, 1, num_clusters=2, quality=jnp.ones(2))
  with pytest.raises(TypeError, match="where"):
    cluster_sample(key, c, 1, num_clusters=2, where=jnp.ones(3))
  with pytest.raises(ValueError, match="`k`"):
    cluster_sample(key, c, -1, num_clusters=2)
  # a dropped item may carry any label
  out = cluster_sample(key, jnp.asarray([0, 5, 1]), 2, num_clusters=2,
                       where=jnp.asarray([True, False, True]))
  assert sorted(np.asarray(out).tolist()) == [0, 2]


def _np_reweight(scores, clusters, num, kept, temperature):
  means = [None] * num
  for j in range(num):
    vals = [scores[i] for i in range(len(scores)) if kept[i]
            and clusters[i] == j]
    if vals:
      means[j] = sum(vals) / len(vals)
  scored = [m for m in means if m is not None]
  fill = sum(scored) / len(scored) if scored else 0.0
  s = np.array([fill if m is None else m for m in means]) / temperature
  e = np.exp(s - s.max())
  return e / e.sum()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_reweight_matches_numpy(seed, temperature):
  rng = np.random.default_rng(seed)
  n, num = 15, 5
  clusters = rng.integers(0, num - 1, n)     # cluster 4 has no item
  scores = rng.normal(size=n).astype(np.float32)
  kept = rng.random(n) < 0.6
  w = _reweight(jnp.asarray(scores), jnp.asarray(clusters), num,
                where=jnp.asarray(kept), temperature=temperature)
  np.testing.assert_allclose(
      w, _np_reweight(scores, clusters, num, kept, temperature), rtol=1e-5)
  assert abs(float(jnp.sum(w)) - 1.0) < 1e-5


def test_reweight_nothing_scored_is_uniform():
  w = _reweight(jnp.ones(3), jnp.asarray([0, 1, 2]), 4,
                where=jnp.zeros(3, bool))
  np.testing.assert_allclose(w, np.full(4, 0.25), rtol=1e-6)


def test_reweight_then_sample_follows_the_weights():
  clusters = jnp.asarray(np.repeat(np.arange(2), 20))
  scores = jnp.asarray(np.repeat([np.log(3.0), 0.0], 20), jnp.float32)
  w = _reweight(scores, clusters, 2)
  np.testing.assert_allclose(w, [0.75, 0.25], rtol=1e-5)
  idx = np.asarray(_sample(jax.random.key(0), clusters, 8, cluster_weights=w))
  np.testing.assert_array_equal(np.bincount(np.asarray(clusters)[idx]),
                                [6, 2])


def test_nan_policy_reweight():
  clusters = jnp.asarray([0, 0, 1])
  s = jnp.asarray([1.0, jnp.nan, 0.0])
  assert np.isnan(np.asarray(_reweight(s, clusters, 2))).all()
  kept = jnp.asarray([True, False, True])
  np.testing.assert_allclose(
      _reweight(s, clusters, 2, where=kept),
      _reweight(jnp.asarray([1.0, 0.0, 0.0]), clusters, 2, where=kept))
  out = jax.jit(lambda c: reweight_clusters(jnp.zeros(3), c, 2))(
      jnp.asarray([0, -1, 1]))
  assert np.isnan(np.asarray(out)).all()


def test_bad_arguments_reweight():
  c = jnp.asarray([0, 1])
  with pytest.raises(TypeError, match="scores"):
    reweight_clusters(jnp.asarray([0, 1]), c, 2)
  with pytest.raises(ValueError, match="scores"):
    reweight_clusters(jnp.ones(3), c, 2)
  with pytest.raises(ValueError, match="clusters"):
    reweight_clusters(jnp.ones(2), jnp.asarray([0, 2]), 2)
  with pytest.raises(ValueError, match="num_clusters"):
    reweight_clusters(jnp.ones(2), c, 0)
  with pytest.raises(ValueError, match="temperature"):
    reweight_clusters(jnp.ones(2), c, 2, temperature=0.0)
