"""Signal-to-noise-ratio distance and the SNR contrastive loss (Yuan et al. 2019)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics
from diversity_jax.losses import _metric_pairs as pairs

_VAR_FLOOR = 1e-12


def _snr_matrix(x, y):
  """``var(y_j - x_i) / var(x_i)`` for all (i, j) without a (B, R, D) tensor.

  Uses ``var(a - b) = var(a) + var(b) - 2 cov(a, b)`` over the feature axis
  (ddof=1; the ddof cancels in the ratio).
  """
  d = x.shape[-1]
  xc = x - jnp.mean(x, axis=-1, keepdims=True)
  yc = y - jnp.mean(y, axis=-1, keepdims=True)
  var_x = jnp.sum(xc * xc, axis=-1) / (d - 1)
  var_y = jnp.sum(yc * yc, axis=-1) / (d - 1)
  cov = jnp.matmul(xc, yc.T, precision=jax.lax.Precision.HIGHEST) / (d - 1)
  noise = jnp.maximum(var_x[:, None] + var_y[None, :] - 2.0 * cov, 0.0)
  return noise / jnp.maximum(var_x, _VAR_FLOOR)[:, None]


def snr_distance(embeddings, ref_embeddings=None, *, normalize=True):
  r"""Signal-to-noise-ratio distance matrix (asymmetric, smaller = closer).

  .. math::
    d_{SNR}(h_i, h_j) = \frac{\operatorname{var}(h_j - h_i)}{\operatorname{var}(h_i)}

  (paper Sec. 3: noise variance over anchor signal variance), for every anchor
  :math:`h_i` in ``embeddings`` and every :math:`h_j` in ``ref_embeddings``.
  Variances are over the feature axis. Computed from centered Gram matrices, so
  memory is O(B R), not O(B R D). A constant anchor (zero variance) would give
  inf; its variance is floored at 1e-12 so the result stays finite.
  Matches ``pytorch_metric_learning.distances.SNRDistance`` (which
  L2-normalizes first, as ``normalize=True`` does).

  Args:
    embeddings: (B, D) float anchors, D >= 2.
    ref_embeddings: optional (R, D) float references (default: ``embeddings``).
    normalize: L2-normalize both inputs first (pml default True).

  Returns:
    (B, R) f32 distances.

  Example:
    >>> import jax
    >>> from diversity_jax.losses import snr_distance
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
    >>> snr_distance(x).shape
    (4, 4)

  References:
    Yuan et al., "Signal-to-Noise Ratio: A Robust
    Distance Metric for Deep Metric Learning", CVPR 2019, Sec. 3 (SNR
    distance definition). Code: pytorch-metric-learning ``SNRDistance``.
  """
  fn = "snr_distance"
  checks.check_floating(embeddings, "embeddings", fn)
  checks.check_rank(embeddings, 2, "embeddings", fn)
  if jnp.shape(embeddings)[1] < 2:
    raise ValueError(f"{fn}: `embeddings` needs at least 2 features for a "
                     f"variance, got shape {jnp.shape(embeddings)}")
  x = numerics.promote_to_f32(embeddings).astype(jnp.float32)
  if ref_embeddings is None:
    y = x
  else:
    checks.check_floating(ref_embeddings, "ref_embeddings", fn)
    checks.check_rank(ref_embeddings, 2, "ref_embeddings", fn)
    checks.check_shape(ref_embeddings, (None, x.shape[1]), "ref_embeddings", fn)
    y = numerics.promote_to_f32(ref_embeddings).astype(jnp.float32)
  if normalize:
    x = pairs.l2_normalize(x)
    y = pairs.l2_normalize(y)
  return _snr_matrix(x, y)


def snr_contrastive_loss(embeddings, labels, *, pos_margin=0.0, neg_margin=1.0,
                         where=None, ref_embeddings=None, ref_labels=None,
                         pair_where=None):
  r"""Contrastive loss on the SNR distance (batch scalar).

  With :math:`d_{ij}` = ``snr_distance`` over ordered pairs (self excluded),

  .. math::
    L = \operatorname{mean}_{\ne 0}\{[d_{ij} - m_+]_+\}_{(i,j)\in P}
      + \operatorname{mean}_{\ne 0}\{[m_- - d_{ij}]_+\}_{(i,j)\in N}

  where :math:`\operatorname{mean}_{\ne 0}` averages the non-zero pair losses
  only (pml ``AvgNonZeroReducer``) and is 0 when there are none (no positive or
  no negative pair: loss 0, zero gradient). Paper Sec. 4 (SNR contrastive
  loss) without its zero-mean embedding regularizer; equals
  ``pytorch_metric_learning.losses.SignalToNoiseRatioContrastiveLoss``.

  Args:
    embeddings: (B, D) float embeddings, D >= 2 (L2-normalized inside).
    labels: (B,) integer class labels.
    pos_margin: :math:`m_+ \ge 0` (0).
    neg_margin: :math:`m_- \ge 0` (1).
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
    >>> from diversity_jax.losses import snr_contrastive_loss
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 16))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> snr_contrastive_loss(x, y).shape
    ()

  References:
    Yuan et al., "Signal-to-Noise Ratio: A Robust Distance Metric for Deep
    Metric Learning", CVPR 2019, Sec. 3 (distance) and Sec. 4 (contrastive
    loss). Code:
    pytorch-metric-learning ``SignalToNoiseRatioContrastiveLoss``.
  """
  fn = "snr_contrastive_loss"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn,
                                          min_dim=2)
  checks.check_nonnegative(pos_margin, "pos_margin", fn)
  checks.check_nonnegative(neg_margin, "neg_margin", fn)
  y, pos, neg, invalid = pairs.query_reference_pairs(
      x, labels, where, ref_embeddings, ref_labels, pair_where, fn=fn)
  dist = _snr_matrix(pairs.l2_normalize(x), pairs.l2_normalize(y))
  pos_loss = jax.nn.relu(dist - pos_margin)
  neg_loss = jax.nn.relu(neg_margin - dist)
  pos_term = pairs.masked_pair_mean(pos_loss, pos & (pos_loss > 0))
  neg_term = pairs.masked_pair_mean(neg_loss, neg & (neg_loss > 0))
  return label_range.nan_where_invalid(pos_term + neg_term, invalid)
