"""QuaDMix: quality-and-domain parameterized data sampling (Liu et al. 2025).

Each item (document) carries ``N`` quality scores (smaller is better, as in
the paper) and a domain label in ``[0, M)``. Per domain ``m`` the sampling
function has ``N + 4`` parameters: merging weights ``alpha_m`` and
``(lambda_m, omega_m, eta_m, epsilon_m)``. The output is an expected number
of copies per item; :func:`quadmix_sample` draws the copies under a static
quota.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics
from diversity_jax.selection import _common


def _weighted_percentile(values: jax.Array, groups: jax.Array,
                         weights: jax.Array, num_groups: int) -> jax.Array:
  """Per item, the weight share of its group with a value ``<=`` its own.

  ``O(n log n)``: one sort by (group, value); ties share the share of the
  whole tie (``<=``). A group of zero total weight gives 0.
  """
  n = values.shape[0]
  order = jnp.lexsort((values, groups))
  v, g, w = values[order], groups[order], weights[order]
  cum = jnp.cumsum(w)
  new = jnp.concatenate([jnp.ones((1,), bool),
                         (v[1:] != v[:-1]) | (g[1:] != g[:-1])])
  tie = jnp.cumsum(new) - 1
  tie_end = jax.ops.segment_max(cum, tie, num_segments=n)[tie]
  total = jax.ops.segment_sum(w, g, num_segments=num_groups)
  start = (jnp.cumsum(total) - total)[g]
  share = numerics.safe_divide(tie_end - start, total[g])
  return jnp.zeros_like(share).at[order].set(share)


def _check_domain_params(params: dict, m: int, fn: str):
  for name, value in params.items():
    checks.check_floating(value, name, fn)
    checks.check_shape(value, (m,), name, fn)


def quadmix_sampling_values(quality: jax.Array, domains: jax.Array, *,
                            merge_weights: jax.Array, steepness: jax.Array,
                            threshold: jax.Array, exponent: jax.Array,
                            floor: jax.Array,
                            num_tokens: Optional[jax.Array] = None,
                            where: Optional[jax.Array] = None,
                            normalize: bool = True) -> jax.Array:
  r"""QuaDMix sampling function: expected copies of each item.

  For an item with quality scores :math:`q_1, \dots, q_N` (smaller is
  better) in domain :math:`m`, with parameters :math:`\alpha_m` (merging),
  :math:`\lambda_m` (steepness), :math:`\omega_m` (threshold),
  :math:`\eta_m` (exponent) and :math:`\epsilon_m` (floor):

  .. math::

    \bar q = \sum_{n=1}^N \sigma(q_n)\,\alpha_{n,m},\qquad
    \bar r = \frac{\lvert\{x : d_x = m,\ \bar q_x \le \bar q\}\rvert}
                  {\lvert\{x : d_x = m\}\rvert},

    S(\bar r) = \begin{cases}
      \big(\frac{2}{1 + e^{-\lambda_m(\omega_m - \bar r)}}\big)^{\eta_m}
      + \epsilon_m, & \bar r \le \omega_m,\\
      \epsilon_m, & \bar r > \omega_m,
    \end{cases}

  where set sizes count tokens (``num_tokens``; one per item by default),
  so :math:`\bar r` is the share of the domain's tokens of equal or better
  merged quality. :math:`S` is an expected number of copies: ``a.b`` means
  ``a`` copies plus one more with probability ``b`` (:func:`quadmix_sample`).
  The paper asks of :math:`\sigma` only that it align the criteria's
  scales; here it is the same token-weighted percentile taken over all kept
  items, one criterion at a time (``normalize=True``), which puts criteria
  of any scale on ``[0, 1]`` with 0 the best; with ``normalize=False`` the
  scores are used as given. ``O(n (N + log n))``.

  Args:
    quality: ``(n, N)`` floating quality scores, smaller is better.
    domains: ``(n,)`` integer domain labels in ``[0, M)``.
    merge_weights: ``(M, N)`` merging weights :math:`\alpha` (row ``m`` for
      domain ``m``).
    steepness: ``(M,)`` :math:`\lambda` (the paper samples
      :math:`10^3 \cdot U(0, 1)`).
    threshold: ``(M,)`` :math:`\omega`, the kept quality percentile.
    exponent: ``(M,)`` :math:`\eta`.
    floor: ``(M,)`` :math:`\epsilon`, the value of items past the threshold.
    num_tokens: optional ``(n,)`` non-negative token counts (set sizes).
    where: optional ``(n,)`` boolean mask; dropped items get 0 and do not
      count in any percentile.
    normalize: apply the percentile normalization :math:`\sigma`.

  Returns:
    ``(n,)`` f32 expected copies :math:`S` (0 for dropped items). Under
    ``jit`` an out-of-range domain label gives NaN for that item; a NaN or
    inf kept quality makes every value NaN (every percentile depends on it).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import quadmix_sampling_values
    >>> quality = jnp.array([[0.1], [0.2], [0.3], [0.4]])
    >>> s = quadmix_sampling_values(
    ...     quality, jnp.array([0, 0, 0, 0]), merge_weights=jnp.ones((1, 1)),
    ...     steepness=jnp.array([10.]), threshold=jnp.array([0.5]),
    ...     exponent=jnp.array([1.]), floor=jnp.array([0.01]))
    >>> [round(float(v), 3) for v in s]  # ranks 0.25, 0.5, 0.75, 1
    [1.858, 1.01, 0.01, 0.01]

  References:
    Liu et al., "QuaDMix: Quality-Diversity Balanced Data Selection for
    Efficient LLM Pretraining", 2025 (arXiv 2504.16511), Sec. 3.1,
    Eqs. (1)-(3) and Algorithm 1 (parameter ranges).
  """
  fn = "quadmix_sampling_values"
  checks.check_floating(quality, "quality", fn)
  checks.check_rank(quality, 2, "quality", fn)
  n, num_criteria = jnp.shape(quality)
  checks.check_integer(domains, "domains", fn)
  checks.check_shape(domains, (n,), "domains", fn)
  checks.check_floating(merge_weights, "merge_weights", fn)
  checks.check_rank(merge_weights, 2, "merge_weights", fn)
  m, criteria = jnp.shape(merge_weights)
  if criteria != num_criteria or m < 1:
    checks._fail(fn, f"`merge_weights` must have shape (M, {num_criteria}) "
                 f"with M >= 1, got {jnp.shape(merge_weights)}")
  _check_domain_params({"steepness": steepness, "threshold": threshold,
                        "exponent": exponent, "floor": floor}, m, fn)
  checks.check_label_range(domains, m, fn, "domains")
  checks.check_where(where, (n,), fn)
  kept = jnp.ones((n,), bool) if where is None else jnp.broadcast_to(
      where, (n,))
  if num_tokens is None:
    tokens = jnp.ones((n,), jnp.float32)
  else:
    checks.check_shape(num_tokens, (n,), "num_tokens", fn)
    tokens = numerics.promote_to_f32(jnp.asarray(num_tokens, jnp.float32))
  tokens = jnp.where(kept, tokens, 0.0)
  q = numerics.promote_to_f32(jnp.asarray(quality))
  bad = _common.nonfinite_kept(q, kept)
  q = jnp.where(kept[:, None], q, 0.0)
  d, invalid = label_range.sanitize(domains, m)
  if normalize:
    every = jnp.zeros((n,), jnp.int32)
    q = jax.vmap(lambda col: _weighted_percentile(col, every, tokens, 1),
                 in_axes=1, out_axes=1)(q)
  alpha = numerics.promote_to_f32(jnp.asarray(merge_weights))
  merged = jnp.sum(q * alpha[d], axis=-1)                      # Eq. (1)
  rank = _weighted_percentile(merged, d, tokens, m)            # Eq. (2)
  lam, omega, eta, eps = (numerics.promote_to_f32(jnp.asarray(a))[d]
                          for a in (steepness, threshold, exponent, floor))
  boost = (2.0 / (1.0 + jnp.exp(-lam * (omega - rank)))) ** eta
  values = jnp.where(rank <= omega, boost, 0.0) + eps          # Eq. (3)
  values = jnp.where(bad, jnp.nan, values)
  return numerics.apply_where(values, kept, invalid)


def quadmix_sample(key: jax.Array, sampling_values: jax.Array,
                   k: int) -> jax.Array:
  r"""Draws QuaDMix copies: ``floor(S)`` copies plus one with prob. ``frac(S)``.

  .. math::

    c_i = \lfloor S_i \rfloor + \mathrm{Bernoulli}(S_i - \lfloor S_i
    \rfloor),\qquad \mathbb E[c_i] = S_i,

  then the copies fill ``k`` slots (the quota): items are visited in a
  uniformly random order and each contributes its :math:`c_i` copies
  (consecutive slots) until the quota is full; unfilled slots hold ``-1``.
  When :math:`\sum_i c_i > k` the quota thus cuts the draw at a random item
  (the last one visited may keep only part of its copies). ``O(n log n)``.

  Args:
    key: PRNG key.
    sampling_values: ``(n,)`` non-negative expected copies (from
      :func:`quadmix_sampling_values`).
    k: quota, the number of slots (a static int ``>= 0``).

  Returns:
    ``(k,)`` int32 item indices, an item repeated once per copy, in the
    random visiting order (``-1`` for unfilled slots; all ``-1`` when a
    value is NaN, inf or negative).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.selection import quadmix_sample
    >>> idx = quadmix_sample(jax.random.key(0), jnp.array([2., 0., 1.]), 4)
    >>> sorted(idx.tolist())
    [-1, 0, 0, 2]

  References:
    Liu et al., "QuaDMix: Quality-Diversity Balanced Data Selection for
    Efficient LLM Pretraining", 2025 (arXiv 2504.16511), Sec. 3.1 (the
    sampling function's output ``a.b``: ``a`` copies plus one with
    probability ``b``).
  """
  fn = "quadmix_sample"
  checks.check_floating(sampling_values, "sampling_values", fn)
  checks.check_rank(sampling_values, 1, "sampling_values", fn)
  k = _common.check_k(k, 2**62, fn)
  s = numerics.promote_to_f32(jnp.asarray(sampling_values))
  n = s.shape[0]
  if n == 0:
    return jnp.full((k,), -1, jnp.int32)
  bad = ~jnp.all(jnp.isfinite(s) & (s >= 0))
  key_copy, key_order = jax.random.split(key)
  whole = jnp.floor(s)
  extra = jax.random.uniform(key_copy, (n,)) < (s - whole)
  counts = jnp.where(bad, 0, whole.astype(jnp.int32) + extra)
  order = jax.random.permutation(key_order, n)
  ends = jnp.cumsum(counts[order])
  slots = jnp.arange(k)
  pos = jnp.searchsorted(ends, slots, side="right")
  idx = jnp.where(slots < ends[-1], order[jnp.minimum(pos, n - 1)], -1)
  return _common.invalidate(idx.astype(jnp.int32), bad)
