"""Two different "z-losses": the spherical Z-loss and the PaLM log-Z penalty.

* ``spherical_z_loss`` (de Brebisson & Vincent 2016): a classification loss on
  the standardized target score ``z_y = (o_y - mean(o)) / std(o)``.
* ``log_partition_penalty`` (PaLM / t5x "z_loss"): an auxiliary penalty
  ``coeff * logsumexp(o)^2`` that keeps the softmax normalizer near 1.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def spherical_z_loss(logits: jax.Array, labels: jax.Array, *, a: float,
                     b: float, eps: float = 1e-6, where=None) -> jax.Array:
  r"""Spherical Z-loss: a softplus of the standardized target score.

  .. math::
    \mu = \tfrac1D \sum_k o_k, \quad
    \sigma = \sqrt{\tfrac1D \sum_k (o_k - \mu)^2 + \epsilon}, \quad
    z_y = \frac{o_y - \mu}{\sigma}, \qquad
    \ell(o, y) = \frac{1}{a} \log\left(1 + e^{a (b - z_y)}\right)

  Invariant to shifting and (positively) scaling the logits; :math:`|z_y| \le
  \sqrt{D - 1}` so the loss is finite for logits of any magnitude. ``a`` and
  ``b`` have no canonical defaults (the paper tunes them per task), so both
  are required. ``eps`` only matters for constant logits (then ``z_y = 0``).

  Args:
    logits: ``(..., D)`` floating pre-activations.
    labels: ``(...)`` integer labels in ``[0, D)``.
    a: sharpness ``a > 0``.
    b: location ``b`` (any finite real).
    eps: ``eps >= 0`` added to the (population, ddof=0) variance.
    where: optional boolean per-example mask (masked: loss 0, gradient 0).

  Returns:
    The per-example loss, shape ``labels.shape``, float32 (or wider).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> logits = jnp.array([[2.0, 0.0, -1.0]])
    >>> losses.spherical_z_loss(logits, jnp.array([0]), a=1.0, b=2.0).shape
    (1,)

  References:
    de Brebisson & Vincent, "The Z-loss: a shift and scale invariant
    classification loss belonging to the Spherical Family", arXiv:1604.08859
    (2016): the Z-normalization (population variance) and
    :math:`L_Z(o, c) = \frac1a \log(1 + e^{a(b - z_c)})`. The ``a = 1,
    b = 0`` member
    :math:`\mathrm{softplus}((\mu - o_c) / \sigma)`, with the population
    standard deviation from the row sums of :math:`o` and :math:`o^2`, is
    checked against the authors' Theano code (the factored output layer
    repository, whose README links the Z-loss paper),
    ``pascal20100/factored_output_layer@5fbe04e``
    ``example/timing_example.py: z_loss`` (which adds ``1e-12`` to
    :math:`\sigma`; ``eps`` here is added to the variance); the general
    ``a, b`` form against a brute-force numpy formula.
  """
  fn = "spherical_z_loss"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_positive(a, "a", fn)
  checks.check_finite_scalar(b, "b", fn)
  checks.check_nonnegative(eps, "eps", fn)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  # Shift invariance: subtracting the row max first makes a constant row
  # exactly 0, so its mean has no rounding residual to standardize (z = 0).
  logits = logits - jax.lax.stop_gradient(
      jnp.max(logits, axis=-1, keepdims=True))
  mean = jnp.mean(logits, axis=-1, keepdims=True)
  centered = logits - mean
  d = logits.shape[-1]
  # sqrt(mean(c^2) + eps) = ||c|| / sqrt(D) with eps scaled; safe_norm keeps
  # the gradient finite (zero) for constant logits.
  std = numerics.safe_norm(centered, axis=-1, eps=d * eps) / jnp.sqrt(
      jnp.asarray(d, logits.dtype))
  target = jnp.take_along_axis(centered, labels[..., None], axis=-1)[..., 0]
  z = numerics.safe_divide(target, std)
  loss = jax.nn.softplus(a * (b - z)) / a
  return numerics.apply_where(loss, where, invalid)


def log_partition_penalty(logits: jax.Array, *, coeff: float = 1e-4,
                          where=None) -> jax.Array:
  r"""PaLM's auxiliary "z-loss": a squared log-partition penalty per example.

  .. math::
    \ell(o) = c \cdot \left(\log \sum_k e^{o_k}\right)^2

  Added to the cross-entropy it pushes :math:`\log Z` towards 0 (a
  self-normalized softmax). PaLM uses :math:`c = 10^{-4}`. Computed with
  ``logsumexp`` in f32; for logits up to 1e4 the value stays finite.

  Args:
    logits: ``(..., K)`` floating logits.
    coeff: ``coeff >= 0``.
    where: optional boolean mask broadcastable to ``logits.shape[:-1]``.

  Returns:
    The per-example penalty, shape ``logits.shape[:-1]``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> losses.log_partition_penalty(jnp.zeros((2, 4)), coeff=1.0)
    Array([1.921812, 1.921812], dtype=float32)

  References:
    Chowdhery et al., "PaLM: Scaling Language Modeling with Pathways", JMLR
    2023 (arXiv:2204.02311), Sec. 5 "Training Setup", loss function paragraph
    (unnumbered, inline: "an auxiliary loss of z_loss = 1e-4 log^2 Z").
    Reference implementation: t5x
    ``t5x/losses.py: cross_entropy_with_logits`` (``z_loss * square(lse)``).
  """
  fn = "log_partition_penalty"
  checks.check_floating(logits, "logits", fn)
  checks.check_min_rank(logits, 1, "logits", fn)
  checks.check_nonnegative(coeff, "coeff", fn)
  checks.check_where(where, jnp.shape(logits)[:-1], fn)
  logits = numerics.promote_to_f32(logits)
  lse = jax.nn.logsumexp(logits, axis=-1)
  return numerics.apply_where(coeff * jnp.square(lse), where)
