"""Greedy selection on a kernel: DPP MAP (log-determinant) and Vendi score."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.diversity import _vendi
from diversity_jax.selection import _common


def _prepare(kernel, k, where, fn: str):
  """Checks ``kernel`` (square, floating), ``k`` and ``where``; returns
  ``(k, kept, kernel with dropped rows and columns zeroed, bad)`` where
  ``bad`` says a kept entry is NaN or inf."""
  checks.check_floating(kernel, "kernel", fn)
  checks.check_rank(kernel, 2, "kernel", fn)
  n, m = jnp.shape(kernel)
  if n != m:
    checks._fail(fn, f"`kernel` must be square, got shape {(n, m)}")
  k = _common.check_k(k, n, fn)
  checks.check_where(where, (n,), fn)
  l = numerics.promote_to_f32(jnp.asarray(kernel))
  if where is None:  # no masked copy of the (n, n) kernel
    # max |L| is NaN or inf exactly when an entry is (a float reduction:
    # no (n, n) boolean temporary)
    return k, jnp.ones((n,), bool), l, ~(jnp.max(jnp.abs(l)) < jnp.inf)
  kept = jnp.broadcast_to(where, (n,))
  pair = kept[:, None] & kept[None, :]
  bad = ~jnp.all(jnp.isfinite(l) | ~pair)
  return k, kept, jnp.where(pair, l, 0.0), bad


def greedy_log_det(kernel: jax.Array, k: int, *,
                   where: Optional[jax.Array] = None,
                   epsilon: float = 1e-5) -> jax.Array:
  r"""Greedy DPP MAP selection: maximize :math:`\log\det L_S` one item at a time.

  .. math::

    s_{t+1} = \operatorname*{arg\,max}_{i \notin S}
    \log\det L_{S \cup \{i\}} = \operatorname*{arg\,max}_{i \notin S} d_i^2,

  where :math:`d_i^2 = L_{ii} - \lVert c_i \rVert^2` is the squared pivot of
  the incremental Cholesky factor, updated after each pick :math:`j` by
  :math:`e_i = (L_{ji} - \langle c_j, c_i\rangle) / d_j`,
  :math:`c_i \leftarrow [c_i, e_i]`, :math:`d_i^2 \leftarrow d_i^2 - e_i^2`
  (Chen et al., Algorithm 1): ``O(n k^2)`` time, ``O(n k)`` memory.
  Selection stops (remaining slots ``-1``) once the best :math:`d_j^2` is
  below ``epsilon`` times the largest kept :math:`L_{ii}` (the kernel's rank
  is exhausted), as the authors' code does with an absolute threshold; the
  relative one sits above the f32 round-off of the pivots.

  Args:
    kernel: ``(n, n)`` symmetric positive semi-definite kernel ``L``.
    k: number of picks, a static int in ``[0, n]``.
    where: optional ``(n,)`` boolean mask of candidate items.
    epsilon: stopping threshold on the squared pivot, relative to the
      largest kept diagonal entry.

  Returns:
    ``(k,)`` int32 indices in pick order (``-1`` for unfilled slots; all
    ``-1`` when a kept entry of ``kernel`` is NaN or inf).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import greedy_log_det
    >>> x = jnp.array([[1., 0.], [0.99, 0.1], [0., 1.]])
    >>> greedy_log_det(x @ x.T + 0.01 * jnp.eye(3), 3).tolist()
    [0, 2, 1]

  References:
    Chen, Zhang & Zhou, "Fast Greedy MAP Inference for Determinantal Point
    Process to Improve Recommendation Diversity", NeurIPS 2018
    (arXiv 1709.05135), Algorithm 1. Code:
    https://github.com/laming-chen/fast-map-dpp (``dpp``).
  """
  fn = "greedy_log_det"
  checks.check_positive(epsilon, "epsilon", fn)
  k, kept, l_safe, bad = _prepare(kernel, k, where, fn)
  if k == 0:
    return jnp.zeros((0,), jnp.int32)
  n = l_safe.shape[0]
  neg_inf = jnp.array(-jnp.inf, l_safe.dtype)
  d2 = jnp.where(kept, jnp.diagonal(l_safe), neg_inf)
  threshold = epsilon * jnp.max(jnp.where(kept, jnp.diagonal(l_safe), 0.0))
  c = jnp.zeros((k, n), l_safe.dtype)
  indices = jnp.full((k,), -1, jnp.int32)

  def step(t, carry):
    d2, c, indices, stopped = carry
    j = jnp.argmax(d2)
    stopped = stopped | ~(d2[j] > threshold)
    dj = jnp.sqrt(jnp.where(stopped, 1.0, d2[j]))
    # rows >= t of c are still zero, so the full product is <c_j, c_i>.
    e = (l_safe[j] - c[:, j] @ c) / dj
    new_d2 = (d2 - jnp.square(e)).at[j].set(neg_inf)
    d2 = jnp.where(stopped, d2, new_d2)
    c = jnp.where(stopped, c, c.at[t].set(e))
    indices = indices.at[t].set(jnp.where(stopped, -1, j).astype(jnp.int32))
    return d2, c, indices, stopped

  _, _, indices, _ = jax.lax.fori_loop(
      0, k, step, (d2, c, indices, jnp.array(False)))
  return _common.invalidate(indices, bad)


def greedy_vendi(kernel: jax.Array, k: int, *, q=1.0,
                 where: Optional[jax.Array] = None,
                 first: int = 0) -> jax.Array:
  r"""Greedy Vendi selection: add the item that most raises the Vendi score.

  Starting from :math:`S = \{\text{first}\}` (every singleton scores 1),

  .. math::

    s_{t+1} = \operatorname*{arg\,max}_{i \notin S}
    \mathrm{VS}_q\big(K_{S \cup \{i\}}\big),

  with :math:`\mathrm{VS}_q` the Vendi score of order ``q`` of the
  sub-kernel (:func:`diversity_jax.diversity.vendi_score`). Each step scores
  every candidate with a ``k x k`` eigendecomposition: ``O(n k^4)`` time in
  all, ``O(n k^2)`` memory; for large ``n`` prefer :func:`greedy_log_det` or
  :func:`k_center_greedy`. Ties go to the lowest index.

  Args:
    kernel: ``(n, n)`` symmetric PSD similarity with unit diagonal.
    k: number of picks, a static int in ``[0, n]``.
    q: Vendi order (a static number >= 0 or ``'inf'``).
    where: optional ``(n,)`` boolean mask of candidate items.
    first: index of the first pick (an int, may be traced).

  Returns:
    ``(k,)`` int32 indices in pick order (``-1`` for slots left when fewer
    than ``k`` items are kept; all ``-1`` when a kept entry of ``kernel`` is
    NaN or inf).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import greedy_vendi
    >>> x = jnp.array([[1., 0.], [0.99, 0.14], [0., 1.], [0.6, 0.8]])
    >>> x = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    >>> greedy_vendi(x @ x.T, 2).tolist()
    [0, 2]

  References:
    Friedman & Dieng, "The Vendi Score: A Diversity Evaluation Metric for
    Machine Learning", TMLR 2023 (arXiv 2210.02410), Sec. 3 (score);
    Pasarkar & Dieng, "Cousins of the Vendi Score", 2023
    (arXiv 2310.12952) (order q). Code:
    https://github.com/vertaix/Vendi-Score.
  """
  fn = "greedy_vendi"
  order = _vendi._canonical_order(q, fn)
  checks.check_integer(first, "first", fn)
  k, kept, l_safe, bad = _prepare(kernel, k, where, fn)
  if k == 0:
    return jnp.zeros((0,), jnp.int32)
  n = l_safe.shape[0]
  sym = 0.5 * (l_safe + l_safe.T)

  def score_with(indices, t, i):
    slots = indices.at[t].set(i)
    filled = jnp.arange(k) <= t
    sub = sym[jnp.maximum(slots, 0)][:, jnp.maximum(slots, 0)]
    sub = jnp.where(filled[:, None] & filled[None, :], sub, 0.0)
    p = filled / jnp.sum(filled)
    root = jnp.sqrt(p)
    return _vendi._score_symmetric(sub * root[:, None] * root[None, :], order)

  def step(t, carry):
    indices, chosen = carry
    scores = jax.vmap(lambda i: score_with(indices, t, i))(jnp.arange(n))
    scores = jnp.where(kept & ~chosen, scores, -jnp.inf)
    best = jnp.where(t == 0, first, jnp.argmax(scores))
    ok = kept[best] & ~chosen[best]
    pick = jnp.where(ok, best, -1).astype(jnp.int32)
    chosen = chosen.at[best].set(chosen[best] | ok)
    return indices.at[t].set(pick), chosen

  indices = jnp.full((k,), -1, jnp.int32)
  indices, _ = jax.lax.fori_loop(0, k, step, (indices, jnp.zeros((n,), bool)))
  return _common.invalidate(indices, bad)
