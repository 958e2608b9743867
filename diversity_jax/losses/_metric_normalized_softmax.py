"""Normalized-softmax (hyperspherical proxy) classification loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics
from diversity_jax.losses import _metric_pairs as pairs


def validate_class_weights(weights, num_features: int, fn: str):
  """Checks ``weights`` (D, C) float with D == ``num_features``; returns f32."""
  checks.check_floating(weights, "weights", fn)
  checks.check_rank(weights, 2, "weights", fn)
  checks.check_shape(weights, (num_features, None), "weights", fn)
  checks.check_has_classes(weights, "weights", fn)
  return numerics.promote_to_f32(weights).astype(jnp.float32)


def class_cosines(x, weights):
  """Cosines between embeddings (B, D) and class columns of ``weights`` (D, C)."""
  xn = pairs.l2_normalize(x, axis=-1)
  wn = pairs.l2_normalize(weights, axis=0)
  return jnp.matmul(xn, wn, precision=jax.lax.Precision.HIGHEST)


def normalized_softmax_loss(embeddings, labels, weights, *, temperature=0.05,
                            where=None):
  r"""Normalized-softmax (NormFace / hyperspherical proxy) loss per example.

  Embeddings and class weight vectors are L2-normalized; logits are cosines
  divided by a temperature :math:`T`:

  .. math::
    \ell_i = -\log \frac{\exp(\cos\theta_{i,y_i}/T)}{\sum_c \exp(\cos\theta_{i,c}/T)}

  Matches ``pytorch_metric_learning.losses.NormalizedSoftmaxLoss`` (whose mean
  over the batch is this output's mean).

  Args:
    embeddings: (B, D) float embeddings.
    labels: (B,) integer labels in [0, C).
    weights: (D, C) float class weights (proxies), one column per class, as in
      pml's ``W``.
    temperature: :math:`T > 0` (0.05, i.e. scale 20).
    where: optional (B,) bool mask; dropped examples get loss 0.

  Returns:
    (B,) f32 per-example losses.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.losses import normalized_softmax_loss
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 8))
    >>> w = jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    >>> normalized_softmax_loss(x, jnp.array([0, 1, 2, 0]), w).shape
    (4,)

  References:
    Wang, Xiang, Cheng, Yuille, "NormFace: L2 Hypersphere Embedding for Face
    Verification", ACM MM 2017, Sec. 3 (normalized softmax with scale)
    (arXiv:1704.06369); Zhai & Wu, "Classification is a Strong Baseline for
    Deep Metric Learning", BMVC 2019, Sec. 3 (NormSoftmax with temperature)
    (arXiv:1811.12649). Code: pytorch-metric-learning
    ``NormalizedSoftmaxLoss``.
  """
  fn = "normalized_softmax_loss"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  w = validate_class_weights(weights, x.shape[1], fn)
  checks.check_label_range(labels, w.shape[1], fn)
  checks.check_positive(temperature, "temperature", fn)
  labels, invalid = label_range.sanitize(labels, w.shape[1])
  logits = class_cosines(x, w) / temperature
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  one_hot = jax.nn.one_hot(labels, w.shape[1], dtype=log_probs.dtype)
  loss = -jnp.sum(one_hot * log_probs, axis=-1)
  return numerics.apply_where(loss, where, invalid)
