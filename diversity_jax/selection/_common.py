"""Shared pieces of the selectors: argument checks, masks, the NaN policy.

Every selector returns ``k`` indices (a static ``k``, so shapes never depend
on the data). A slot that cannot be filled (fewer than ``k`` kept items, or a
selector that stops early) holds ``-1``. NaN in gives no plausible pick: when
a kept item's features hold a NaN or inf, every index is ``-1``.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from diversity_jax._src import checks


def check_k(k, n: int, fn: str, name: str = "k") -> int:
  """``k`` must be a static integer in ``[0, n]``."""
  if isinstance(k, jax.core.Tracer):
    checks._fail(fn, f"`{name}` must be a static Python int, got a traced "
                 "value (mark it static: jax.jit(..., static_argnames='k'))",
                 TypeError)
  try:
    k = operator.index(k)
  except TypeError:
    checks._fail(fn, f"`{name}` must be an int, got {k!r}", TypeError)
  if not 0 <= k <= n:
    checks._fail(fn, f"`{name}` must lie in [0, {n}], got {k}")
  return k


def check_features(features, fn: str, name: str = "features"):
  checks.check_floating(features, name, fn)
  checks.check_rank(features, 2, name, fn)


def nonfinite_kept(features: jax.Array, where) -> jax.Array:
  """True when a kept row of ``features`` holds a NaN or inf."""
  bad = ~jnp.all(jnp.isfinite(features), axis=-1)
  if where is not None:
    bad = bad & where
  return jnp.any(bad)


def invalidate(indices: jax.Array, bad: jax.Array) -> jax.Array:
  """Every index becomes ``-1`` when ``bad``."""
  return jnp.where(bad, -1, indices)


def selection_mask(indices: jax.Array, n: int) -> jax.Array:
  r"""Boolean mask of the selected items from the ``k`` selected indices.

  .. math::

    m_i = [\exists j:\ \mathrm{indices}_j = i],\qquad i = 0, \dots, n - 1,

  with ``-1`` (an unfilled slot) selecting nothing. Batched: ``indices`` of
  shape ``(..., k)`` gives ``(..., n)``.

  Args:
    indices: ``(..., k)`` integer indices in ``[-1, n)``.
    n: number of items (static).

  Returns:
    ``(..., n)`` boolean mask.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import selection_mask
    >>> selection_mask(jnp.array([2, 0, -1]), 4).tolist()
    [True, False, True, False]

  References:
    The mask form of a selection used by every selector of
    :mod:`diversity_jax.selection` (static shapes under ``jax.jit``).
  """
  fn = "selection_mask"
  checks.check_integer(indices, "indices", fn)
  checks.check_min_rank(indices, 1, "indices", fn)
  n = check_k(n, 2**62, fn, "n")
  hits = jnp.asarray(indices)[..., :, None] == jnp.arange(n)
  return jnp.any(hits, axis=-2)
