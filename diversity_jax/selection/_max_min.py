"""Greedy max-min (k-center) selection and DivPrune token pruning.

Both keep a running vector ``min_dist[i] = min_{s in S} dist(x_i, x_s)``
(``O(n)`` memory) and add ``argmax_i min_dist[i]`` at each of the ``k``
steps, updating the vector with the distances to the new pick only
(``O(n d)`` per step, ``O(n k d)`` in all).
"""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.selection import _common


def _squared_euclidean(x: jax.Array, c: jax.Array) -> jax.Array:
  return jnp.sum(jnp.square(x - c), axis=-1)


def _cosine_distance(x: jax.Array, c: jax.Array) -> jax.Array:
  # rows of x are unit-normalized already
  return 1.0 - x @ c


def greedy_max_min(x: jax.Array, k: int, first: jax.Array,
                   dist: Callable[[jax.Array, jax.Array], jax.Array],
                   where: Optional[jax.Array]) -> jax.Array:
  """Indices ``(k,)`` of the greedy max-min picks starting from ``first``.

  Dropped items never get picked; a slot left once every kept item is
  picked holds ``-1``. Ties go to the lowest index.
  """
  n = x.shape[0]
  kept = jnp.ones((n,), bool) if where is None else jnp.broadcast_to(where, (n,))
  neg_inf = jnp.array(-jnp.inf, x.dtype)
  min_dist = jnp.where(kept, jnp.inf, neg_inf).astype(x.dtype)
  indices = jnp.full((k,), -1, jnp.int32)

  def step(i, carry):
    min_dist, indices = carry
    candidate = jnp.where(i == 0, first, jnp.argmax(min_dist))
    ok = min_dist[candidate] > neg_inf
    pick = jnp.where(ok, candidate, -1).astype(jnp.int32)
    d = dist(x, x[jnp.maximum(pick, 0)])
    new = jnp.minimum(min_dist, d)
    # a picked item leaves the candidates even when its distance is not 0
    new = new.at[jnp.maximum(pick, 0)].set(neg_inf)
    min_dist = jnp.where(ok, new, min_dist)
    return min_dist, indices.at[i].set(pick)

  _, indices = jax.lax.fori_loop(0, k, step, (min_dist, indices))
  return indices


def k_center_greedy(features: jax.Array, k: int, *,
                    where: Optional[jax.Array] = None,
                    first: int = 0) -> jax.Array:
  r"""Greedy max-min (k-center) selection of ``k`` items, in pick order.

  Starting from :math:`S = \{\text{first}\}`, repeat

  .. math::

    s_{t+1} = \operatorname*{arg\,max}_{i \notin S}\ \min_{s \in S}
    \lVert x_i - x_s \rVert_2^2,

  a 2-approximation of the k-center problem (minimize the largest distance
  of an item to its nearest selected item). ``O(n k d)`` time and ``O(n)``
  extra memory (one running min-distance vector). Ties go to the lowest
  index.

  Args:
    features: ``(n, d)`` floating features (bf16 is computed in f32).
    k: number of picks, a static int in ``[0, n]``.
    where: optional ``(n,)`` boolean mask of candidate items.
    first: index of the first pick (an int, may be traced); it must be a
      kept item.

  Returns:
    ``(k,)`` int32 indices in pick order; ``-1`` in slots left when fewer
    than ``k`` items are kept; all ``-1`` when a kept row holds a NaN or inf.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import k_center_greedy
    >>> x = jnp.array([[0., 0.], [0.1, 0.], [5., 5.], [0., 3.]])
    >>> k_center_greedy(x, 3).tolist()
    [0, 2, 3]

  References:
    Gonzalez, "Clustering to minimize the maximum intercluster distance",
    Theoretical Computer Science 38, 1985 (the farthest-first traversal);
    Sener & Savarese, "Active Learning for Convolutional Neural Networks: A
    Core-Set Approach", ICLR 2018, Algorithm 1 (k-Center-Greedy).
  """
  fn = "k_center_greedy"
  _common.check_features(features, fn)
  n = features.shape[0]
  k = _common.check_k(k, n, fn)
  checks.check_where(where, (n,), fn)
  checks.check_integer(first, "first", fn)
  if checks.is_concrete(first) and not 0 <= int(first) < max(n, 1):
    checks._fail(fn, f"`first` must lie in [0, {n}), got {int(first)}")
  x = numerics.promote_to_f32(jnp.asarray(features))
  if k == 0:
    return jnp.zeros((0,), jnp.int32)
  x_safe = x if where is None else jnp.where(where[:, None], x, 0.0)
  indices = greedy_max_min(x_safe, k, jnp.asarray(first, jnp.int32),
                           _squared_euclidean, where)
  return _common.invalidate(indices, _common.nonfinite_kept(x, where))


