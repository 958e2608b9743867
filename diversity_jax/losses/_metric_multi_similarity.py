"""Multi-Similarity loss with its pair miner (Wang et al., CVPR 2019)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.losses import _metric_pairs as pairs


def multi_similarity_pairs(sim, pos, neg, epsilon):
  """The MS miner on a (B, R) similarity matrix: the kept (pos, neg) masks.

  A negative is kept if ``S > min(S[pos]) - epsilon`` over the anchor's
  positives, a positive if ``S < max(S[neg]) + epsilon`` over its negatives.
  The selection carries no gradient.
  """
  s = jax.lax.stop_gradient(sim)
  min_pos = jnp.min(jnp.where(pos, s, jnp.inf), axis=1, keepdims=True,
                    initial=jnp.inf)
  max_neg = jnp.max(jnp.where(neg, s, -jnp.inf), axis=1, keepdims=True,
                    initial=-jnp.inf)
  return pos & (s - epsilon < max_neg), neg & (s + epsilon > min_pos)


def multi_similarity_loss(embeddings, labels, *, alpha=2.0, beta=50.0,
                          base=0.5, epsilon=0.1, mine=True, where=None,
                          ref_embeddings=None, ref_labels=None,
                          pair_where=None):
  r"""Multi-Similarity loss per anchor, with the MS pair miner.

  With cosine similarities :math:`S_{ik}`, positives :math:`P_i` and negatives
  :math:`N_i` of anchor :math:`i` (self-pairs excluded):

  .. math::
    \ell_i = \frac{1}{\alpha}\log\Big(1 + \sum_{k\in P_i} e^{-\alpha(S_{ik}-\lambda)}\Big)
           + \frac{1}{\beta}\log\Big(1 + \sum_{k\in N_i} e^{\beta(S_{ik}-\lambda)}\Big)

  with :math:`\lambda` = ``base``. When ``mine`` is True the pairs are first
  selected by the MS miner (paper Sec. 4, pair mining): a negative is kept if
  :math:`S_{ik} > \min_{k' \in P_i} S_{ik'} - \epsilon`, a positive if
  :math:`S_{ik} < \max_{k' \in N_i} S_{ik'} + \epsilon` (the selection carries no
  gradient). An anchor with no kept pair has loss 0 and zero gradient. The mean
  of the output over the batch is the paper's MS loss (Sec. 4, pair weighting)
  and equals
  ``pytorch_metric_learning.losses.MultiSimilarityLoss`` applied with
  ``miners.MultiSimilarityMiner(epsilon)``. (The authors' original code also
  skips an anchor when either mined set is empty and drops positives with
  :math:`S \ge 1 - 10^{-5}`; pml and this function keep the non-empty term.)

  Memory: a few (B, B) buffers (no (B, B, D) tensor).

  Args:
    embeddings: (B, D) float embeddings (L2-normalized inside).
    labels: (B,) integer class labels.
    alpha: positive scale :math:`\alpha > 0` (paper and pml default 2).
    beta: negative scale :math:`\beta > 0` (pml default 50; the authors'
      config uses 40).
    base: similarity offset :math:`\lambda` (pml and authors' code 0.5; the
      paper's text says 1).
    epsilon: mining margin :math:`\epsilon \ge 0` (0.1).
    mine: apply the MS miner (True) or use all pairs (False).
    where: optional (B,) bool mask; dropped examples are removed from the batch
      (they are nobody's positive or negative) and get loss 0.
    ref_embeddings: optional (R, D) float references (e.g. a cross-batch
      memory); every anchor is then paired with every reference instead of
      with the rest of the batch (pml ``ref_emb``).
    ref_labels: (R,) integer labels of ``ref_embeddings``.
    pair_where: optional (B, R) bool mask of the pairs to use (a miner's
      output, see :mod:`diversity_jax.metric_learning`); the MS miner
      (``mine``) then selects among these pairs.

  Returns:
    (B,) f32 per-anchor losses; ``.mean()`` is the paper's number.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.losses import multi_similarity_loss
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> multi_similarity_loss(x, y).shape
    (8,)

  References:
    Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair
    Weighting for Deep Metric Learning", CVPR 2019, Sec. 4: mining condition
    and the MS loss equation (arXiv:1904.06627).
    Code: github.com/msight-tech/research-ms-loss;
    pytorch-metric-learning ``MultiSimilarityLoss`` / ``MultiSimilarityMiner``.
  """
  fn = "multi_similarity_loss"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  checks.check_positive(alpha, "alpha", fn)
  checks.check_positive(beta, "beta", fn)
  checks.check_scalar_in_range(base, "base", fn, low=-1.0, high=1.0)
  checks.check_nonnegative(epsilon, "epsilon", fn)

  y, pos, neg, invalid = pairs.query_reference_pairs(
      x, labels, where, ref_embeddings, ref_labels, pair_where, fn=fn)
  sim = pairs.cosine_similarity_matrix(x, None if ref_embeddings is None else y)
  if mine:
    pos, neg = multi_similarity_pairs(sim, pos, neg, epsilon)
  pos_loss = pairs.masked_logsumexp_add_one(alpha * (base - sim), pos) / alpha
  neg_loss = pairs.masked_logsumexp_add_one(beta * (sim - base), neg) / beta
  return numerics.apply_where(pos_loss + neg_loss, where, invalid)
