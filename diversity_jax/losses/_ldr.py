"""Label-distributionally-robust losses LDR-KL and adaptive ALDR-KL.

Zhu, Ying & Yang, "Label Distributionally Robust Losses for Multi-class
Classification: Consistency, Robustness and Adaptivity", ICML 2023. Both are
closed forms of a max over label distributions with a KL penalty to uniform.
ALDR-KL also adapts a per-example temperature; it is explicit state here:
``loss, new_temperatures = aldr_kl(logits, labels, temperatures, ...)``.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics

_TRANSFORMS = (None, "softplus", "l1")
# Floor of the normalizer of the logit transforms (the reference has none).
_NORM_FLOOR = 1e-12


def _transform_logits(logits, logit_transform):
  """The reference code's optional normalization of the scores.

  ``"softplus"``: ``f = softplus(f); f = f / mean_k(f)`` (``LDRLoss_V1``, and
  ``ALDRLoss_V1(softplus=True)``); ``"l1"``: ``f = f / (||f||_1 / K)``
  (``ALDRLoss_V1`` default). ``None``: the paper's formula on raw scores.
  """
  if logit_transform is None:
    return logits
  if logit_transform == "softplus":
    logits = jax.nn.softplus(logits)
  scale = jnp.mean(jnp.abs(logits), axis=-1, keepdims=True)
  return logits / jnp.maximum(scale, _NORM_FLOOR)


def _margin_gaps(logits, labels, margin):
  """``c 1[k != y] + f_k - f_y`` for every class k."""
  k = logits.shape[-1]
  target = jnp.take_along_axis(logits, labels[..., None], axis=-1)
  off_target = jax.nn.one_hot(labels, k, dtype=logits.dtype) == 0
  return margin * off_target + logits - target


def _ldr_value(gaps, temperature):
  """``lambda * log(mean_k exp(gaps_k / lambda))`` (temperature broadcast)."""
  k = gaps.shape[-1]
  t = jnp.asarray(temperature, gaps.dtype)
  return t * (jax.nn.logsumexp(gaps / t[..., None], axis=-1) - math.log(k))


def _check_common(logits, labels, margin, where, logit_transform, fn):
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_finite_scalar(margin, "margin", fn)
  checks.check_choice(logit_transform, _TRANSFORMS, "logit_transform", fn)
  checks.check_where(where, jnp.shape(labels), fn)


def ldr_kl(logits: jax.Array, labels: jax.Array, *, margin: float = 0.1,
           temperature: float = 1.0, logit_transform: Optional[str] = None,
           where=None) -> jax.Array:
  r"""LDR-KL loss: the KL-regularized worst case over label distributions.

  .. math::
    \psi_\lambda(f, y) = \max_{p \in \Delta_K} \sum_k p_k
      \left(c\,\mathbb 1[k \ne y] + f_k - f_y\right)
      - \lambda\, \mathrm{KL}(p \,\|\, \tfrac1K \mathbf 1)
    = \lambda \log \frac1K \sum_k
      \exp\!\left(\frac{c\,\mathbb 1[k \ne y] + f_k - f_y}{\lambda}\right)

  Note the mean (``1/K``) inside the log: with ``c = 0, lambda = 1`` this is
  cross-entropy minus ``log K``. Computed with ``logsumexp`` (finite for logits
  of any magnitude).

  Args:
    logits: ``(..., K)`` floating scores.
    labels: ``(...)`` integer labels in ``[0, K)``.
    margin: the margin ``c`` (reference ``threshold``; the authors' CLI
      default is 0.1).
    temperature: ``lambda > 0`` (reference ``Lambda``, default 1.0).
    logit_transform: ``None`` (paper formula), ``"softplus"`` (the reference
      ``LDRLoss_V1``: ``softplus`` then divide by the class mean) or ``"l1"``
      (divide by the mean absolute score, as ``ALDRLoss_V1``).
    where: optional boolean per-example mask (masked: loss 0, gradient 0).

  Returns:
    The per-example loss, shape ``labels.shape``, float32 (or wider).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> losses.ldr_kl(jnp.zeros((2, 4)), jnp.array([0, 1]), margin=0.0)
    Array([0., 0.], dtype=float32)

  References:
    Zhu, Ying & Yang, "Label Distributionally Robust Losses for Multi-class
    Classification: Consistency, Robustness and Adaptivity", ICML 2023
    (arXiv:2112.14869; PMLR 202:43289-43325), Sec. 3, LDR-KL closed form.
    The formula is checked against the authors' code,
    ``Optimization-AI/ICML2023_LDR@732fc85`` ``loss.py: LDRLoss_V1``
    (golden values in ``tests/golden/ldr_kl.npz``), and against a
    brute-force numpy port of the closed form with ``logit_transform=None``.
  """
  fn = "ldr_kl"
  _check_common(logits, labels, margin, where, logit_transform, fn)
  checks.check_positive(temperature, "temperature", fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = _transform_logits(numerics.promote_to_f32(logits), logit_transform)
  loss = _ldr_value(_margin_gaps(logits, labels, margin), temperature)
  return numerics.apply_where(loss, where, invalid)


def aldr_kl(logits: jax.Array, labels: jax.Array, temperatures: jax.Array, *,
            margin: float = 0.1, temperature: float = 1.0, alpha: float = 2.0,
            logit_transform: Optional[str] = "l1",
            where=None) -> tuple[jax.Array, jax.Array]:
  r"""Adaptive LDR-KL with a per-example temperature (explicit state).

  With :math:`\lambda_0` = ``temperature``, :math:`\lambda_i^{old}` =
  ``temperatures`` (the state of the examples in the batch; start from
  ``jnp.full(n, temperature)``):

  .. math::
    p_i &= \mathrm{normalize}_1\!\left(\mathrm{softmax}(f_i / \lambda_i^{old})
           + 10^{-5}\right), \\
    \lambda_i &= \lambda_0 - \frac{\lambda_0\, \mathrm{KL}(p_i \| \tfrac1K)}
                 {\alpha \log K}, \\
    \ell_i &= \lambda_i \log \frac1K \sum_k
      \exp\!\left(\frac{c\,\mathbb 1[k \ne y_i] + f_{ik} - f_{iy_i}}
      {\lambda_i}\right) - \frac{\alpha \log K}{2 \lambda_0}
      (\lambda_i - \lambda_0)^2

  :math:`\lambda_i` is the closed-form maximizer of the adaptive objective
  and lies in :math:`[\lambda_0 (1 - 1/\alpha), \lambda_0]`; as in the
  reference it is not differentiated through (stop-gradient), and it is
  returned as the new state. Masked examples keep their old temperature.

  Args:
    logits: ``(..., K)`` floating scores.
    labels: ``(...)`` integer labels in ``[0, K)``.
    temperatures: ``(...)`` floating per-example temperatures from the
      previous visit of each example (state in).
    margin: the margin ``c`` (reference ``threshold``, CLI default 0.1).
    temperature: reference temperature ``lambda_0 > 0`` (reference ``Lambda``).
    alpha: ``alpha > 1`` (keeps every temperature positive; the authors' CLI
      default is 2).
    logit_transform: as in :func:`ldr_kl`; default ``"l1"`` is the reference
      ``ALDRLoss_V1`` default, ``"softplus"`` its ``softplus=True`` option.
    where: optional boolean per-example mask (masked: loss 0, gradient 0,
      temperature unchanged).

  Returns:
    ``(loss, new_temperatures)``, both of shape ``labels.shape``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> logits, labels = jnp.array([[2.0, 0.0, -1.0]]), jnp.array([0])
    >>> loss, temps = losses.aldr_kl(logits, labels, jnp.ones((1,)))
    >>> loss.shape, temps.shape
    ((1,), (1,))

  References:
    Zhu, Ying & Yang, ICML 2023 (arXiv:2112.14869), Sec. 4, ALDR-KL (the
    closed-form temperature update). The update and the loss are checked
    against the authors' code,
    ``Optimization-AI/ICML2023_LDR@732fc85`` ``loss.py: ALDRLoss_V1``
    (golden values, two consecutive steps, in ``tests/golden/ldr_kl.npz``).
  """
  fn = "aldr_kl"
  _check_common(logits, labels, margin, where, logit_transform, fn)
  checks.check_floating(temperatures, "temperatures", fn)
  checks.check_shape(temperatures, jnp.shape(labels), "temperatures", fn)
  checks.check_positive(temperature, "temperature", fn)
  checks.check_scalar_in_range(alpha, "alpha", fn, low=1.0,
                               low_inclusive=False)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits, temps_in = numerics.promote_to_f32(logits, temperatures)
  temps_in = jnp.asarray(temps_in).astype(logits.dtype)
  f = _transform_logits(logits, logit_transform)
  k = f.shape[-1]
  log_k = math.log(k)
  lam0 = jnp.asarray(temperature, f.dtype)
  # Old temperatures are clipped into the valid range so a bad state (0, or
  # never initialised) cannot produce inf / NaN.
  old = jnp.clip(temps_in, lam0 * (1.0 - 1.0 / alpha), lam0)
  old = jnp.maximum(old, _NORM_FLOOR)
  sf = jax.lax.stop_gradient(f)
  p = jax.nn.softmax(sf / old[..., None], axis=-1) + 1e-5
  p = p / jnp.sum(p, axis=-1, keepdims=True)
  kl = jnp.sum(p * jnp.log(k * p), axis=-1)
  new = lam0 - lam0 * kl / (alpha * log_k)
  new = jax.lax.stop_gradient(jnp.maximum(new, _NORM_FLOOR))
  extra = -0.5 * alpha * log_k / lam0 * jnp.square(new - lam0)
  loss = _ldr_value(_margin_gaps(f, labels, margin), new) + extra
  loss = numerics.apply_where(loss, where, invalid)
  if where is not None:
    new = jnp.where(where, new, temps_in)
  return loss, new
