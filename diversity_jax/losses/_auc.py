"""Mann-Whitney (AUC) pairwise loss: softplus of negative-minus-positive scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def mw_auc_loss(scores: jax.Array, labels: jax.Array, *, pair_mask=None,
                where=None) -> jax.Array:
  r"""Mann-Whitney / AUC surrogate over every (positive, negative) pair.

  .. math::
    \mathcal{L} = \frac{1}{|\mathcal{P}|}
      \sum_{(i, j) \in \mathcal{P}} \log\big(1 + e^{s_j - s_i}\big),
    \quad \mathcal{P} = \{(i, j) : y_i = 1,\ y_j = 0,\ M_{ij}\}

  i.e. binary cross-entropy that each positive outranks each negative, the
  smooth surrogate of :math:`1 - \mathrm{AUC}` (the Mann-Whitney U statistic).
  Pairs are compared globally, across queries, unless ``pair_mask`` restricts
  them. For a retrieval similarity matrix ``S`` (queries x passages) pass
  ``scores=S.ravel()`` and ``labels=positives.ravel()``; a same-query
  ``pair_mask`` recovers per-query ranking. The loss is the mean over
  pairs (another normalization only rescales it, like a learning-rate
  change).

  Args:
    scores: ``(N,)`` floating scores (higher = more positive).
    labels: ``(N,)`` integer labels in ``{0, 1}``; 1 marks positives.
    pair_mask: optional ``(N, N)`` boolean; pair ``(i, j)`` (``i`` positive,
      ``j`` negative) counts only where ``pair_mask[i, j]``.
    where: optional ``(N,)`` boolean; examples where it is False are dropped
      from the batch (from every pair).

  Returns:
    A scalar float32: the mean over counted pairs, 0 when there is none.
    Memory is O(N^2); chunk the batch for very large N.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> s = jnp.array([2.0, -1.0, 0.5])
    >>> float(losses.mw_auc_loss(s, jnp.array([1, 0, 0]))) > 0
    True

  References:
    Sheikholeslami, Hosseini, Bechard, Daruru, Rajeswar, "Optimizing What
    Matters: AUC-Driven Learning for Robust Neural Retrieval", arXiv
    2510.00137, 2025 (MW loss: BCE over positive-minus-negative score
    differences, Fig. 2, whose terms are "summed up to obtain the final
    loss"; this function takes their mean);
    Mann & Whitney, Ann. Math. Statist. 1947 (U statistic); Yan et al.,
    "Optimizing Classifier Performance via an Approximation to the
    Wilcoxon-Mann-Whitney Statistic", ICML 2003 (smooth pairwise surrogates
    of the WMW statistic).
  """
  fn = "mw_auc_loss"
  checks.check_floating(scores, "scores", fn)
  checks.check_rank(scores, 1, "scores", fn)
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, jnp.shape(scores), "labels", fn)
  checks.check_label_range(labels, 2, fn)
  n = jnp.shape(scores)[0]
  if pair_mask is not None:
    if jnp.result_type(pair_mask) != jnp.bool_:
      raise TypeError(f"{fn}: `pair_mask` must be a boolean mask, got "
                      f"{jnp.result_type(pair_mask)}")
    checks.check_shape(pair_mask, (n, n), "pair_mask", fn)
  checks.check_where(where, (n,), fn)
  labels, invalid = label_range.sanitize(labels, 2)
  scores = numerics.promote_to_f32(scores)
  keep = jnp.ones((n,), bool) if where is None else jnp.broadcast_to(where,
                                                                      (n,))
  pos = (labels == 1) & keep
  neg = (labels == 0) & keep
  pairs = pos[:, None] & neg[None, :]
  if pair_mask is not None:
    pairs = pairs & pair_mask
  diff = scores[None, :] - scores[:, None]  # s_j - s_i: negative minus positive
  return label_range.nan_where_invalid(
      numerics.masked_mean(jax.nn.softplus(diff), pairs), invalid, where)
