"""OPIS: Operating-Point-Inconsistency Score (Zhang et al., ICLR 2024). A metric."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax.losses import _metric_pairs as pairs


def _masked_quantile(values, mask, q):
  """Linear-interpolated quantile (numpy's default) of ``values[mask]``."""
  flat = jnp.sort(jnp.where(mask, values, jnp.inf).reshape(-1))
  n = jnp.sum(mask)
  pos = q * jnp.maximum(n - 1, 0).astype(jnp.float32)
  lo = jnp.floor(pos).astype(jnp.int32)
  hi = jnp.minimum(lo + 1, jnp.maximum(n - 1, 0))
  frac = pos - lo.astype(jnp.float32)
  v_lo, v_hi = flat[lo], flat[hi]
  return jnp.where(n > 0, v_lo + (v_hi - v_lo) * frac, 0.0)


def opis(embeddings, labels, *, far_range, num_thresholds=101, where=None):
  r"""Operating-Point-Inconsistency Score of a labelled embedding set (metric).

  OPIS is the variance across classes of a per-class utility, averaged over
  the distance thresholds of a calibration range (paper Sec. 3):

  .. math::
    \mathrm{OPIS} = \frac{1}{d_{max} - d_{min}} \int_{d_{min}}^{d_{max}}
        \frac{1}{T}\sum_{c=1}^{T} \big(U_c(d) - \bar U(d)\big)^2 \, \mathrm{d}d,
    \qquad U_c(d) = \frac{2\,\mathrm{TPR}_c(d)\,\mathrm{TNR}_c(d)}
                         {\mathrm{TPR}_c(d) + \mathrm{TNR}_c(d)}

  with, for class :math:`c`, :math:`\mathrm{TPR}_c(d)` the fraction of its
  positive pairs at L2 distance :math:`\le d` and :math:`\mathrm{TNR}_c(d)` the
  fraction of the negative pairs with one end in :math:`c` at distance
  :math:`> d`; :math:`\bar U(d)` is the mean over the :math:`T` classes. The
  range :math:`[d_{min}, d_{max}]` is where the false-accept rate of all
  negative pairs goes from ``far_range[0]`` to ``far_range[1]`` (numpy-linear
  quantiles of the distances of the unordered negative pairs). The integral is
  the mean over ``num_thresholds`` equally spaced thresholds. Distances are
  Euclidean between L2-normalized embeddings. Classes with a single example
  (no positive pair) are left out; 0 when no class qualifies or there is no
  negative pair.

  Source and choices. The paper defines OPIS as "a variance-based metric"
  that "quantifies the variance in the operating characteristics across
  classes" within a target calibration range (arXiv:2307.04047, abstract);
  the ICLR 2024 review describes it as "the variance of utility score derived
  from the F-score". Three choices made here are this function's, not a
  transcription of the paper's equations: the utility is the harmonic mean of
  TPR and TNR (the F1 form), the calibration range is set by a
  false-accept-rate interval of the negative pairs, and :math:`\bar U` weighs
  classes equally. ``far_range`` therefore has no default (pick the range of
  your deployment), and the paper's epsilon-OPIS variant is not provided.
  OPIS is piecewise constant in the embeddings: its gradient is 0 almost
  everywhere (evaluation only).

  Memory: O(B^2) (row-sorted distances and searchsorted, no (B, B, T) tensor).

  Args:
    embeddings: (B, D) float embeddings.
    labels: (B,) integer class labels.
    far_range: ``(far_low, far_high)`` with ``0 <= far_low < far_high <= 1``:
      the target false-accept-rate range that defines the calibration range
      (required: pick the range of your deployment).
    num_thresholds: thresholds in the calibration range, >= 2 (101).
    where: optional (B,) bool mask; dropped examples leave the set.

  Returns:
    f32 scalar (lower is more threshold-consistent).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.losses import opis
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (12, 4))
    >>> opis(x, jnp.arange(12) % 3, far_range=(0.01, 0.1)).shape
    ()

  References:
    Zhang, Xu, Tang, Fang, Wu, Tighe, Xing, "Threshold-Consistent Margin Loss
    for Open-World Deep Metric Learning", ICLR 2024 (arXiv:2307.04047), Sec. 3
    (OPIS; see "Source and choices" above). Checked by
    ``tests/losses/test_metric_opis.py`` against a brute-force NumPy
    statement of the definition above.
  """
  fn = "opis"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  if (not isinstance(far_range, (tuple, list)) or len(far_range) != 2
      or not all(isinstance(v, (int, float)) for v in far_range)
      or not 0.0 <= far_range[0] < far_range[1] <= 1.0):
    raise ValueError(f"{fn}: `far_range` must be (low, high) with 0 <= low < "
                     f"high <= 1, got {far_range!r}")
  if (not isinstance(num_thresholds, int) or isinstance(num_thresholds, bool)
      or num_thresholds < 2):
    raise ValueError(f"{fn}: `num_thresholds` must be an int >= 2, got "
                     f"{num_thresholds!r}")

  if x.shape[0] == 0:    # an empty set has no class: score 0
    return jnp.zeros((), jnp.float32)
  x = jax.lax.stop_gradient(x)
  sim = pairs.cosine_similarity_matrix(x)
  dist = jnp.sqrt(jnp.maximum(2.0 - 2.0 * sim, 0.0))
  pos, neg = pairs.pair_masks(labels, where)

  b = labels.shape[0]
  neg_pairs = neg & (jnp.arange(b)[:, None] < jnp.arange(b)[None, :])  # i < j
  d_min = _masked_quantile(dist, neg_pairs, far_range[0])
  d_max = _masked_quantile(dist, neg_pairs, far_range[1])
  grid = jnp.linspace(0.0, 1.0, num_thresholds, dtype=jnp.float32)
  thresholds = d_min + (d_max - d_min) * grid                      # (T,)

  # Per-anchor counts at every threshold from row-sorted distances.
  pos_sorted = jnp.sort(jnp.where(pos, dist, jnp.inf), axis=1)
  neg_sorted = jnp.sort(jnp.where(neg, dist, jnp.inf), axis=1)
  count_le = jax.vmap(lambda row: jnp.searchsorted(row, thresholds,
                                                   side="right"))
  tp = count_le(pos_sorted).astype(jnp.float32)                    # (B, T)
  fp = count_le(neg_sorted).astype(jnp.float32)
  tn = jnp.sum(neg, axis=1, keepdims=True).astype(jnp.float32) - fp

  # Class totals, read at every member of the class.
  keep = jnp.ones_like(labels, jnp.bool_) if where is None else where
  same = ((labels[:, None] == labels[None, :]) & keep[:, None]
          & keep[None, :]).astype(jnp.float32)
  n_class = jnp.sum(same, axis=1)
  n_kept = jnp.sum(keep).astype(jnp.float32)
  hp = jax.lax.Precision.HIGHEST
  tp_c = jnp.matmul(same, tp, precision=hp)
  tn_c = jnp.matmul(same, tn, precision=hp)
  num_pos = (n_class * (n_class - 1.0))[:, None]
  num_neg = (n_class * (n_kept - n_class))[:, None]
  valid = keep & (n_class >= 2) & (n_kept - n_class > 0)
  tpr = tp_c / jnp.maximum(num_pos, 1.0)
  tnr = tn_c / jnp.maximum(num_neg, 1.0)
  denom = tpr + tnr
  utility = jnp.where(denom > 0, 2.0 * tpr * tnr / jnp.where(denom > 0, denom,
                                                              1.0), 0.0)

  # Mean over classes: each member carries 1 / class size.
  weight = jnp.where(valid, 1.0 / jnp.maximum(n_class, 1.0), 0.0)[:, None]
  num_classes = jnp.sum(weight)
  safe_classes = jnp.maximum(num_classes, 1e-12)
  mean_u = jnp.sum(weight * utility, axis=0) / safe_classes        # (T,)
  var_u = jnp.sum(weight * jnp.square(utility - mean_u), axis=0) / safe_classes
  return label_range.nan_where_invalid(
      jnp.where(num_classes > 0, jnp.mean(var_u), 0.0),
      pairs.nonfinite_batch(x, where))
