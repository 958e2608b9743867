"""AnyLoss: classification metrics turned into losses (Han, Moniz & Chawla 2024).

The predicted probability is "amplified" towards 0/1 by a steep sigmoid, a
soft confusion matrix is built over the batch, and the loss is 1 - metric.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics

_METRICS = ("accuracy", "f_beta", "g_mean", "balanced_accuracy")


def _safe_sqrt(x):
  positive = x > 0
  # 0 * x: 0 for x <= 0, NaN for a NaN x (NaN in, NaN out).
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1.0)), 0.0 * x)


def anyloss(logits: jax.Array, labels: jax.Array, *, metric: str = "f_beta",
            amplification: float = 73.0, beta: float = 1.0,
            where=None) -> jax.Array:
  r"""AnyLoss for binary classification: ``1 - metric`` of a soft confusion matrix.

  With :math:`p_i = \sigma(\text{logit}_i)` and the approximation function
  :math:`\hat y_i = A(p_i) = 1 / (1 + e^{-L (p_i - 1/2)})`, over the (kept)
  examples of the batch, :math:`N` the batch size:

  .. math::
    TP = \textstyle\sum_i y_i \hat y_i,\ FN = \sum_i y_i (1 - \hat y_i),\
    FP = \sum_i (1 - y_i) \hat y_i,\ TN = \sum_i (1 - y_i)(1 - \hat y_i)

  and the loss is :math:`1 - M` with

  * ``accuracy``: :math:`M = (TP + TN) / N`
  * ``f_beta``: :math:`M = (1 + \beta^2) TP / ((1 + \beta^2) TP + \beta^2 FN
    + FP)`
  * ``g_mean``: :math:`M = \sqrt{TP\, TN / ((TP + FN)(TN + FP))}`
  * ``balanced_accuracy``: :math:`M = \tfrac12 (TP / (TP + FN) + TN / (TN +
    FP))`

  Unlike the reference (which uses the training-set size), ``N`` is the
  batch size (number of kept examples). A ratio whose denominator is 0 (no
  positives, or no negatives, in the batch) counts as 0, so such a batch
  gives a finite loss and no NaN; an empty batch gives loss 0.

  Args:
    logits: ``(n,)`` floating scores of the positive class (one logit per
      example; the probability is ``sigmoid(logits)``).
    labels: ``(n,)`` integer labels in ``{0, 1}``.
    metric: one of ``"accuracy"``, ``"f_beta"``, ``"g_mean"``,
      ``"balanced_accuracy"``.
    amplification: ``L > 0`` (the authors' README uses 73).
    beta: ``beta > 0`` of the F-beta score.
    where: optional ``(n,)`` boolean mask; ``False`` drops an example from the
      batch (from every sum and from ``N``).

  Returns:
    The scalar batch loss in ``[0, 1]``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> logits, labels = jnp.array([3.0, -2.0, 0.5]), jnp.array([1, 0, 1])
    >>> losses.anyloss(logits, labels, metric="accuracy").shape
    ()

  References:
    Han, Moniz & Chawla, "AnyLoss: Transforming Classification Metrics into
    Loss Functions", KDD 2024 (arXiv:2405.14745), Sec. 3: the approximation
    function :math:`A(p)` and the amplified confusion matrix, and the metric
    losses. :math:`A` and the four losses are checked against the authors' code (a numpy port in the
    tests), to which the TP/FN/FP/TN forms above are algebraically equal
    (:math:`TP + FN = \sum y`, :math:`TN + FP = N - \sum y`):
    ``doheonhan/anyloss@fb98590`` ``README.md`` (``Ours_Accu``,
    ``Ours_Fbeta``, ``Ours_Gmean``, ``Ours_BAccu``) and
    ``doheonhan/anyloss@83a4efc`` ``AnyLoss - Code.ipynb`` (``L = 73``;
    ``cost_function_{acc,fbeta,gmean,balacc}``, which use the training-set
    size as N; its single-layer code applies :math:`A` to
    :math:`p = \sigma(z)` as here, its Keras MLP to an unsquashed output) and
    ``doheonhan/anyloss_extension`` README (batch N, ``L`` in [2, 70]).
  """
  fn = "anyloss"
  checks.check_floating(logits, "logits", fn)
  checks.check_rank(logits, 1, "logits", fn)
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, jnp.shape(logits), "labels", fn)
  checks.check_label_range(labels, 2, fn)
  checks.check_choice(metric, _METRICS, "metric", fn)
  checks.check_positive(amplification, "amplification", fn)
  checks.check_positive(beta, "beta", fn)
  checks.check_where(where, jnp.shape(logits), fn)
  labels, invalid = label_range.sanitize(labels, 2)
  logits = numerics.promote_to_f32(logits)
  y_hat = jax.nn.sigmoid(amplification * (jax.nn.sigmoid(logits) - 0.5))
  y = labels.astype(y_hat.dtype)
  keep = (jnp.ones_like(y) if where is None
          else jnp.broadcast_to(where, y.shape).astype(y.dtype))
  y, y_hat = y * keep, y_hat * keep
  n = jnp.sum(keep)
  tp = jnp.sum(y * y_hat)
  fn_ = jnp.sum(y * (1.0 - y_hat))
  fp = jnp.sum((keep - y) * y_hat)
  tn = jnp.sum((keep - y) * (1.0 - y_hat))
  if metric == "accuracy":
    value = numerics.safe_divide(tp + tn, n)
  elif metric == "f_beta":
    b2 = beta * beta
    value = numerics.safe_divide((1.0 + b2) * tp,
                                 (1.0 + b2) * tp + b2 * fn_ + fp)
  elif metric == "g_mean":
    value = _safe_sqrt(numerics.safe_divide(tp * tn, (tp + fn_) * (tn + fp)))
  else:
    value = 0.5 * (numerics.safe_divide(tp, tp + fn_)
                   + numerics.safe_divide(tn, tn + fp))
  return label_range.nan_where_invalid(jnp.where(n > 0, 1.0 - value, 0.0),
                                      invalid, where)
