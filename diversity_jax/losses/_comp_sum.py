"""Comp-sum losses (Mao, Mohri & Zhong, ICML 2023): CE, GCE, MAE and beyond.

A comp-sum loss composes a non-decreasing concave function with the sum of
exponentiated score gaps, ``l_tau(h, y) = Phi^tau(sum_{y' != y} exp(h_y' - h_y))``.
Since ``1 + u = 1 / p_y`` with ``p = softmax(h)``, every member is a function
of ``log p_y`` alone, which is how it is computed here (log-softmax, stable for
logits of any magnitude).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics

# For tau < 1 the loss grows like exp((1 - tau) * gap); beyond this exponent it
# is continued linearly (value and slope matched) so that f32 never overflows.
_MAX_EXPONENT = 50.0


def _comp_sum_from_log_prob(log_p: jax.Array, tau) -> jax.Array:
  """Phi^tau(1/p - 1) as a function of log p (<= 0), finite for all inputs.

  For ``tau != 1``: ``Phi^tau = (p^(tau-1) - 1) / (1 - tau)
  = expm1((tau - 1) log p) / (1 - tau)``; for ``tau == 1``: ``-log p``.
  """
  t1 = jnp.asarray(tau, log_p.dtype) - 1.0
  is_ce = t1 == 0
  safe_t1 = jnp.where(is_ce, 1.0, t1)
  x = safe_t1 * log_p  # (tau - 1) log p; positive only when tau < 1.
  clipped = jnp.minimum(x, _MAX_EXPONENT)
  em1 = jnp.expm1(clipped)
  # Linear continuation exp(X) (1 + x - X) - 1 for x > X (C^1 at x = X).
  em1 = jnp.where(x > _MAX_EXPONENT,
                  jnp.exp(_MAX_EXPONENT) * (1.0 + (x - clipped)) - 1.0, em1)
  return jnp.where(is_ce, -log_p, em1 / (-safe_t1))


def _target_log_prob(logits, labels):
  """``log_softmax(logits)[y]`` without forming the log-softmax array.

  ``(z_y - m) - log sum_k exp(z_k - m)`` with ``m = max_k z_k``: the
  operations of ``jax.nn.log_softmax`` then a gather (bitwise the same
  value), with the passes of CE (one exp pass; the backward needs no
  ``(..., K)`` log-softmax cotangent).
  """
  shift = jax.lax.stop_gradient(jnp.max(logits, axis=-1))
  log_normalizer = jnp.log(jnp.sum(jnp.exp(logits - shift[..., None]), -1))
  target = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  return (target - shift) - log_normalizer


def comp_sum(logits: jax.Array, labels: jax.Array, *, tau: float = 1.0,
             where=None) -> jax.Array:
  r"""Comp-sum loss :math:`\Phi^\tau` of the softmax scores (per example).

  .. math::
    u = \sum_{y' \neq y} e^{h_{y'} - h_y} = \frac{1}{p_y} - 1, \qquad
    \ell_\tau(h, y) = \Phi^\tau(u) =
    \begin{cases}
      \frac{1}{1 - \tau}\left[(1 + u)^{1 - \tau} - 1\right] & \tau \ne 1 \\
      \log(1 + u) & \tau = 1
    \end{cases}

  Members: ``tau=0`` sum-exponential loss :math:`u`; ``tau=1`` logistic /
  softmax cross-entropy :math:`-\log p_y`; ``1 < tau < 2`` generalized
  cross-entropy :math:`(1 - p_y^q)/q` with :math:`q = \tau - 1`; ``tau=2`` mean
  absolute error :math:`1 - p_y`; ``tau > 2`` :math:`(1 - p_y^{\tau-1})/(\tau-1)`.

  Computed from :math:`\log p_y` (log-softmax) with ``expm1``, so it is finite
  for logits up to any magnitude when ``tau >= 1``. For ``tau < 1`` the loss is
  genuinely exponential in the score gap; past ``(1 - tau) (-log p_y) = 50``
  it is continued linearly (value and slope matched) so value and gradient
  stay finite in f32.

  Args:
    logits: ``(..., K)`` floating scores ``h(x, .)``.
    labels: ``(...)`` integer labels in ``[0, K)``.
    tau: ``tau >= 0``; selects the member of the family.
    where: optional boolean mask broadcastable to ``labels.shape``; masked
      examples give loss 0 and gradient 0.

  Returns:
    The per-example loss, shape ``labels.shape``, float32 (or wider).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> logits = jnp.array([[2.0, 0.0, -1.0]])
    >>> float(losses.comp_sum(logits, jnp.array([0]), tau=2.0)[0])  # 1 - p_y
    0.1562...

  References:
    Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis
    and Applications", ICML 2023 (arXiv:2304.07288), Sec. 2: definition of
    comp-sum losses :math:`\Phi^\tau` and its members (CE at ``tau = 1``,
    GCE at ``tau = 1 + q``, MAE at ``tau = 2``). The formula is tested
    against optax CE (``tau=1``), the ``GCELoss`` of
    ``Optimization-AI/ICML2023_LDR@732fc85`` (``tau=1+q``, golden values)
    and a brute-force :math:`\Phi^\tau(\sum_{y' \ne y} e^{h_{y'} - h_y})`.
  """
  fn = "comp_sum"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_nonnegative(tau, "tau", fn)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  loss = _comp_sum_from_log_prob(_target_log_prob(logits, labels), tau)
  return numerics.apply_where(loss, where, invalid)


def generalized_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                              q: float = 0.7, where=None) -> jax.Array:
  r"""Generalized cross-entropy :math:`(1 - p_y^q) / q` (comp-sum, tau = 1 + q).

  .. math::
    \ell_q(h, y) = \frac{1 - p_y^{\,q}}{q}, \qquad p = \mathrm{softmax}(h),
    \quad q \in (0, 1]

  It interpolates between cross-entropy (``q -> 0``) and MAE (``q = 1``).
  ``q = 0.7`` is the default of Zhang & Sabuncu. Same numerics as
  :func:`comp_sum` with ``tau = 1 + q``.

  Args:
    logits: ``(..., K)`` floating scores.
    labels: ``(...)`` integer labels in ``[0, K)``.
    q: exponent in ``(0, 1]``.
    where: optional boolean per-example mask (masked: loss 0, gradient 0).

  Returns:
    The per-example loss, shape ``labels.shape``, float32 (or wider).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> losses.generalized_cross_entropy(jnp.zeros((2, 4)),
    ...                                  jnp.array([0, 3])).shape
    (2,)

  References:
    Zhang & Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural
    Networks with Noisy Labels", NeurIPS 2018, Eq. (6) (the
    :math:`\mathcal{L}_q` loss). As a comp-sum member: Mao, Mohri & Zhong,
    ICML 2023 (arXiv:2304.07288), Sec. 2 with :math:`\tau = 1 + q`.
  """
  fn = "generalized_cross_entropy"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_scalar_in_range(q, "q", fn, low=0.0, high=1.0,
                               low_inclusive=False)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  loss = _comp_sum_from_log_prob(_target_log_prob(logits, labels), 1.0 + q)
  return numerics.apply_where(loss, where, invalid)


def mean_absolute_error(logits: jax.Array, labels: jax.Array, *,
                        where=None) -> jax.Array:
  r"""Mean absolute error of the softmax scores, :math:`1 - p_y` (tau = 2).

  .. math::
    \ell(h, y) = 1 - p_y = \tfrac12 \lVert e_y - \mathrm{softmax}(h) \rVert_1

  This is the comp-sum normalization (Mao et al.); it is half the L1 form
  :math:`\lVert e_y - p \rVert_1 = 2(1 - p_y)` of Ghosh et al. (multiply by 2
  for that convention).

  Args:
    logits: ``(..., K)`` floating scores.
    labels: ``(...)`` integer labels in ``[0, K)``.
    where: optional boolean per-example mask (masked: loss 0, gradient 0).

  Returns:
    The per-example loss in ``[0, 1]``, shape ``labels.shape``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> float(losses.mean_absolute_error(jnp.zeros((1, 4)), jnp.array([1]))[0])
    0.75

  References:
    Mao, Mohri & Zhong, ICML 2023 (arXiv:2304.07288), Sec. 2 with
    :math:`\tau = 2`; Ghosh, Kumar & Sastry, "Robust Loss Functions under
    Label Noise for Deep Neural Networks", AAAI 2017, Sec. 3 (MAE); tested
    as :func:`comp_sum` is.
  """
  fn = "mean_absolute_error"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  # 1 - p_y = -expm1(log p_y): accurate when p_y is close to 1.
  loss = -jnp.expm1(_target_log_prob(logits, labels))
  return numerics.apply_where(loss, where, invalid)
