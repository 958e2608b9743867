"""Shared per-element / per-row math of every linear cross-entropy path.

One copy of: soft-cap and its derivative, the per-row loss with label
smoothing / class weights / log-partition penalty, the per-row gradient
coefficients, the per-tile gradient ``dL/dz``, the CCE gradient filter, the
merge of split online-LSE partials and the vocab-sorting order. The reference,
``xla_chunked`` and the Pallas kernels all call these functions, so a formula
fix lands everywhere at once.

Notation (cce.md section 5; Wijmans et al. 2025, "Cut Your Losses in
Large-Vocabulary Language Models", arXiv:2411.09009, Eq. 1-4):

* ``z_ij = x_i . w_j + b_j``; soft-capped logit ``s_ij = c tanh(z_ij / c)``.
* ``lse_i = log sum_j exp(s_ij)``, ``p_ij = exp(s_ij - lse_i)``.
* class weights ``k_j`` (1 when absent), ``K = sum_j k_j``; smoothing ``a``.
* per-row loss (PyTorch ``cross_entropy(weight=k, label_smoothing=a)`` plus the
  PaLM z-loss ``lam * lse^2``, Chowdhery et al. 2022, Sec. 5):

    L_i = (1 - a) k_{y_i} (lse_i - s_{i y_i}) + (a / V) (K lse_i - sum_j k_j s_ij)
          + lam lse_i^2

* ``dL_i/ds_ij = alpha_i p_ij - beta_i [j = y_i] - gamma_i k_j`` with, for an
  upstream loss cotangent ``g_i`` and lse cotangent ``h_i``:
  ``alpha_i = g_i ((1 - a) k_{y_i} + a K / V + 2 lam lse_i) + h_i``,
  ``beta_i = g_i (1 - a) k_{y_i}``, ``gamma_i = g_i a / V``.
* soft-cap chain rule: ``dL/dz = dL/ds * (1 - (s / c)^2)``.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

F32 = jnp.float32
NEG_INF = float("-inf")


#: Layouts of the classifier ``w``: ``'vd'`` = ``(V, D)``, a row per class
#: (``nn.Linear``, CCE); ``'dv'`` = ``(D, V)``, a column per class (flax
#: ``nn.Dense``'s kernel).
WEIGHT_LAYOUTS = ("vd", "dv")


class Hyper(NamedTuple):
  """Static hyperparameters shared by every implementation (hashable)."""
  num_classes: int                   # V (unpadded)
  label_smoothing: float = 0.0
  log_partition_penalty: float = 0.0
  softcap: Optional[float] = None
  has_class_weights: bool = False
  weight_layout: str = "vd"          # of ``w``, see WEIGHT_LAYOUTS


def vocab_axis(layout: str) -> int:
  """Axis of ``w`` that indexes the classes (0 for ``'vd'``, 1 for ``'dv'``)."""
  return 0 if layout == "vd" else 1


def vocab_size(w, layout: str) -> int:
  """Number of classes (rows or columns) of ``w`` in ``layout``."""
  return w.shape[vocab_axis(layout)]


#: ``axis`` of the tile functions below: the tile's vocab axis. 1: a
#: token-major tile ``(T, C)`` (the default); 0: a vocab-major tile ``(C, T)``,
#: the transposed logits ``W_blk x_blk^T``.
TOKEN_MAJOR, VOCAB_MAJOR = 1, 0


def per_row(a, axis: int = TOKEN_MAJOR):
  """A per-token vector (T,) shaped to broadcast against a tile."""
  return a[:, None] if axis == TOKEN_MAJOR else a[None, :]


def per_class(a, axis: int = TOKEN_MAJOR):
  """A per-class vector (C,) shaped to broadcast against a tile."""
  return a[None, :] if axis == TOKEN_MAJOR else a[:, None]


def dx_tile(d, w_blk, layout: str = "vd", axis: int = TOKEN_MAJOR):
  """``d @ W_blk`` (T, D) in f32 for a gradient tile ``d`` (T, C) (``axis=0``:
  ``d^T @ W_blk`` for ``d`` (C, T))."""
  dims = ((axis,), (vocab_axis(layout),))
  return jax.lax.dot_general(d, w_blk, (dims, ((), ())),
                             preferred_element_type=F32)


def dw_tile(d, x_blk, layout: str = "vd", axis: int = TOKEN_MAJOR):
  """This tile's ``dW`` block in ``w``'s layout, f32: ``d^T x_blk`` (C, D) for
  ``'vd'``, ``x_blk^T d`` (D, C) for ``'dv'`` (``d`` (T, C); with ``axis=0``
  ``d`` is (C, T))."""
  rows = 1 - axis   # the token axis of d
  if layout == "vd":
    dims = ((rows,), (0,))
    a, b = d, x_blk
  else:
    dims = ((0,), (rows,))
    a, b = x_blk, d
  return jax.lax.dot_general(a, b, (dims, ((), ())),
                             preferred_element_type=F32)


def softcap_logits(z: jax.Array, softcap: Optional[float]) -> jax.Array:
  """``s = c tanh(z / c)`` (identity when ``softcap`` is None); f32 in, f32 out."""
  if softcap is None:
    return z
  return softcap * jnp.tanh(z / softcap)


def softcap_grad_factor(s: jax.Array, softcap: Optional[float]) -> jax.Array:
  """``ds/dz = 1 - tanh^2(z / c) = 1 - (s / c)^2`` from the *capped* logit."""
  t = s / softcap
  return 1.0 - t * t


def tile_logits(x_blk, w_blk, b_blk, softcap, col_valid=None, layout="vd",
                axis: int = TOKEN_MAJOR):
  """Capped f32 logits of one (rows x cols) tile; invalid columns get -inf.

  ``x_blk`` (T, D), ``w_blk`` (C, D) (``layout='vd'``) or (D, C) (``'dv'``)
  in the input dtype; the dot accumulates in f32 (``preferred_element_type``).
  ``col_valid`` (C,) bool masks padded / duplicated vocab columns with -inf
  *after* the soft-cap (a capped -inf would be ``-c``, not -inf). The tile
  is (T, C), or (C, T) with ``axis=0`` (``W_blk x_blk^T``).
  """
  w_dim = 1 if layout == "vd" else 0
  if axis == TOKEN_MAJOR:
    operands, dims = (x_blk, w_blk), ((1,), (w_dim,))
  else:
    operands, dims = (w_blk, x_blk), ((w_dim,), (1,))
  z = jax.lax.dot_general(*operands, (dims, ((), ())),
                          preferred_element_type=F32)
  return finish_logits(z, b_blk, softcap, col_valid, axis)


def finish_logits(z, b_blk, softcap, col_valid=None, axis: int = TOKEN_MAJOR):
  """Bias, soft-cap and -inf masking of an f32 logit tile ``z`` (T, C) (or
  (C, T) with ``axis=0``)."""
  if b_blk is not None:
    z = z + per_class(b_blk.astype(F32), axis)
  s = softcap_logits(z, softcap)
  if col_valid is not None:
    s = jnp.where(per_class(col_valid, axis), s, NEG_INF)
  return s


def online_lse_update(m, l, s, axis: int = TOKEN_MAJOR):
  """One step of the online log-sum-exp: carry (m, l) per row, new tile ``s``
  (vocab axis ``axis``).

  ``m' = max(m, max_j s_j)``, ``l' = l exp(m - m') + sum_j exp(s_j - m')``. Rows
  whose max is still -inf keep ``l = 0`` without producing NaN.
  """
  m_new = jnp.maximum(m, jnp.max(s, axis=axis))
  m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
  l_new = l * jnp.exp(m - m_safe) + jnp.sum(
      jnp.exp(s - per_row(m_safe, axis)), axis=axis)
  return m_new, l_new


def finalize_lse(m, l):
  """``lse = m + log l`` (finite for every row with at least one column)."""
  m_safe = jnp.where(jnp.isfinite(m), m, 0.0)
  return m_safe + jnp.log(jnp.maximum(l, jnp.finfo(F32).tiny))


def merge_lse(m, l):
  """lse from online-LSE partials ``(m, l)`` stacked on axis 0 (vocab
  splits); a split that saw only masked columns (``m = -inf``, ``l = 0``)
  adds nothing."""
  m_all = jnp.max(m, axis=0)
  m_safe = jnp.where(jnp.isfinite(m_all), m_all, 0.0)
  return finalize_lse(m_all, jnp.sum(l * jnp.exp(m - m_safe), axis=0))


def target_and_weighted_sum(s, labels_blk, col_ids, k_blk, smoothing):
  """Per-row ``s_{i y_i}`` and ``sum_j k_j s_ij`` contributions of one tile.

  ``col_ids`` (C,) global column indices; invalid columns must hold -inf in
  ``s`` and be excluded here via ``k_blk == 0`` / never matching a label (so
  the target select needs no finiteness guard: one pass over the tile).
  """
  onehot = labels_blk[:, None] == col_ids[None, :]
  s_y = jnp.sum(jnp.where(onehot, s, 0.0), axis=-1)
  if smoothing:
    s_fin = jnp.where(jnp.isfinite(s), s, 0.0)
    s_w = jnp.sum(s_fin * k_blk[None, :], axis=-1)
  else:
    s_w = jnp.zeros_like(s_y)
  return s_y, s_w


def full_row_target_and_weighted_sum(s, labels, k, smoothing,
                                     axis: int = TOKEN_MAJOR):
  """``target_and_weighted_sum`` for finite full-vocabulary rows ``s`` (T, V)
  (``axis=0``: (V, T)).

  The target logit is a gather and ``sum_j k_j s_ij`` a mat-vec, so no
  ``(T, V)`` temporary is formed next to ``s`` (a masked tile feeding XLA:CPU's
  reduction would be one). ``labels`` < 0 (ignored rows) give ``s_y = 0``.
  """
  idx = per_row(jnp.maximum(labels, 0), axis)
  s_y = jnp.take_along_axis(s, idx, axis=axis).reshape(labels.shape)
  s_y = jnp.where(labels >= 0, s_y, 0.0)
  # HIGHEST: an f32 sum like the tile path's (TPU's default would round s to
  # bf16); V flops per row, nothing next to the logit GEMM's 2 D V.
  hi = jax.lax.Precision.HIGHEST
  if not smoothing:
    s_w = jnp.zeros_like(s_y)
  elif axis == TOKEN_MAJOR:
    s_w = jnp.dot(s, k, precision=hi)
  else:
    s_w = jnp.dot(k, s, precision=hi)
  return s_y, s_w


def row_loss(lse, s_y, s_w, k_y, valid, hp: Hyper, k_total):
  """Per-row loss ``L_i`` (see module docstring); 0 on ignored rows."""
  a = hp.label_smoothing
  loss = (1.0 - a) * k_y * (lse - s_y)
  if a:
    loss = loss + (a / hp.num_classes) * (k_total * lse - s_w)
  if hp.log_partition_penalty:
    loss = loss + hp.log_partition_penalty * lse * lse
  return jnp.where(valid, loss, 0.0)


def grad_coefficients(g, h, lse, k_y, valid, hp: Hyper, k_total):
  """Per-row ``(alpha, beta, gamma)`` of ``dL/ds = alpha p - beta onehot - gamma k``."""
  a = hp.label_smoothing
  g = jnp.where(valid, g, 0.0)
  alpha = g * ((1.0 - a) * k_y + (a / hp.num_classes) * k_total
               + 2.0 * hp.log_partition_penalty * lse)
  if h is not None:
    alpha = alpha + h
  beta = g * (1.0 - a) * k_y
  gamma = g * (a / hp.num_classes)
  return alpha, beta, gamma


def tile_grad(s, lse_blk, alpha, beta, gamma, onehot, k_blk, hp: Hyper,
              axis: int = TOKEN_MAJOR):
  """``G = dL/dz`` on one tile in f32 (target column ``alpha p - beta`` in f32),
  in the tile's orientation (``axis``; ``onehot`` shaped like ``s``).

  Also returns the CCE filter statistic ``max |p - onehot|`` of the tile,
  NaN when a row coefficient is NaN (a NaN loss cotangent, an out-of-range
  label): callers skip a tile only when ``filt < eps`` holds, so a NaN
  always reaches ``dX`` / ``dW`` as it does without the filter.
  """
  row = lambda a: per_row(a, axis)
  p = jnp.exp(s - row(lse_blk))               # -inf columns -> exactly 0
  d = row(alpha) * p - jnp.where(onehot, row(beta), 0.0)
  if hp.label_smoothing:
    d = d - row(gamma) * per_class(k_blk, axis)
  if hp.softcap is not None:
    s_fin = jnp.where(jnp.isfinite(s), s, 0.0)
    d = d * softcap_grad_factor(s_fin, hp.softcap)
  # |p - onehot| without materializing a float one-hot tile; + 0 * sum(alpha)
  # (T values, not a tile pass) carries a NaN coefficient into the statistic.
  filt = jnp.max(jnp.abs(jnp.where(onehot, p - 1.0, p))) + 0.0 * jnp.sum(alpha)
  return d, filt


def class_average(sums, valid):
  """Per-class sums over the valid rows divided by their count (0 when every
  row is ignored): the logit average ``LA`` of vocab sorting."""
  return sums / jnp.maximum(jnp.sum(valid).astype(F32), 1.0)


def sorted_order(la):
  """``argsort(LA)`` as int32 (ascending, stable, as CCE
  ``cce.py::sort_logit_avg``), or None without ``LA`` (no sorting)."""
  return None if la is None else jnp.argsort(la, stable=True).astype(jnp.int32)


def resolve_filter_eps(filter_eps, dtype, hp: Hyper):
  """``'auto'`` -> ``finfo(dtype).eps / 32`` (CCE ``utils._handle_eps``).

  The filter drops ``alpha p`` entries with ``p < eps``; it is disabled (None)
  with label smoothing, whose ``-gamma k_j`` term is not small where p is.
  """
  if filter_eps is None or hp.label_smoothing:
    return None
  if isinstance(filter_eps, str):
    return float(jnp.finfo(dtype).eps) / 32.0
  return float(filter_eps) if filter_eps > 0 else None