def _divprune_single(tokens: jax.Array, k: int) -> jax.Array:
  norm = numerics.safe_norm(tokens, axis=-1, keepdims=True)
  x = numerics.safe_divide(tokens, norm)
  # First pick (authors' code): the token whose nearest other token is the
  # farthest, i.e. the largest second-smallest entry of its column of the
  # cosine-distance matrix (the smallest is its own distance, ~0).
  d = 1.0 - x @ x.T
  second_smallest = -jax.lax.top_k(-d.T, 2)[0][:, 1]
  first = jnp.argmax(second_smallest).astype(jnp.int32)
  indices = greedy_max_min(x, k, first, _cosine_distance, None)
  return _common.invalidate(indices, _common.nonfinite_kept(tokens, None))


def divprune(tokens: jax.Array, k: int) -> jax.Array:
  r"""DivPrune: keep the ``k`` most diverse tokens (greedy max-min, cosine).

  With the cosine distance :math:`d(x, y) = 1 - \frac{x^\top y}
  {\lVert x\rVert \lVert y\rVert}`, the first kept token maximizes the
  distance to its nearest other token,
  :math:`s_1 = \operatorname{arg\,max}_j \min_{i \neq j} d(x_i, x_j)`, then
  (Eq. 3 of the paper)

  .. math::

    s_{t+1} = \operatorname*{arg\,max}_{i \notin S}\ \min_{s \in S}
    d(x_i, x_s).

  The first pick reads the ``(n, n)`` distance matrix (``O(n^2 d)``, as in
  the authors' code); the greedy steps are ``O(n k d)``. Batched over any
  leading axes (``jax.vmap``). Use :func:`selection_mask` for a mask, and
  sort the indices to keep the tokens' original order.

  Args:
    tokens: ``(..., n, d)`` floating token embeddings (visual tokens of a
      multimodal model).
    k: number of kept tokens, a static int in ``[0, n]``.

  Returns:
    ``(..., k)`` int32 indices in pick order (all ``-1`` for a sequence
    with a NaN or inf token).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import divprune
    >>> t = jnp.array([[1., 0.], [0.9, 0.1], [0., 1.], [-1., 0.1]])
    >>> divprune(t, 2).tolist()
    [3, 0]

  References:
    Alvar, Singh, Akbari & Zhang, "DivPrune: Diversity-based Visual Token
    Pruning for Large Multimodal Models", CVPR 2025 (arXiv 2503.02175),
    Eq. 3 and Algorithm 1. Code: https://github.com/vbdi/divprune
    (``DivPrune``: cosine distance, first token from the second-smallest
    column entry).
  """
  fn = "divprune"
  checks.check_floating(tokens, "tokens", fn)
  checks.check_min_rank(tokens, 2, "tokens", fn)
  n = tokens.shape[-2]
  k = _common.check_k(k, n, fn)
  x = numerics.promote_to_f32(jnp.asarray(tokens))
  batch = x.shape[:-2]
  if k == 0:
    return jnp.zeros(batch + (0,), jnp.int32)
  if n == 1:
    return jnp.zeros(batch + (1,), jnp.int32)
  flat = x.reshape((-1,) + x.shape[-2:])
  out = jax.vmap(lambda t: _divprune_single(t, k))(flat)
  return out.reshape(batch + (k,))
