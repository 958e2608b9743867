"""Pair and triplet miners as static-shape boolean masks for the pair losses.

Every miner returns a mask over (anchor, reference) pairs, shape (B, R), or
over (anchor, positive, negative) triplets, shape (B, R, R), instead of the
index lists of pytorch-metric-learning, so it runs under ``jax.jit``. A pair
mask is what the pair losses of :mod:`diversity_jax.losses` take as
``pair_where``; :func:`pairs_from_triplets` turns a triplet mask into one.
The selection carries no gradient. References are the batch itself (self-pairs
excluded) or explicit ``ref_embeddings`` / ``ref_labels`` (a cross-batch
memory); ``pair_where`` restricts the candidate pairs before mining.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax.losses import _metric_pairs as pairs
from diversity_jax.losses._metric_multi_similarity import multi_similarity_pairs

_TRIPLET_TYPES = ("all", "hard", "semihard", "easy")


def _candidates(embeddings, labels, where, ref_embeddings, ref_labels,
                pair_where, fn):
  """f32 similarities (B, R) and the candidate positive / negative masks."""
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  y, pos, neg, _ = pairs.query_reference_pairs(
      x, labels, where, ref_embeddings, ref_labels, pair_where, fn=fn)
  sim = pairs.cosine_similarity_matrix(x, None if ref_embeddings is None else y)
  return jax.lax.stop_gradient(sim), pos, neg


def multi_similarity_miner(embeddings, labels, *, epsilon=0.1, where=None,
                           ref_embeddings=None, ref_labels=None,
                           pair_where=None):
  r"""Multi-Similarity pair miner: the informative pairs of each anchor.

  With cosine similarities :math:`S_{ik}`, positives :math:`P_i` and
  negatives :math:`N_i` of anchor :math:`i`, keeps

  .. math::
    k \in N_i:\ S_{ik} > \min_{k' \in P_i} S_{ik'} - \epsilon, \qquad
    k \in P_i:\ S_{ik} < \max_{k' \in N_i} S_{ik'} + \epsilon .

  An anchor without positives keeps no negative and vice versa.
  ``multi_similarity_loss(..., mine=False, pair_where=mask)`` with this mask
  equals ``multi_similarity_loss(..., mine=True)``.

  Args:
    embeddings: (B, D) float anchors (cosine similarity: L2-normalized inside).
    labels: (B,) integer labels (identities: only equality matters).
    epsilon: margin :math:`\epsilon \ge 0` (0.1).
    where: optional (B,) bool mask; dropped examples are in no pair.
    ref_embeddings: optional (R, D) float references (default: the batch,
      self-pairs excluded).
    ref_labels: (R,) integer labels of ``ref_embeddings``.
    pair_where: optional (B, R) bool mask of the candidate pairs.

  Returns:
    (B, R) bool mask of the kept pairs (positive and negative).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.metric_learning import multi_similarity_miner
    >>> from diversity_jax.losses import multi_similarity_loss
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> mask = multi_similarity_miner(x, y, epsilon=0.1)
    >>> loss = multi_similarity_loss(x, y, mine=False, pair_where=mask)
    >>> mask.shape, loss.shape
    ((8, 8), (8,))

  References:
    Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair
    Weighting for Deep Metric Learning", CVPR 2019, Sec. 4 (pair mining)
    (arXiv:1904.06627). Code: github.com/msight-tech/research-ms-loss;
    pytorch-metric-learning ``miners.MultiSimilarityMiner``.
  """
  fn = "multi_similarity_miner"
  checks.check_nonnegative(epsilon, "epsilon", fn)
  sim, pos, neg = _candidates(embeddings, labels, where, ref_embeddings,
                              ref_labels, pair_where, fn)
  pos, neg = multi_similarity_pairs(sim, pos, neg, epsilon)
  return pos | neg


def batch_hard_miner(embeddings, labels, *, where=None, ref_embeddings=None,
                     ref_labels=None, pair_where=None):
  r"""Batch-hard miner: each anchor's hardest positive and hardest negative.

  With Euclidean distances :math:`d` between L2-normalized embeddings
  (equivalently, cosine similarities), anchor :math:`i` keeps

  .. math::
    p_i = \arg\max_{p \in P_i} d(x_i, x_p), \qquad
    n_i = \arg\min_{n \in N_i} d(x_i, x_n),

  only when it has both a positive and a negative (ties: the lowest reference
  index). The mask row of a kept anchor holds exactly the pairs
  :math:`(i, p_i)` and :math:`(i, n_i)`: the batch-hard triplet.

  Args:
    embeddings: (B, D) float anchors (L2-normalized inside).
    labels: (B,) integer labels (identities).
    where: optional (B,) bool mask; dropped examples are in no pair.
    ref_embeddings: optional (R, D) float references (default: the batch,
      self-pairs excluded).
    ref_labels: (R,) integer labels of ``ref_embeddings``.
    pair_where: optional (B, R) bool mask of the candidate pairs.

  Returns:
    (B, R) bool mask with at most one positive and one negative per row.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.metric_learning import batch_hard_miner
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> batch_hard_miner(x, y).sum(axis=1)
    Array([2, 2, 2, 2, 2, 2, 2, 2], dtype=int32)

  References:
    Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", arXiv:1703.07737, 2017, Sec. 2 (batch hard).
    Code: pytorch-metric-learning ``miners.BatchHardMiner``.
  """
  fn = "batch_hard_miner"
  sim, pos, neg = _candidates(embeddings, labels, where, ref_embeddings,
                              ref_labels, pair_where, fn)
  num_refs = sim.shape[1]
  hard_pos = jnp.argmin(jnp.where(pos, sim, jnp.inf), axis=1)
  hard_neg = jnp.argmax(jnp.where(neg, sim, -jnp.inf), axis=1)
  keep = jnp.any(pos, axis=1) & jnp.any(neg, axis=1)
  cols = jnp.arange(num_refs)[None, :]
  picked = (cols == hard_pos[:, None]) | (cols == hard_neg[:, None])
  return picked & keep[:, None]


def triplet_margin_miner(embeddings, labels, *, margin=0.2,
                         type_of_triplets="all", where=None,
                         ref_embeddings=None, ref_labels=None,
                         pair_where=None):
  r"""Triplet miner by margin violation: all, hard, semi-hard or easy triplets.

  With Euclidean distances :math:`d` between L2-normalized embeddings and the
  triplet margin :math:`t_{apn} = d(a, n) - d(a, p)` over every anchor
  :math:`a`, positive :math:`p \in P_a` and negative :math:`n \in N_a`, keeps

  * ``"all"``: :math:`t \le m` (the triplets with a non-zero triplet loss);
  * ``"hard"``: :math:`t \le m` and :math:`t \le 0` (negative closer than the
    positive);
  * ``"semihard"``: :math:`0 < t \le m` (FaceNet's semi-hard negatives,
    :math:`d(a,p) < d(a,n) \le d(a,p) + m`);
  * ``"easy"``: :math:`t > m`.

  Memory: a (B, R, R) boolean mask. :func:`pairs_from_triplets` gives the
  pair mask that the pair losses take.

  Args:
    embeddings: (B, D) float anchors (L2-normalized inside).
    labels: (B,) integer labels (identities).
    margin: :math:`m` (0.2), a finite number.
    type_of_triplets: ``"all"``, ``"hard"``, ``"semihard"`` or ``"easy"``.
    where: optional (B,) bool mask; dropped examples are in no triplet.
    ref_embeddings: optional (R, D) float references (default: the batch,
      self-pairs excluded).
    ref_labels: (R,) integer labels of ``ref_embeddings``.
    pair_where: optional (B, R) bool mask of the candidate pairs (a triplet
      needs both of its pairs kept).

  Returns:
    (B, R, R) bool mask, ``mask[a, p, n]``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.metric_learning import triplet_margin_miner
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> triplet_margin_miner(x, y, type_of_triplets="semihard").shape
    (8, 8, 8)

  References:
    Schroff, Kalenichenko, Philbin, "FaceNet: A Unified Embedding for Face
    Recognition and Clustering", CVPR 2015, Sec. 3.2 (semi-hard
    negatives); Hermans, Beyer, Leibe, arXiv:1703.07737, 2017. Code:
    pytorch-metric-learning ``miners.TripletMarginMiner``.
  """
  fn = "triplet_margin_miner"
  checks.check_finite_scalar(margin, "margin", fn)
  checks.check_choice(type_of_triplets, _TRIPLET_TYPES, "type_of_triplets", fn)
  sim, pos, neg = _candidates(embeddings, labels, where, ref_embeddings,
                              ref_labels, pair_where, fn)
  dist = jnp.sqrt(jnp.maximum(2.0 - 2.0 * sim, 0.0))
  t = dist[:, None, :] - dist[:, :, None]  # [a, p, n] = d(a, n) - d(a, p)
  if type_of_triplets == "easy":
    keep = t > margin
  else:
    keep = t <= margin
    if type_of_triplets == "hard":
      keep = keep & (t <= 0)
    elif type_of_triplets == "semihard":
      keep = keep & (t > 0)
  return keep & pos[:, :, None] & neg[:, None, :]


def pairs_from_triplets(triplet_mask):
  r"""The pair mask of a triplet mask: :math:`(a, p)` and :math:`(a, n)` pairs.

  .. math::
    M_{aj} = \exists n: T_{ajn} \;\lor\; \exists p: T_{apj}

  (pytorch-metric-learning's ``convert_to_pairs`` of a triplet tuple, as a
  mask). The result is what the pair losses take as ``pair_where``.

  Args:
    triplet_mask: (B, R, R) bool mask ``[anchor, positive, negative]``.

  Returns:
    (B, R) bool pair mask.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.metric_learning import pairs_from_triplets
    >>> t = jnp.zeros((3, 3, 3), bool).at[0, 1, 2].set(True)
    >>> pairs_from_triplets(t).astype(int)
    Array([[0, 1, 1],
           [0, 0, 0],
           [0, 0, 0]], dtype=int32)

  References:
    pytorch-metric-learning ``utils.loss_and_miner_utils.convert_to_pairs``.
  """
  fn = "pairs_from_triplets"
  if jnp.result_type(triplet_mask) != jnp.bool_:
    raise TypeError(f"{fn}: `triplet_mask` must be a boolean mask, got "
                    f"{jnp.result_type(triplet_mask)}")
  checks.check_rank(triplet_mask, 3, "triplet_mask", fn)
  b, r, r2 = jnp.shape(triplet_mask)
  if r != r2:
    raise ValueError(f"{fn}: `triplet_mask` must have shape (B, R, R), got "
                     f"{(b, r, r2)}")
  return jnp.any(triplet_mask, axis=2) | jnp.any(triplet_mask, axis=1)
