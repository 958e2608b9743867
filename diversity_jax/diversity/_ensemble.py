"""Predictive diversity of an ensemble (Abe et al., TMLR 2023).

Every function takes ``member_logits`` of shape ``(M, ..., K)`` (M members,
any batch shape, K classes) and returns a per-example array of shape ``...``;
nothing is reduced (the caller reduces, e.g. with ``numerics.masked_mean``).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def _prepare(member_logits, where, fn: str):
  checks.check_floating(member_logits, "member_logits", fn)
  checks.check_min_rank(member_logits, 2, "member_logits", fn)
  shape = jnp.shape(member_logits)
  if shape[0] == 0:
    checks._fail(fn, "`member_logits` needs at least one member (axis 0), "
                 f"got shape {shape}")
  checks.check_has_classes(member_logits, "member_logits", fn)
  checks.check_where(where, shape[1:-1], fn)
  logits = numerics.promote_to_f32(jnp.asarray(member_logits))
  return jax.nn.log_softmax(logits, axis=-1)


def _mean_over_pairs(pair_values: jax.Array, num_members: int) -> jax.Array:
  """Mean over ordered pairs i != j of a (M, M, ...) array with zero diagonal."""
  if num_members < 2:
    return jnp.zeros(pair_values.shape[2:], pair_values.dtype)
  return jnp.sum(pair_values, axis=(0, 1)) / (num_members * (num_members - 1))


def pairwise_disagreement(member_logits: jax.Array, *,
                          where: Optional[jax.Array] = None) -> jax.Array:
  r"""Fraction of member pairs whose top-1 predictions differ.

  .. math::

    d(x) = \frac{2}{M(M-1)} \sum_{i<j}
      \mathbb{1}[\arg\max_k f_i(x)_k \ne \arg\max_k f_j(x)_k]

  Piecewise constant: its gradient is zero (a measure, not a regularizer).

  Args:
    member_logits: ``(M, ..., K)`` logits of the M members.
    where: optional boolean mask broadcastable to ``...``; masked entries give 0.

  Returns:
    f32 array of shape ``...`` with values in ``[0, 1]`` (0 when ``M = 1``).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import pairwise_disagreement
    >>> z = jnp.array([[[2., 0.]], [[0., 2.]], [[3., 0.]]])  # M=3, B=1, K=2
    >>> float(pairwise_disagreement(z)[0])  # 2 of 3 pairs disagree
    0.6666666865348816

  References:
    Abe, Buchanan, Pleiss & Cunningham, "Pathologies of Predictive Diversity
    in Deep Ensembles", TMLR 2024 (arXiv 2302.00704), Sec. 2 (disagreement as
    the predictive-diversity measure of the 0-1 loss);
    Fort, Hu & Lakshminarayanan, "Deep Ensembles: A Loss Landscape
    Perspective", 2019 (arXiv 1912.02757), Sec. 4.
  """
  fn = "pairwise_disagreement"
  log_probs = _prepare(member_logits, where, fn)
  m = log_probs.shape[0]
  top = jnp.argmax(log_probs, axis=-1)
  differ = (top[:, None] != top[None, :]).astype(jnp.float32)
  out = jax.lax.stop_gradient(_mean_over_pairs(differ, m))
  # argmax picks an index even among NaN logits: NaN in, NaN out.
  return numerics.apply_where(out, where,
                              jnp.any(jnp.isnan(log_probs), axis=(0, -1)))


def pairwise_kl_divergence(member_logits: jax.Array, *,
                           where: Optional[jax.Array] = None) -> jax.Array:
  r"""Mean KL divergence between the predictive distributions of member pairs.

  .. math::

    D_{KL}(x) = \frac{1}{M(M-1)} \sum_{i \ne j}
      \sum_k p_{i,k} (\log p_{i,k} - \log p_{j,k}),\quad
    p_i = \mathrm{softmax}(z_i)

  Computed from log-softmax (finite for logits up to ``|1e4|``).

  Args:
    member_logits: ``(M, ..., K)`` logits.
    where: optional boolean mask broadcastable to ``...``.

  Returns:
    f32 array of shape ``...``, ``>= 0`` (0 when ``M = 1``).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import pairwise_kl_divergence
    >>> z = jnp.zeros((2, 4, 3))  # identical members
    >>> float(pairwise_kl_divergence(z).max())
    0.0

  References:
    Abe et al., TMLR 2024 (arXiv 2302.00704), Sec. 2 (pairwise divergences
    between member predictions as diversity measures).
  """
  fn = "pairwise_kl_divergence"
  log_probs = _prepare(member_logits, where, fn)
  m = log_probs.shape[0]
  probs = jnp.exp(log_probs)
  neg_entropy = jnp.sum(probs * log_probs, axis=-1)            # (M, ...)
  cross = jnp.einsum("i...k,j...k->ij...", probs, log_probs)  # (M, M, ...)
  kl = jnp.maximum(neg_entropy[:, None] - cross, 0.0)
  kl = kl * (1.0 - jnp.eye(m)).reshape((m, m) + (1,) * (kl.ndim - 2))
  return numerics.apply_where(_mean_over_pairs(kl, m), where)


def pairwise_js_divergence(member_logits: jax.Array, *,
                           where: Optional[jax.Array] = None) -> jax.Array:
  r"""Mean Jensen-Shannon divergence between member pairs (natural log).

  .. math::

    JS(x) = \frac{2}{M(M-1)} \sum_{i<j} \tfrac12 D_{KL}(p_i \| m_{ij})
      + \tfrac12 D_{KL}(p_j \| m_{ij}),\quad m_{ij} = \tfrac12 (p_i + p_j)

  Bounded by ``log 2``; ``log m`` is formed with ``logaddexp``.

  Args:
    member_logits: ``(M, ..., K)`` logits.
    where: optional boolean mask broadcastable to ``...``.

  Returns:
    f32 array of shape ``...`` in ``[0, log 2]`` (0 when ``M = 1``).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import pairwise_js_divergence
    >>> z = jnp.array([[[1e4, 0.]], [[0., 1e4]]])  # disjoint one-hots
    >>> round(float(pairwise_js_divergence(z)[0]), 4)  # log 2
    0.6931

  References:
    Abe et al., TMLR 2024 (arXiv 2302.00704), Sec. 2; Lin, "Divergence
    measures based on the Shannon entropy", IEEE Trans. Inf. Theory 1991
    (JS divergence).
  """
  fn = "pairwise_js_divergence"
  log_probs = _prepare(member_logits, where, fn)
  m = log_probs.shape[0]
  probs = jnp.exp(log_probs)
  li, lj = log_probs[:, None], log_probs[None, :]
  log_mix = jnp.logaddexp(li, lj) - math.log(2.0)
  js = 0.5 * (jnp.sum(probs[:, None] * (li - log_mix), axis=-1)
              + jnp.sum(probs[None, :] * (lj - log_mix), axis=-1))
  js = jnp.maximum(js, 0.0)
  js = js * (1.0 - jnp.eye(m)).reshape((m, m) + (1,) * (js.ndim - 2))
  return numerics.apply_where(_mean_over_pairs(js, m), where)


def ensemble_ambiguity(member_logits: jax.Array, labels: jax.Array, *,
                       where: Optional[jax.Array] = None) -> jax.Array:
  r"""Ambiguity (diversity) term of the ensemble cross-entropy.

  The ensemble predicts the mean of member probabilities,
  :math:`\bar p = \frac1M \sum_i p_i`; the ambiguity decomposition reads
  *ensemble loss = average member loss - diversity*, so

  .. math::

    \mathrm{div}(x, y) = \frac1M \sum_i -\log p_{i,y}
      - \big(-\log \bar p_y\big) \;\ge 0 \quad\text{(Jensen)}.

  Computed as ``mean_i(-log p_iy) + logsumexp_i(log p_iy) - log M``.

  Args:
    member_logits: ``(M, ..., K)`` logits.
    labels: integer labels of shape ``...``.
    where: optional boolean mask broadcastable to ``...``.

  Returns:
    f32 array of shape ``...``, ``>= 0`` (0 when ``M = 1``).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import ensemble_ambiguity
    >>> z = jnp.array([[[0., 0.]], [[0., 0.]]])
    >>> float(ensemble_ambiguity(z, jnp.array([0]))[0])
    0.0

  References:
    Abe et al., "Pathologies of Predictive Diversity in Deep Ensembles",
    TMLR 2024 (arXiv 2302.00704), Sec. 2 (ensemble loss = average component
    loss - predictive diversity); Krogh &
    Vedelsby, "Neural network ensembles, cross validation, and active
    learning", NeurIPS 1994 (ambiguity decomposition, squared loss).
  """
  fn = "ensemble_ambiguity"
  checks.check_floating(member_logits, "member_logits", fn)
  checks.check_min_rank(member_logits, 2, "member_logits", fn)
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, jnp.shape(member_logits)[1:-1], "labels", fn)
  log_probs = _prepare(member_logits, where, fn)
  checks.check_label_range(labels, jnp.shape(member_logits)[-1], fn)
  labels, invalid = label_range.sanitize(labels, log_probs.shape[-1])
  m = log_probs.shape[0]
  idx = jnp.broadcast_to(labels[None, ..., None], log_probs.shape[:-1] + (1,))
  log_py = jnp.take_along_axis(log_probs, idx.astype(jnp.int32), axis=-1)[..., 0]
  member_loss = -jnp.mean(log_py, axis=0)
  ensemble_loss = -(jax.nn.logsumexp(log_py, axis=0) - math.log(m))
  out = jnp.maximum(member_loss - ensemble_loss, 0.0)
  return numerics.apply_where(out, where, invalid)
