"""Diversify and Conquer: sampling across clusters, cluster reweighting.

Yu et al. 2025 select a training subset by clustering the embeddings
(:func:`~diversity_jax.selection.kmeans`), giving each cluster a share of the
budget and sampling within each cluster by item quality (kMQ). The iterative
variant trains on a part of the budget, scores the clusters from the model's
training signal on what it was trained on, and samples the next part with the
new cluster weights (:func:`reweight_clusters`, then :func:`cluster_sample`
with ``where`` excluding the items already selected).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics
from diversity_jax.selection import _common


def _num_clusters(num_clusters, fn: str) -> int:
  num_clusters = _common.check_k(num_clusters, 2**62, fn, "num_clusters")
  if num_clusters < 1:
    checks._fail(fn, f"`num_clusters` must be >= 1, got {num_clusters}")
  return num_clusters


def _check_clusters(clusters, num_clusters: int, where, fn: str):
  checks.check_integer(clusters, "clusters", fn)
  checks.check_rank(clusters, 1, "clusters", fn)
  n = jnp.shape(clusters)[0]
  checks.check_where(where, (n,), fn)
  if checks.is_concrete(clusters) and (where is None
                                       or checks.is_concrete(where)):
    kept = clusters if where is None else jnp.asarray(clusters)[
        jnp.broadcast_to(jnp.asarray(where), (n,))]
    checks.check_label_range(kept, num_clusters, fn, "clusters")
  return n


def _allocate_budget(k: int, capacity: jax.Array,
                     weights: jax.Array) -> jax.Array:
  r"""Per-cluster counts: ``k`` shared in proportion to ``weights``, capped.

  Water-filling: :math:`b_j = \min(c_j, t\,w_j)` with the level :math:`t`
  such that :math:`\sum_j b_j = \min(k, \sum_{w_j > 0} c_j)`, so the budget a
  full cluster cannot take goes to the others in proportion to their
  weights; then largest remainders round the :math:`b_j` to integers
  (remainders compared on a :math:`2^{-12}` grid, ties to the lower cluster
  index). Clusters of weight 0 get nothing.
  """
  c = capacity.astype(jnp.int32)
  eligible = (weights > 0) & (c > 0)
  w = jnp.where(eligible, weights, 0.0)
  c_ok = jnp.where(eligible, c, 0)
  total = jnp.minimum(k, jnp.sum(c_ok))
  # level t: breakpoints c_j / w_j sorted; with the first m clusters full,
  # t_m = (total - their capacity) / (weight of the others).
  breakpoint = jnp.where(eligible, c_ok / jnp.where(eligible, w, 1.0),
                         jnp.inf)
  order = jnp.argsort(breakpoint)
  bp, c_s, w_s = breakpoint[order], c_ok[order], w[order]
  full_before = jnp.cumsum(c_s) - c_s
  w_rest = jnp.cumsum(w_s[::-1])[::-1]
  level = (total - full_before) / jnp.where(w_rest > 0, w_rest, 1.0)
  valid = (w_rest > 0) & (level <= bp)
  t = jnp.where(jnp.any(valid), level[jnp.argmax(valid)], jnp.inf)
  share = jnp.where(eligible, jnp.minimum(c_ok, t * w), 0.0)
  counts = jnp.minimum(jnp.floor(share).astype(jnp.int32), c_ok)
  rest = total - jnp.sum(counts)
  room = eligible & (counts < c_ok)
  # remainders on a 2^-12 grid, so that equal shares tie (lower index first)
  # whatever their last bits
  frac = jnp.where(room, jnp.round((share - counts) * 4096.0), -1.0)
  num = frac.shape[0]
  by_frac = jnp.lexsort((jnp.arange(num), -frac))
  extra = jnp.zeros((num,), bool).at[by_frac].set(jnp.arange(num) < rest)
  return counts + (extra & room).astype(jnp.int32)


def cluster_sample(key: jax.Array, clusters: jax.Array, k: int, *,
                   cluster_weights: Optional[jax.Array] = None,
                   num_clusters: Optional[int] = None,
                   quality: Optional[jax.Array] = None,
                   where: Optional[jax.Array] = None) -> jax.Array:
  r"""kMQ: ``k`` items sampled across clusters, by quality within a cluster.

  Budget of cluster :math:`j` (of :math:`c_j` available items, weight
  :math:`w_j`; :math:`w_j = c_j` by default, the paper's share proportional
  to cluster size):

  .. math::

    b_j = \min(c_j,\ t\,w_j),\qquad \sum_j b_j = \min\Big(k,
    \sum_{j: w_j > 0} c_j\Big),

  rounded to integers by largest remainders (compared on a :math:`2^{-12}`
  grid, ties to the lower cluster index); a cluster too small for its share is taken whole and the rest of
  its share goes to the other clusters in proportion to their weights, so
  exactly ``k`` items are returned whenever the clusters of positive weight
  hold ``k`` items. Within cluster :math:`j`, :math:`b_j` items are drawn
  without replacement, each draw picking a remaining item :math:`i` with
  probability

  .. math::

    p_i = \frac{e^{q_i}}{\sum_{i' \text{ remaining in } j} e^{q_{i'}}},

  (uniform without ``quality``), done in one pass as the top :math:`b_j` of
  :math:`q_i + G_i`, :math:`G_i` i.i.d. Gumbel (Gumbel-top-k).
  ``O(n log n + K log K)``.

  Choices: the allocation is deterministic (proportional, largest
  remainders) so that the subset has exactly ``k`` items, where the authors'
  iterative code draws the cluster counts from a multinomial and truncates
  at a cluster's size; the within-cluster probabilities are the softmax of
  the quality scores, as in the authors' code (pass ``log(q)`` for
  probabilities proportional to a non-negative ``q``).

  Args:
    key: PRNG key.
    clusters: ``(n,)`` integer cluster labels in ``[0, K)`` (e.g.
      ``kmeans(...).labels``).
    k: budget, a static int ``>= 0``.
    cluster_weights: optional ``(K,)`` non-negative cluster weights (e.g.
      from :func:`reweight_clusters`); default: the number of available
      items of each cluster.
    num_clusters: ``K`` (static), needed when ``cluster_weights`` is None.
    quality: optional ``(n,)`` floating quality scores (higher is better),
      the log-probabilities of the within-cluster draws up to a constant.
    where: optional ``(n,)`` boolean mask of the available items (e.g. not
      selected in an earlier iteration); the others are never picked and do
      not count in :math:`c_j`.

  Returns:
    ``(k,)`` int32 indices without repeats, grouped by cluster (ascending)
    and in draw order within a cluster; ``-1`` for unfilled slots. Every index
    is ``-1`` when an available item's quality is NaN or inf, a weight is
    NaN, inf or negative, or (under ``jit``) an available item's cluster label
    lies outside ``[0, K)``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.selection import cluster_sample
    >>> clusters = jnp.array([0, 0, 0, 0, 1, 1, 2, 2])
    >>> idx = cluster_sample(jax.random.key(0), clusters, 4, num_clusters=3)
    >>> [int(clusters[i]) for i in idx]  # shares 2, 1, 1 of sizes 4, 2, 2
    [0, 0, 1, 2]

  References:
    Yu, Chen, Ahmadian, Fadaee, "Diversify and Conquer: Diversity-Centric
    Data Selection with Iterative Refinement", ICLR 2025 (arXiv 2409.11378),
    Sec. 3 (k-means-quality, kMQ). Authors' code:
    github.com/for-ai/iterative-data-selection@6ac5772,
    ``selection/methods/deita/kmeansrandom.py`` (softmax of the quality
    scores, sampling without replacement within each cluster) and
    ``selection/iter.py`` (``select_new_iter``: the next subset drawn with
    the cluster weights from the items not yet selected).
  """
  fn = "cluster_sample"
  if cluster_weights is None:
    if num_clusters is None:
      checks._fail(fn, "pass `cluster_weights` or `num_clusters`")
    num = _num_clusters(num_clusters, fn)
  else:
    checks.check_floating(cluster_weights, "cluster_weights", fn)
    checks.check_rank(cluster_weights, 1, "cluster_weights", fn)
    num = jnp.shape(cluster_weights)[0]
    if num_clusters is not None and _num_clusters(num_clusters, fn) != num:
      checks._fail(fn, f"`num_clusters` ({num_clusters}) differs from the "
                   f"length of `cluster_weights` ({num})")
    if num < 1:
      checks._fail(fn, "`cluster_weights` must hold at least one cluster")
  n = _check_clusters(clusters, num, where, fn)
  k = _common.check_k(k, 2**62, fn)
  if quality is not None:
    checks.check_floating(quality, "quality", fn)
    checks.check_shape(quality, (n,), "quality", fn)
  if n == 0 or k == 0:
    return jnp.full((k,), -1, jnp.int32)
  kept = (jnp.ones((n,), bool) if where is None
          else jnp.broadcast_to(jnp.asarray(where), (n,)))
  c, invalid = label_range.sanitize(clusters, num)
  bad = jnp.any(invalid & kept)
  capacity = jax.ops.segment_sum(kept.astype(jnp.int32), c,
                                 num_segments=num)
  if cluster_weights is None:
    weights = capacity.astype(jnp.float32)
  else:
    weights = numerics.promote_to_f32(jnp.asarray(cluster_weights))
    bad |= ~jnp.all(jnp.isfinite(weights) & (weights >= 0))
    weights = jnp.where(bad, 0.0, weights)
  counts = _allocate_budget(k, capacity, weights)
  score = jax.random.gumbel(key, (n,), jnp.float32)
  if quality is not None:
    q = numerics.promote_to_f32(jnp.asarray(quality))
    bad |= ~jnp.all(jnp.isfinite(q) | ~kept)
    score = score + jnp.where(kept, q, 0.0)
  score = jnp.where(kept, score, -jnp.inf)
  order = jnp.lexsort((-score, c))                  # by cluster, best first
  c_sorted = c[order]
  size = jax.ops.segment_sum(jnp.ones((n,), jnp.int32), c, num_segments=num)
  start = jnp.cumsum(size) - size
  rank = jnp.arange(n) - start[c_sorted]
  chosen = (rank < counts[c_sorted]) & kept[order]
  slot = jnp.nonzero(chosen, size=k, fill_value=-1)[0]
  idx = jnp.where(slot >= 0, order[jnp.maximum(slot, 0)], -1)
  return _common.invalidate(idx.astype(jnp.int32), bad)


def reweight_clusters(scores: jax.Array, clusters: jax.Array,
                      num_clusters: int, *,
                      where: Optional[jax.Array] = None,
                      temperature: float = 1.0) -> jax.Array:
  r"""Iterative refinement: cluster weights from the training signal.

  With :math:`S_i` the score of item :math:`i` trained on in the last
  iteration (higher: the model still has more to learn from it, e.g. the
  reward of the gold response minus the reward of the model's generation,
  or the item's loss) and :math:`D_j` the scored items of cluster :math:`j`:

  .. math::

    s_j = \frac{1}{|D_j|}\sum_{i \in D_j} S_i,\qquad
    w_j = \frac{\exp(s_j / \tau)}{\sum_{j'} \exp(s_{j'} / \tau)}.

  The next subset is drawn with these weights: ``cluster_sample(key,
  clusters, k, cluster_weights=w, where=~already_selected)``. ``O(n + K)``.

  Choice: a cluster with no scored item gets the mean of the scored
  clusters' :math:`s_j` (no evidence: an average weight); with no scored
  item at all the weights are uniform.

  Args:
    scores: ``(n,)`` floating per-item training-signal scores.
    clusters: ``(n,)`` integer cluster labels in ``[0, K)``.
    num_clusters: ``K``, a static int ``>= 1``.
    where: optional ``(n,)`` boolean mask of the scored items (those
      selected in the last iteration); the others' scores are ignored.
    temperature: :math:`\tau > 0` (1 in the paper).

  Returns:
    ``(K,)`` f32 weights summing to 1. All NaN when a scored item's score
    is NaN or inf or (under ``jit``) its cluster label lies outside
    ``[0, K)``.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import reweight_clusters
    >>> w = reweight_clusters(jnp.array([1., 3., 0., 0.]),
    ...                       jnp.array([0, 0, 1, 2]), 3)
    >>> [round(float(v), 3) for v in w]  # softmax of the means 2, 0, 0
    [0.787, 0.107, 0.107]

  References:
    Yu, Chen, Ahmadian, Fadaee, "Diversify and Conquer: Diversity-Centric
    Data Selection with Iterative Refinement", ICLR 2025 (arXiv 2409.11378),
    Sec. 3 (iterative refinement, Algorithm 1: per-cluster mean score,
    normalized into the sampling weights of the next iteration). Authors'
    code: github.com/for-ai/iterative-data-selection@6ac5772,
    ``selection/iter.py`` (``select_new_iter``: per-cluster mean of
    ``reward_diff`` = gold reward - generated reward, exponentiated and
    normalized).
  """
  fn = "reweight_clusters"
  num = _num_clusters(num_clusters, fn)
  checks.check_floating(scores, "scores", fn)
  checks.check_rank(scores, 1, "scores", fn)
  n = _check_clusters(clusters, num, where, fn)
  checks.check_shape(scores, (n,), "scores", fn)
  checks.check_positive(temperature, "temperature", fn)
  kept = (jnp.ones((n,), bool) if where is None
          else jnp.broadcast_to(jnp.asarray(where), (n,)))
  c, invalid = label_range.sanitize(clusters, num)
  s = numerics.promote_to_f32(jnp.asarray(scores))
  bad = jnp.any(kept & (invalid | ~jnp.isfinite(s)))
  s = jnp.where(kept, s, 0.0)
  total = jax.ops.segment_sum(s, c, num_segments=num)
  count = jax.ops.segment_sum(kept.astype(jnp.float32), c, num_segments=num)
  scored = count > 0
  mean = numerics.safe_divide(total, count)
  fill = numerics.safe_divide(jnp.sum(jnp.where(scored, mean, 0.0)),
                              jnp.sum(scored))
  mean = jnp.where(scored, mean, fill)
  weights = jax.nn.softmax(mean / temperature)
  return jnp.where(bad, jnp.nan, weights)
