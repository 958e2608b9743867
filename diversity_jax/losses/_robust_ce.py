"""Cross-entropy variants for noisy targets: label smoothing and symmetric CE.

* ``label_smoothed_cross_entropy``: CE against ``(1 - a) one_hot(y) + a / K``
  (Szegedy et al. 2016), the PyTorch ``label_smoothing=`` convention.
* ``symmetric_cross_entropy``: the student/teacher symmetric CE of the robust
  mean teacher (Doebler et al. 2023), ``-(1-a) <q, log p> - a <p, log q>``.
* ``symmetric_label_cross_entropy``: the noisy-label SCE of Wang et al. 2019,
  ``alpha CE + beta RCE`` against integer labels, ``RCE = -A (1 - p_y)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def _exp_and_logsumexp(logits):
  """``(exp(z - m), sum_k exp(z_k - m), logsumexp(z))``, ``m = max_k z_k``.

  One exp pass gives both the softmax (``exp(z - m) / sum``) and the
  log-partition.
  """
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
  unnormalized = jnp.exp(logits - shift)
  total = jnp.sum(unnormalized, axis=-1)
  return unnormalized, total, jnp.log(total) + shift[..., 0]


def label_smoothed_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                                 smoothing: float = 0.1,
                                 where=None) -> jax.Array:
  r"""Cross-entropy against uniformly smoothed one-hot targets.

  .. math::
    q = (1 - a)\, e_y + a / K, \qquad
    \ell(z, y) = -\sum_k q_k \log \mathrm{softmax}(z)_k
              = (1 - a)\,(\mathrm{lse}(z) - z_y) + a\,(\mathrm{lse}(z) - \bar z)

  with :math:`\bar z` the mean logit. ``smoothing=0`` is plain softmax CE.
  This matches ``torch.nn.functional.cross_entropy(..., label_smoothing=a)``
  and ``optax.smooth_labels`` followed by ``optax.softmax_cross_entropy``.

  Args:
    logits: ``(..., K)`` floating logits.
    labels: ``(...)`` integer labels in ``[0, K)``.
    smoothing: mass ``a`` in ``[0, 1]`` spread uniformly over the K classes.
    where: optional boolean mask broadcastable to ``labels.shape``; masked
      examples give loss 0 and gradient 0.

  Returns:
    The per-example loss, shape ``labels.shape``, float32 (or wider).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> logits = jnp.array([[2.0, 0.0, -1.0]])
    >>> losses.label_smoothed_cross_entropy(logits, jnp.array([0]),
    ...                                     smoothing=0.1).shape
    (1,)

  References:
    Szegedy et al., "Rethinking the Inception Architecture for Computer
    Vision", CVPR 2016, Sec. 7 (label-smoothing regularization, the smoothed
    target :math:`q'(k) = (1-\epsilon)\delta_{k,y} + \epsilon u(k)`).
    Reference implementation, against which the values are tested (golden values from
    ``tests/golden/make_label_smoothed_cross_entropy.py``): PyTorch
    ``F.cross_entropy(label_smoothing=)``.
  """
  fn = "label_smoothed_cross_entropy"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_scalar_in_range(smoothing, "smoothing", fn, low=0.0, high=1.0)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  # lse - ((1 - a) z_y + a mean(z)): one reduction pass, no log-softmax array.
  loss = lse - (1.0 - smoothing) * target - smoothing * jnp.mean(logits, -1)
  return numerics.apply_where(loss, where, invalid)


def symmetric_label_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                                  alpha: float = 0.1, beta: float = 1.0,
                                  log_zero: float = -4.0,
                                  where=None) -> jax.Array:
  r"""Symmetric cross-entropy (CE + reverse CE) against possibly noisy labels.

  .. math::
    \ell_{sce}(z, y) = \alpha\, \ell_{ce} + \beta\, \ell_{rce}, \qquad
    \ell_{ce} = -\log p_y, \qquad
    \ell_{rce} = -\sum_k p_k \log q_k = -A\,(1 - p_y)

  with :math:`p = \mathrm{softmax}(z)`, :math:`q` the one-hot label and
  :math:`\log 0` replaced by the constant :math:`A < 0` (``log_zero``), so the
  reverse term is a scaled mean absolute error, bounded and symmetric
  (noise-tolerant). The paper sets :math:`A = -4`; the authors' Keras code
  clips the one-hot labels at ``1e-4`` instead, i.e.
  :math:`A = \log 10^{-4} \approx -9.21` (pass ``log_zero=math.log(1e-4)``
  for it). Not to be confused with :func:`symmetric_cross_entropy`, the
  student / teacher version on two distributions.

  Args:
    logits: ``(..., K)`` floating logits.
    labels: ``(...)`` integer labels in ``[0, K)``.
    alpha: weight ``>= 0`` of the CE term (paper: 0.01 on MNIST, 0.1 on
      CIFAR-10, 6.0 on CIFAR-100).
    beta: weight ``>= 0`` of the reverse CE term (paper: 1.0; 0.1 on
      CIFAR-100).
    log_zero: the value ``A < 0`` that replaces ``log 0`` in the reverse CE.
    where: optional boolean mask broadcastable to ``labels.shape``; masked
      examples give loss 0 and gradient 0.

  Returns:
    The per-example loss, shape ``labels.shape``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> logits = jnp.array([[0.0, 0.0]])
    >>> loss = losses.symmetric_label_cross_entropy(
    ...     logits, jnp.array([0]), alpha=1.0, beta=1.0, log_zero=-4.0)
    >>> round(float(loss[0]), 4)  # log 2 + 4 * 0.5
    2.6931

  References:
    Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric Cross Entropy for Robust
    Learning with Noisy Labels", ICCV 2019 (arXiv 1908.06112), Eq. (5)-(6)
    (:math:`\ell_{sce} = \alpha \ell_{ce} + \beta \ell_{rce}`) and Sec. 3.3
    (:math:`\ell_{rce} = -A (1 - p_y)`, :math:`A = -4`). Checked against the
    authors' code ``YisenWang/symmetric_cross_entropy_for_noisy_labels@235d93b:
    loss.py`` (``symmetric_cross_entropy(alpha, beta)``: predictions clipped
    to ``[1e-7, 1]``, labels to ``[1e-4, 1]``).
  """
  fn = "symmetric_label_cross_entropy"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_nonnegative(alpha, "alpha", fn)
  checks.check_nonnegative(beta, "beta", fn)
  checks.check_scalar_in_range(log_zero, "log_zero", fn, high=0.0,
                               high_inclusive=False)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  lse = jax.nn.logsumexp(logits, axis=-1)
  target = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  log_p_y = target - lse
  # -A (1 - p_y) = A expm1(log p_y): no cancellation when p_y is near 1.
  loss = -alpha * log_p_y + beta * log_zero * jnp.expm1(log_p_y)
  return numerics.apply_where(loss, where, invalid)


def symmetric_cross_entropy(logits: jax.Array, teacher_logits: jax.Array, *,
                            alpha: float = 0.5, where=None) -> jax.Array:
  r"""Symmetric cross-entropy between student and (mean-)teacher predictions.

  .. math::
    \ell(z, t) = -(1 - \alpha) \sum_k q_k \log p_k
                 - \alpha \sum_k p_k \log q_k,
    \qquad p = \mathrm{softmax}(z),\ q = \mathrm{softmax}(t)

  ``alpha=0.5`` is the robust mean teacher (RMT) loss. Gradients flow into
  both arguments (the function is pure); in a mean-teacher step wrap the
  teacher in ``jax.lax.stop_gradient`` as the reference does (its EMA model
  has no gradient).

  Args:
    logits: ``(..., K)`` floating student logits.
    teacher_logits: ``(..., K)`` floating teacher logits (same shape).
    alpha: weight in ``[0, 1]`` of the reverse term ``-<p, log q>``.
    where: optional boolean mask broadcastable to ``logits.shape[:-1]``.

  Returns:
    The per-example loss, shape ``logits.shape[:-1]``, float32.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> z, t = jnp.zeros((4, 3)), jnp.ones((4, 3))
    >>> losses.symmetric_cross_entropy(z, jax.lax.stop_gradient(t)).shape
    (4,)

  References:
    Doebler, Marsden, Yang, "Robust Mean Teacher for Continual and Gradual
    Test-Time Adaptation", CVPR 2023 (arXiv 2211.13081), the symmetric
    cross-entropy consistency loss. Checked against the authors' code ``mariodoebler/test-time-adaptation@a6f3c95:
    classification/methods/rmt.py`` (``symmetric_cross_entropy(x, x_ema)``:
    ``-0.5 <q, log p> - 0.5 <p, log q>``, i.e. ``alpha = 0.5``). Wang et
    al., "Symmetric Cross
    Entropy for Robust Learning with Noisy Labels", ICCV 2019, symmetrize CE
    the same way against one-hot labels.
  """
  fn = "symmetric_cross_entropy"
  checks.check_floating(logits, "logits", fn)
  checks.check_floating(teacher_logits, "teacher_logits", fn)
  checks.check_min_rank(logits, 1, "logits", fn)
  checks.check_shape(teacher_logits, jnp.shape(logits), "teacher_logits", fn)
  checks.check_scalar_in_range(alpha, "alpha", fn, low=0.0, high=1.0)
  checks.check_where(where, jnp.shape(logits)[:-1], fn)
  logits, teacher_logits = numerics.promote_to_f32(logits, teacher_logits)
  # -<q, log p> = lse(z) - <q, z>, and symmetrically for the reverse term;
  # <q, z> = <exp(t - m_t), z> / sum_k exp(t_k - m_t): one exp pass per input
  # and no (..., K) softmax array.
  exp_z, sum_z, lse_z = _exp_and_logsumexp(logits)
  exp_t, sum_t, lse_t = _exp_and_logsumexp(teacher_logits)
  forward = lse_z - jnp.sum(exp_t * logits, axis=-1) / sum_t
  reverse = lse_t - jnp.sum(exp_z * teacher_logits, axis=-1) / sum_z
  loss = (1.0 - alpha) * forward + alpha * reverse
  return numerics.apply_where(loss, where)
