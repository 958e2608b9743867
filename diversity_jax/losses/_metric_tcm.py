"""Threshold-Consistent Margin (TCM) regularizer (Zhang et al., ICLR 2024)."""

from __future__ import annotations

import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax.losses import _metric_pairs as pairs


def threshold_consistent_margin_loss(embeddings, labels, *, lambda_plus=1.0,
                                     lambda_minus=1.0, margin_plus=0.9,
                                     margin_minus=0.5, where=None,
                                     ref_embeddings=None, ref_labels=None,
                                     pair_where=None):
  r"""Threshold-Consistent Margin (TCM) regularizer for a batch (scalar).

  With cosine similarities :math:`s` of the positive pairs :math:`P` and
  negative pairs :math:`N` of the batch (ordered pairs, self-pairs excluded):

  .. math::
    L = \lambda^+ \frac{\sum_{P} (m^+ - s)\,1[s \le m^+]}{\sum_{P} 1[s \le m^+]}
      + \lambda^- \frac{\sum_{N} (s - m^-)\,1[s \ge m^-]}{\sum_{N} 1[s \ge m^-]}

  Each term is 0 when its denominator is 0 (no hard pair), so a batch without
  positive or negative pairs gives 0 with zero gradient. Only hard pairs (inside
  the margins) get gradient. It is added to a base loss (paper Sec. 4).
  Matches ``pytorch_metric_learning.losses.ThresholdConsistentMarginLoss``.

  Args:
    embeddings: (B, D) float embeddings (L2-normalized inside).
    labels: (B,) integer class labels.
    lambda_plus: weight of the positive term, >= 0 (1).
    lambda_minus: weight of the negative term, >= 0 (1).
    margin_plus: positive cosine margin :math:`m^+` in [-1, 1] (0.9).
    margin_minus: negative cosine margin :math:`m^-` in [-1, 1] (0.5).
    where: optional (B,) bool mask; dropped examples leave the batch.
    ref_embeddings: optional (R, D) float references (e.g. a cross-batch
      memory): pairs are then (batch example, reference).
    ref_labels: (R,) integer labels of ``ref_embeddings``.
    pair_where: optional (B, R) bool mask of the pairs to use (a miner's
      output, see :mod:`diversity_jax.metric_learning`).

  Returns:
    f32 scalar.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.losses import threshold_consistent_margin_loss
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> threshold_consistent_margin_loss(x, y).shape
    ()

  References:
    Zhang, Xu, Tang, Fang, Wu, Tighe, Xing, "Threshold-Consistent Margin Loss
    for Open-World Deep Metric Learning", ICLR 2024, Sec. 4 (TCM loss
    equation) (arXiv:2307.04047). Code: pytorch-metric-learning
    ``ThresholdConsistentMarginLoss``.
  """
  fn = "threshold_consistent_margin_loss"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  checks.check_nonnegative(lambda_plus, "lambda_plus", fn)
  checks.check_nonnegative(lambda_minus, "lambda_minus", fn)
  checks.check_scalar_in_range(margin_plus, "margin_plus", fn, low=-1.0, high=1.0)
  checks.check_scalar_in_range(margin_minus, "margin_minus", fn, low=-1.0,
                               high=1.0)
  y, pos, neg, invalid = pairs.query_reference_pairs(
      x, labels, where, ref_embeddings, ref_labels, pair_where, fn=fn)
  sim = pairs.cosine_similarity_matrix(x, None if ref_embeddings is None else y)
  hard_pos = pos & (sim <= margin_plus)
  hard_neg = neg & (sim >= margin_minus)
  pos_term = pairs.masked_pair_mean(margin_plus - sim, hard_pos)
  neg_term = pairs.masked_pair_mean(sim - margin_minus, hard_neg)
  return label_range.nan_where_invalid(
      lambda_plus * pos_term + lambda_minus * neg_term, invalid)
