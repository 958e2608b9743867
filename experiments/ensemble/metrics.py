"""Evaluation measures of an ensemble: accuracy, NLL, ECE, diversity.

Every function takes log-probabilities (``log_softmax`` of one model's
logits, or :func:`ensemble_log_probs` of stacked members) and integer labels,
and is ``jax.jit``-able. ``summarize`` returns the row of the results table.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import jax
import jax.numpy as jnp

from diversity_jax import diversity

ECE_BINS = 15  # Guo et al. 2017, Sec. 2 (and their Table 1): M = 15 bins


def ensemble_log_probs(member_logits: jax.Array) -> jax.Array:
  r"""Log of the ensemble's predictive distribution (mean of member probs).

  .. math::

    \log \bar p(y \mid x) = \log \frac1M \sum_m \mathrm{softmax}(z_m)_y
      = \operatorname{logsumexp}_m \log p_m(y \mid x) - \log M

  Args:
    member_logits: ``(M, N, K)`` logits of ``M`` members.

  Returns:
    ``(N, K)`` f32 log-probabilities.

  Example:
    >>> import jax.numpy as jnp
    >>> z = jnp.array([[[10., -10.]], [[-10., 10.]]])
    >>> jnp.exp(ensemble_log_probs(z)).round(3).tolist()
    [[0.5, 0.5]]

  References:
    Lakshminarayanan, Pritzel & Blundell, "Simple and Scalable Predictive
    Uncertainty Estimation using Deep Ensembles", NeurIPS 2017, Sec. 2.4
    (the ensemble as a uniform mixture of the members' distributions).
  """
  log_p = jax.nn.log_softmax(member_logits.astype(jnp.float32), axis=-1)
  return jax.nn.logsumexp(log_p, axis=0) - math.log(member_logits.shape[0])


def _mean(values: jax.Array, where) -> jax.Array:
  if where is None:
    return jnp.mean(values)
  w = where.astype(values.dtype)
  return jnp.sum(values * w) / jnp.sum(w)


def negative_log_likelihood(log_probs: jax.Array, labels: jax.Array, *,
                            where: Optional[jax.Array] = None) -> jax.Array:
  r"""Mean negative log-likelihood :math:`-\frac1N \sum_n \log p(y_n|x_n)`.

  Args:
    log_probs: ``(N, K)`` log-probabilities.
    labels: ``(N,)`` integer labels in ``[0, K)``.
    where: optional ``(N,)`` boolean mask of the examples averaged over.

  Returns:
    Scalar f32 (nats).

  Example:
    >>> import jax.numpy as jnp
    >>> lp = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]]))
    >>> round(float(negative_log_likelihood(lp, jnp.array([0, 1]))), 4)
    0.4904

  References:
    Lakshminarayanan et al., NeurIPS 2017, Sec. 2.2 (NLL as the proper
    scoring rule the members are trained and evaluated with).
  """
  picked = jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  return -_mean(picked, where)


def expected_calibration_error(log_probs: jax.Array, labels: jax.Array, *,
                               num_bins: int = ECE_BINS,
                               where: Optional[jax.Array] = None
                               ) -> jax.Array:
  r"""Expected calibration error with equal-width confidence bins.

  With confidence :math:`c_n = \max_k p_{nk}`, prediction
  :math:`\hat y_n = \arg\max_k p_{nk}` and bins
  :math:`B_b = \{n : c_n \in (\tfrac{b-1}{B}, \tfrac{b}{B}]\}`,

  .. math::

    \mathrm{ECE} = \sum_{b=1}^{B} \frac{|B_b|}{N}\,
      \Big| \frac{1}{|B_b|}\sum_{n \in B_b} \mathbb{1}[\hat y_n = y_n]
      - \frac{1}{|B_b|}\sum_{n \in B_b} c_n \Big|

  Empty bins contribute 0.

  Args:
    log_probs: ``(N, K)`` log-probabilities.
    labels: ``(N,)`` integer labels.
    num_bins: number of equal-width bins ``B`` (static; Guo et al.: 15).
    where: optional ``(N,)`` boolean mask; ``N`` counts kept examples only.

  Returns:
    Scalar f32 in ``[0, 1]``.

  Example:
    >>> import jax.numpy as jnp
    >>> lp = jnp.log(jnp.array([[0.9, 0.1], [0.9, 0.1]]))
    >>> round(float(expected_calibration_error(lp, jnp.array([0, 1]))), 4)
    0.4

  References:
    Guo, Pleiss, Sun & Weinberger, "On Calibration of Modern Neural
    Networks", ICML 2017, Eq. (3) (ECE, ``M = 15`` bins in their
    experiments); Naeini, Cooper & Hauskrecht, AAAI 2015 (the estimator).
  """
  probs = jnp.exp(log_probs.astype(jnp.float32))
  conf = jnp.max(probs, axis=-1)
  correct = (jnp.argmax(probs, axis=-1) == labels).astype(jnp.float32)
  # Bin b holds confidences in ((b - 1) / B, b / B]: ceil(c * B) - 1.
  bins = jnp.clip(jnp.ceil(conf * num_bins).astype(jnp.int32) - 1, 0,
                  num_bins - 1)
  w = jnp.ones_like(conf) if where is None else where.astype(conf.dtype)
  gap = jax.ops.segment_sum((correct - conf) * w, bins, num_segments=num_bins)
  return jnp.sum(jnp.abs(gap)) / jnp.sum(w)


def summarize(log_probs: jax.Array, labels: jax.Array, *,
              where: Optional[jax.Array] = None) -> Dict[str, jax.Array]:
  """``{'accuracy', 'nll', 'ece'}`` of one predictive distribution."""
  correct = (jnp.argmax(log_probs, axis=-1) == labels).astype(jnp.float32)
  return {"accuracy": _mean(correct, where),
          "nll": negative_log_likelihood(log_probs, labels, where=where),
          "ece": expected_calibration_error(log_probs, labels, where=where)}


def member_diversity(member_logits: jax.Array, *,
                     where: Optional[jax.Array] = None
                     ) -> Dict[str, jax.Array]:
  """Mean over examples of the members' disagreement and prediction Vendi.

  ``disagreement``: :func:`diversity_jax.diversity.pairwise_disagreement`
  (fraction of member pairs with different top-1 labels);
  ``vendi``: the order-1 Vendi score of the ``M`` members' probability
  vectors of each example (cosine kernel,
  :func:`diversity_jax.diversity.vendi_score_from_features`), in ``[1, M]``:
  the effective number of distinct predictions. ``where``: optional
  ``(N,)`` mask of the examples averaged over.
  """
  probs = jax.nn.softmax(member_logits.astype(jnp.float32), axis=-1)
  per_example = jax.vmap(diversity.vendi_score_from_features, in_axes=1)
  return {"disagreement": _mean(
              diversity.pairwise_disagreement(member_logits), where),
          "vendi": _mean(per_example(probs), where)}
