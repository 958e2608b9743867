"""Matrix Nuclear-Norm of hidden states (Li, Xia, Chang & Wu 2024)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics


def matrix_nuclear_norm(hidden_states: jax.Array, *,
                        where: Optional[jax.Array] = None,
                        exact: bool = False) -> jax.Array:
  r"""Matrix Nuclear-Norm (MNN) of a response's hidden states, per token.

  For the ``T x d`` hidden states ``R`` of the kept tokens: centre the columns
  (``R <- R - mean_t R``), L2-normalize every row, then

  .. math::

    \mathrm{MNN}(R) = \frac1T \sum_{j=1}^{D} \lVert R_{:,(j)} \rVert_2,
    \quad D = \min(T, d),

  the sum of the ``D`` largest column norms (an ``L_{1,2}`` approximation of
  the nuclear norm without an SVD). With ``exact=True`` the exact nuclear
  norm :math:`\frac1T \sum_i \sigma_i(R)` of the same preprocessed matrix is
  returned instead (a check: the sum of *all* column norms upper-bounds it).

  Defined values where the reference gives NaN / -1: a single kept token
  (centred row = 0) gives 0, no kept token gives 0.

  Args:
    hidden_states: ``(..., T, d)`` floating hidden states (one response per
      leading index).
    where: optional ``(..., T)`` boolean token mask (padding = False).
    exact: return the exact nuclear norm (SVD) instead of the approximation.

  Returns:
    f32 array of shape ``...`` (one value per response).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import matrix_nuclear_norm
    >>> r = jnp.array([[1., 0.], [-1., 0.], [0., 3.], [0., -3.]])
    >>> round(float(matrix_nuclear_norm(r)), 4)  # column norms sqrt(2), sqrt(2)
    0.7071

  References:
    Li, Xia, Chang & Wu, "Large Language Model Evaluation via Matrix
    Nuclear-Norm", 2024 (arXiv 2410.10672), Sec. 3 (the L_{1,2}-norm
    approximation of the nuclear norm; the steps were checked against the
    authors' code: centre, row-normalize, top-``D`` column
    norms, divide by the token count). Code:
    https://github.com/MLGroupJLU/MatrixNuclearNorm (``code/MNN.py``).
  """
  fn = "matrix_nuclear_norm"
  checks.check_floating(hidden_states, "hidden_states", fn)
  checks.check_min_rank(hidden_states, 2, "hidden_states", fn)
  shape = jnp.shape(hidden_states)
  if shape[-1] == 0:
    checks._fail(fn, f"`hidden_states` needs d >= 1, got shape {shape}")
  checks.check_where(where, shape[:-1], fn)
  r = numerics.promote_to_f32(jnp.asarray(hidden_states))
  t, d = r.shape[-2], r.shape[-1]
  if where is None:
    keep = jnp.ones(r.shape[:-1], bool)
  else:
    keep = jnp.broadcast_to(where, r.shape[:-1])
  keep_f = keep[..., None].astype(r.dtype)
  count = jnp.sum(keep, axis=-1).astype(r.dtype)                     # (...)
  mean = numerics.safe_divide(jnp.sum(r * keep_f, axis=-2),
                              count[..., None])                      # (..., d)
  centred = (r - mean[..., None, :]) * keep_f
  rows = numerics.safe_divide(
      centred, numerics.safe_norm(centred, axis=-1, keepdims=True))
  if exact:
    if t == 0:
      total = jnp.zeros(r.shape[:-2], r.dtype)
    else:
      total = jnp.sum(jnp.linalg.svd(rows, compute_uv=False), axis=-1)
  else:
    col = numerics.safe_norm(rows, axis=-2)                          # (..., d)
    col = -jnp.sort(-col, axis=-1)                                   # descending
    top = jnp.minimum(count, d)
    rank = jnp.arange(d, dtype=r.dtype)
    total = jnp.sum(jnp.where(rank < top[..., None], col, 0.0), axis=-1)
  return numerics.safe_divide(total, count)
