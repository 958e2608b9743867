"""UNPG: unified negative pair generation on ArcFace / CosFace heads."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics
from diversity_jax.losses import _metric_pairs as pairs
from diversity_jax.losses._metric_normalized_softmax import class_cosines
from diversity_jax.losses._metric_normalized_softmax import validate_class_weights

_ACOS_CLIP = 1.0 - 1e-7


def _margin_cosines(cos, labels, head: str, margin: float):
  """Applies the ArcFace / CosFace margin to the target-class cosines."""
  one_hot = jax.nn.one_hot(labels, cos.shape[1], dtype=jnp.bool_)
  if head == "arcface":
    # cos(theta + m); the clip keeps d/dcos of arccos finite at |cos| = 1.
    theta = jnp.arccos(jnp.clip(cos, -_ACOS_CLIP, _ACOS_CLIP))
    target = jnp.cos(theta + margin)
  else:
    target = cos - margin
  return jnp.where(one_hot, target, cos), one_hot


def whisker_negative_mask(sim, neg_upper, whisker: float):
  """Box-and-whisker filter of negative-pair similarities (fixed size).

  ``neg_upper`` marks the candidate negatives (upper triangle). With the kept
  values sorted, ``Q1 = sorted[n // 4]``, ``Q3 = sorted[(3 n) // 4]`` (index
  quartiles, as the authors' code) and a value is kept when it lies in
  ``[Q1 - w IQR, Q3 + w IQR]``. No boolean indexing: invalid entries sort to
  +inf and the result is a (B, B) mask. The selection carries no gradient.
  """
  s = jax.lax.stop_gradient(sim)
  flat = jnp.where(neg_upper, s, jnp.inf).reshape(-1)
  n = jnp.sum(neg_upper)
  srt = jnp.sort(flat)
  last = flat.shape[0] - 1
  q1 = srt[jnp.clip(n // 4, 0, last)]
  q3 = srt[jnp.clip((3 * n) // 4, 0, last)]
  has = n > 0
  q1 = jnp.where(has, q1, 0.0)
  q3 = jnp.where(has, q3, 0.0)
  iqr = q3 - q1
  return neg_upper & (s >= q1 - whisker * iqr) & (s <= q3 + whisker * iqr)


def unpg_loss(embeddings, labels, weights, *, head="arcface", scale=64.0,
              margin=0.5, whisker=1.5, unify_negatives=True, where=None):
  r"""UNPG loss: margin softmax with filtered in-batch negative pairs appended.

  With the margin-adjusted target cosine :math:`\psi_i` (ArcFace:
  :math:`\cos(\theta_{i,y_i} + m)`; CosFace: :math:`\cos\theta_{i,y_i} - m`),
  the other class cosines :math:`\cos\theta_{ij}` and the set :math:`S_n'` of
  in-batch negative-pair similarities (pairs :math:`i<j`, different labels)
  that survive the box-and-whisker filter
  :math:`[Q_1 - w\,IQR,\; Q_3 + w\,IQR]`, shared by every row:

  .. math::
    \ell_i = -\log \frac{e^{s\psi_i}}{e^{s\psi_i} + \sum_{j\ne y_i} e^{s\cos\theta_{ij}}
             + \sum_{k\in S_n'} e^{s\,s_k}}

  Gradients flow through the appended similarities (as in the authors' code);
  the filter itself is a fixed-size (B, B) mask, so the loss is jit-able. With
  no negative pair (or ``unify_negatives=False``) this is the plain ArcFace /
  CosFace loss. ArcFace uses :math:`\cos(\theta+m)` without the "easy margin"
  fallback, as the UNPG authors' head.

  Args:
    embeddings: (B, D) float embeddings (L2-normalized inside).
    labels: (B,) integer labels in [0, C).
    weights: (D, C) float class weights (one column per class).
    head: ``"arcface"`` or ``"cosface"``.
    scale: logit scale :math:`s > 0` (64).
    margin: :math:`m \ge 0` (0.5 for both heads in the authors' config; in
      radians for ArcFace).
    whisker: :math:`w \ge 0` (1.5).
    unify_negatives: append the filtered negative pairs (True) or not.
    where: optional (B,) bool mask; dropped examples leave the batch (no pairs)
      and get loss 0.

  Returns:
    (B,) f32 per-example losses; ``.mean()`` is the paper's loss.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.losses import unpg_loss
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (6, 8))
    >>> w = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    >>> unpg_loss(x, jnp.array([0, 1, 2, 0, 1, 2]), w).shape
    (6,)

  References:
    Jung, Lee, Oh, Park, Park, Son, "Unified Negative Pair Generation toward
    Well-discriminative Feature Space for Face Recognition", BMVC 2022, Sec. 3
    (UNPG loss and the box-and-whisker filter) (arXiv:2203.11593).
    Code: github.com/Jung-Jun-Uk/UNPG
    (``recognition/models/build.py``, ``head.py``). ArcFace: Deng et al.,
    CVPR 2019, Eq. 3; CosFace: Wang et al., CVPR 2018, Eq. 4.
  """
  fn = "unpg_loss"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  w = validate_class_weights(weights, x.shape[1], fn)
  checks.check_label_range(labels, w.shape[1], fn)
  checks.check_choice(head, ("arcface", "cosface"), "head", fn)
  checks.check_positive(scale, "scale", fn)
  checks.check_nonnegative(margin, "margin", fn)
  checks.check_nonnegative(whisker, "whisker", fn)

  cos = class_cosines(x, w)
  # Class ids index the columns of `weights`; in-batch pairs compare the raw
  # labels (any id).
  class_ids, invalid = label_range.sanitize(labels, w.shape[1])
  logits, one_hot = _margin_cosines(cos, class_ids, head, margin)
  logits = scale * logits
  row_lse = jax.nn.logsumexp(logits, axis=-1)
  target = jnp.sum(jnp.where(one_hot, logits, 0.0), axis=-1)
  b = labels.shape[0]
  if unify_negatives and b > 0:
    sim = pairs.cosine_similarity_matrix(x)
    _, neg = pairs.pair_masks(labels, where)
    upper = jnp.arange(b)[:, None] < jnp.arange(b)[None, :]
    kept = whisker_negative_mask(sim, neg & upper, whisker)
    neg_lse, has_neg = pairs.masked_logsumexp(scale * sim, kept)
    row_lse = jnp.where(has_neg, jnp.logaddexp(row_lse, neg_lse), row_lse)
    invalid = invalid | pairs.nonfinite_batch(x, where)  # every row's negatives
  return numerics.apply_where(row_lse - target, where, invalid)
