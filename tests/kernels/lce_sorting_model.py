"""Numpy model of the CCE-filtered backward on a (sorted) tile grid.

Independent of the library: float64 probabilities on materialized logits, the
tile grid walked in Python, and the gradient of every tile whose
``max |p - onehot| < eps`` zeroed (Wijmans et al. 2025, arXiv:2411.09009,
Sec. 4.3). Used by the vocab-sorting tests of ``xla_chunked``, the Pallas
kernels and the vocab-parallel mode.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

import lce_common as C


def logit_average(x, w, y, bias=None, softcap=None):
  """Each class's (bias-added, soft-capped) logit averaged over valid rows."""
  z = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
  if bias is not None:
    z = z + np.asarray(bias, np.float64)
  if softcap is not None:
    z = softcap * np.tanh(z / softcap)
  keep = np.asarray(y) != C.IGNORE
  return z[keep].mean(0) if keep.any() else np.zeros(z.shape[1])


def peaked(n=37, d=8, v=122, seed=0):
  """Few 'hot' classes spread over the vocabulary (ids 3, 19, 35, ...) carry
  all the probability mass: with the natural order they sit in different
  vocab blocks, sorted they share the last one(s)."""
  rng = np.random.default_rng(seed)
  u = np.zeros(d)
  u[0] = 1.0
  w = 0.3 * rng.standard_normal((v, d))
  hot = np.arange(3, v, 16)
  w[hot] += 2.0 * u
  y = rng.choice(hot, n)
  x = 4.0 * u + 0.5 * w[y] + 0.1 * rng.standard_normal((n, d))
  y[rng.random(n) < 0.15] = C.IGNORE
  return (jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32),
          jnp.asarray(y, jnp.int32))


def tiles(n, v, bt, bv, order, clamp=True):
  """The backward's tile grid: (stat rows, owned rows, vocab columns).

  ``clamp``: ``xla_chunked``'s last token block starts at ``n - bt`` and owns
  only its new rows; otherwise (Pallas) blocks are disjoint and padded rows
  (p = 0) are dropped."""
  out = []
  for v0 in range(0, v, bv):
    cols = order[v0:v0 + bv]
    for i in range(-(-n // bt)):
      start = min(i * bt, n - bt) if clamp else i * bt
      rows = np.arange(start, min(start + bt, n))
      out.append((rows, rows[rows >= i * bt], cols))
  return out


def probs(x, w, y):
  """Float64 ``(p, onehot, lse, keep)`` of the plain (no bias) problem."""
  z = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
  lse = logsumexp(z, axis=1)
  p = np.exp(z - lse[:, None])
  y = np.asarray(y)
  onehot = np.zeros_like(p)
  keep = y != C.IGNORE
  onehot[np.arange(len(y))[keep], y[keep]] = 1.0
  return p, onehot, lse, keep


def filtered_gradients(x, w, y, *, eps, bt, bv, orders, clamp, reduction="sum"):
  """``(dX, dW, skipped)`` of ``evaluate``'s VJP (no bias, ``reduction``
  'sum') with every tile below ``eps`` zeroed.

  ``orders``: one class order per vocab shard, each a permutation of that
  shard's ``len(order)`` consecutive classes (local ids); a single shard is
  the plain call.
  """
  ct_loss, ct_lse = C.cotangents(y, reduction)
  p, onehot, _, keep = probs(x, w, y)
  n = p.shape[0]
  grad = (float(ct_loss) * keep)[:, None] * (p - onehot)
  grad = grad + ct_lse.astype(np.float64)[:, None] * p
  dev = np.abs(p - onehot)
  skipped, start = 0, 0
  for order in orders:
    for rows, own, cols in tiles(n, len(order), bt, bv, np.asarray(order),
                                 clamp):
      cols = start + cols
      if dev[np.ix_(rows, cols)].max() < eps:
        grad[np.ix_(own, cols)] = 0.0
        skipped += 1
    start += len(order)
  x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
  return grad @ w64, grad.T @ x64, skipped
