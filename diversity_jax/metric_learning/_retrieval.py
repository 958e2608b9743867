"""Retrieval metrics (Recall@k, precision@1, R-precision, MAP@R), in blocks.

Queries are ranked against references in blocks of ``block_size`` queries: a
block's (block_size, N) scores are reduced to its top ``k`` neighbours before
the next block, so memory is O(block_size N) instead of the O(Q N) of the
full similarity matrix, and the whole computation is one ``jax.jit`` program
with static shapes (``k`` and ``block_size`` static).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.losses import _metric_pairs as pairs

_DISTANCES = ("euclidean", "cosine")


def _scores(q, r, r_sq, distance):
  """Larger = closer: ``-||q - r||^2 + ||q||^2`` or the cosine similarity."""
  dot = jnp.matmul(q, r.T, precision=jax.lax.Precision.HIGHEST)
  if distance == "cosine":
    return dot
  return 2.0 * dot - r_sq[None, :]


def _block_stats(q, q_labels, q_index, refs, ref_labels, r_sq, *, k,
                 recall_at, distance, exclude_self):
  """Per-query metrics of one block of queries (no reduction)."""
  scores = _scores(q, refs, r_sq, distance)
  cols = jnp.arange(refs.shape[0])
  same = q_labels[:, None] == ref_labels[None, :]
  num_relevant = jnp.sum(same, axis=1)
  if exclude_self:
    is_self = cols[None, :] == q_index[:, None]
    scores = jnp.where(is_self, -jnp.inf, scores)
    num_relevant = num_relevant - jnp.any(is_self & same, axis=1)
  # Ties: lax.top_k puts the lower reference index first.
  _, idx = jax.lax.top_k(scores, k)
  rel = ref_labels[idx] == q_labels[:, None]                    # (b, k)
  rank = jnp.arange(1, k + 1)
  within_r = rank[None, :] <= num_relevant[:, None]
  hits = jnp.cumsum(rel, axis=1)
  r = jnp.maximum(num_relevant, 1).astype(jnp.float32)
  r_precision = jnp.sum(rel & within_r, axis=1) / r
  ap_terms = jnp.where(rel & within_r, hits / rank.astype(jnp.float32), 0.0)
  map_at_r = jnp.sum(ap_terms, axis=1) / r
  # R > k: the top k cannot hold every relevant reference (NaN, not a guess).
  short = num_relevant > k
  stats = {
      "precision_at_1": rel[:, 0].astype(jnp.float32),
      "r_precision": jnp.where(short, jnp.nan, r_precision),
      "mean_average_precision_at_r": jnp.where(short, jnp.nan, map_at_r),
  }
  for j in recall_at:
    stats[f"recall_at_{j}"] = jnp.any(rel[:, :j], axis=1).astype(jnp.float32)
  bad = ~jnp.all(jnp.isfinite(q), axis=1)
  stats = {name: jnp.where(bad, jnp.nan, v) for name, v in stats.items()}
  return stats, num_relevant > 0


@functools.partial(jax.jit, static_argnames=(
    "k", "recall_at", "distance", "block_size", "exclude_self"))
def _retrieval(q, q_labels, refs, ref_labels, *, k, recall_at, distance,
               block_size, exclude_self):
  if distance == "cosine":
    q, refs = pairs.l2_normalize(q), pairs.l2_normalize(refs)
  r_sq = jnp.sum(jnp.square(refs), axis=1)
  num_q = q.shape[0]
  num_blocks = -(-num_q // block_size)
  pad = num_blocks * block_size - num_q
  q_pad = jnp.pad(q, ((0, pad), (0, 0)))
  labels_pad = jnp.pad(q_labels, (0, pad))
  index = jnp.arange(num_blocks * block_size)
  block = lambda a: a.reshape((num_blocks, block_size) + a.shape[1:])
  stats_fn = functools.partial(
      _block_stats, refs=refs, ref_labels=ref_labels, r_sq=r_sq, k=k,
      recall_at=recall_at, distance=distance, exclude_self=exclude_self)
  stats, has_match = jax.lax.map(lambda args: stats_fn(*args),
                                 (block(q_pad), block(labels_pad), block(index)))
  flat = lambda a: a.reshape(-1)[:num_q]
  has_match = flat(has_match)
  bad_refs = jnp.any(~jnp.isfinite(refs))
  out = {}
  for name, v in stats.items():
    mean = numerics.masked_mean(flat(v), has_match)
    # No query with a relevant reference: undefined (pml gives NaN too).
    out[name] = jnp.where(jnp.any(has_match) & ~bad_refs, mean, jnp.nan)
  return out


def _max_relevant(query_labels, ref_labels, exclude_self):
  """Largest number of same-label references of a query (concrete labels)."""
  q = np.asarray(query_labels)
  values, counts = np.unique(np.asarray(ref_labels), return_counts=True)
  pos = np.searchsorted(values, q)
  pos = np.clip(pos, 0, max(len(values) - 1, 0))
  found = (values[pos] == q) if len(values) else np.zeros(q.shape, bool)
  per_query = np.where(found, counts[pos] if len(values) else 0, 0)
  return int(per_query.max(initial=0)) - int(exclude_self)


def retrieval_metrics(query_embeddings, query_labels, ref_embeddings=None,
                      ref_labels=None, *, k=None, recall_at=(1, 2, 4, 8),
                      distance="euclidean", block_size=1024):
  r"""Recall@k, precision@1, R-precision and MAP@R of nearest-neighbour retrieval.

  Each query :math:`q` ranks the references by distance (ties: lower
  reference index first); :math:`\mathrm{rel}_q(i) = 1` when the
  :math:`i`-th neighbour has the query's label, and :math:`R_q` is the number
  of references with that label (the query itself excluded when the
  references are the queries). Averaged over the queries with
  :math:`R_q > 0`:

  .. math::
    \mathrm{Recall@}k = \mathbb{1}\big[\textstyle\sum_{i \le k}
      \mathrm{rel}_q(i) > 0\big], \qquad
    \mathrm{P@1} = \mathrm{rel}_q(1), \qquad
    \mathrm{R\text{-}P} = \frac{1}{R_q}\sum_{i \le R_q} \mathrm{rel}_q(i),

  .. math::
    \mathrm{MAP@R} = \frac{1}{R_q}\sum_{i=1}^{R_q} P_q(i)\,\mathrm{rel}_q(i),
    \qquad P_q(i) = \frac{1}{i}\sum_{j \le i} \mathrm{rel}_q(j).

  Queries are processed in blocks of ``block_size`` against all references
  with a top-``k`` per block: peak memory O(block_size N), never the (Q, N)
  matrix. ``block_size=None`` ranks all queries in one block (the plain
  version). Equals pytorch-metric-learning's ``AccuracyCalculator``
  (``precision_at_1``, ``r_precision``, ``mean_average_precision_at_r``;
  default ``k``, exact k-NN) on the same embeddings, including its rules for
  the query itself and for queries with no relevant reference.

  Args:
    query_embeddings: (Q, D) float queries.
    query_labels: (Q,) integer labels (identities).
    ref_embeddings: optional (N, D) float references; default: the queries,
      each query's own entry excluded from its ranking.
    ref_labels: (N,) integer labels of ``ref_embeddings``.
    k: number of neighbours ranked per query (static). Default: the largest
      :math:`R_q` (and ``max(recall_at)``), read from concrete labels; pass it
      when the labels are traced. A query with :math:`R_q > k` makes
      R-precision and MAP@R NaN (an error when the labels are concrete).
    recall_at: the static tuple of :math:`k` values of Recall@k.
    distance: ``"euclidean"`` (pml's default k-NN) or ``"cosine"``.
    block_size: queries per block (static), or None for one block.

  Returns:
    dict of f32 scalars: ``precision_at_1``, ``r_precision``,
    ``mean_average_precision_at_r`` and ``recall_at_{k}`` for each ``k`` in
    ``recall_at``; NaN when no query has a relevant reference or an input
    holds a NaN or inf.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.metric_learning import retrieval_metrics
    >>> labels = jnp.arange(100) % 10
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (100, 8)) + labels[:, None]
    >>> m = retrieval_metrics(x, labels, recall_at=(1, 4), block_size=32)
    >>> sorted(m)
    ['mean_average_precision_at_r', 'precision_at_1', 'r_precision', 'recall_at_1', 'recall_at_4']
    >>> bool(m["recall_at_4"] >= m["recall_at_1"])
    True

  References:
    Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020
    (MAP@R and R-precision) (arXiv:2003.08505); Recall@k as in Oh Song et
    al., "Deep Metric Learning via Lifted Structured Feature Embedding",
    CVPR 2016. Code: pytorch-metric-learning
    ``utils.accuracy_calculator.AccuracyCalculator``.
  """
  fn = "retrieval_metrics"
  q, query_labels, _ = pairs.validate_batch(
      query_embeddings, query_labels, None, fn,
      embeddings_name="query_embeddings", labels_name="query_labels")
  exclude_self = ref_embeddings is None
  refs, ref_labels = pairs.validate_references(q, ref_embeddings, ref_labels,
                                               None, fn)
  if exclude_self:
    refs, ref_labels = q, query_labels
  checks.check_choice(distance, _DISTANCES, "distance", fn)
  recall_at = tuple(int(j) for j in recall_at)
  if any(j < 1 for j in recall_at):
    raise ValueError(f"{fn}: `recall_at` values must be >= 1, got {recall_at}")
  num_refs = refs.shape[0] - int(exclude_self)
  if q.shape[0] < 1 + int(exclude_self):
    raise ValueError(f"{fn}: `query_embeddings` must hold at least "
                     f"{1 + int(exclude_self)} rows, got {q.shape[0]}")
  if num_refs < 1:
    raise ValueError(f"{fn}: `ref_embeddings` must hold at least 1 row, "
                     f"got {refs.shape[0]}")
  if k is None:
    if not (checks.is_concrete(query_labels) and checks.is_concrete(ref_labels)):
      raise ValueError(f"{fn}: `k` is required when the labels are traced "
                       "(under jit): pass the largest class size")
    k = max(_max_relevant(query_labels, ref_labels, exclude_self),
            max(recall_at, default=1), 1)
  else:
    if not (isinstance(k, int) and k >= 1):
      raise ValueError(f"{fn}: `k` must be a positive int, got {k!r}")
    if checks.is_concrete(query_labels) and checks.is_concrete(ref_labels):
      largest = _max_relevant(query_labels, ref_labels, exclude_self)
      if largest > k:
        raise ValueError(f"{fn}: `k`={k} is smaller than the largest number "
                         f"of relevant references ({largest}): R-precision "
                         "and MAP@R need k >= R")
  if max(recall_at, default=1) > k:
    raise ValueError(f"{fn}: `recall_at` {recall_at} exceeds `k`={k}")
  if k > num_refs:
    raise ValueError(f"{fn}: `k`={k} exceeds the number of references "
                     f"available per query ({num_refs})")
  num_q = q.shape[0]
  if block_size is None:
    block_size = max(num_q, 1)
  if not (isinstance(block_size, int) and block_size >= 1):
    raise ValueError(f"{fn}: `block_size` must be a positive int or None, "
                     f"got {block_size!r}")
  block_size = min(block_size, max(num_q, 1))
  return _retrieval(q, query_labels, refs, ref_labels, k=k,
                    recall_at=recall_at, distance=distance,
                    block_size=block_size, exclude_self=exclude_self)
