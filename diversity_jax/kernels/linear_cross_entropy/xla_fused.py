"""``fused_backward=True`` for ``xla_chunked``: gradients in the forward pass.

Opt-in ``fused_backward`` (``reduced``): for f32 scalar losses the gradients
are formed in the forward pass from full-vocabulary row blocks (Liger-style,
6 N D V flops in total) and only scaled by the cotangent in the backward. It
is faster; its temporary is one ``(rows, V)`` f32 logit tile of ~32 MiB
(``n_fused_rows``; the target logit is a gather and the gradient tile
overwrites the logits, so no second tile with jax / jaxlib >= 0.10.2, whose
XLA reuses that buffer; two tiles with older ones), which is small next to the
reference's logits only for large N, and its ``dW`` GEMMs lose efficiency
when ``rows`` gets small (very large V). Its ``dX`` / ``dW`` residuals (f32,
``N D + V D``) exist from this forward to this backward, where the streaming
path keeps only the ``(N,)`` lse: no extra peak when the loss is the last op
before the backward (a plain LM step), but ``V D`` f32 per pending forward
where forwards run ahead of their backwards (pipeline-parallel microbatches,
more forward work after the loss); and it has no gradient filter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from diversity_jax._src import label_range
from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import F32
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _block
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _cdiv
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _class_weights
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _rows
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import block_sizes
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _sum_to_primal
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _take
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _vary
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import varying_axes


def _fused_forward(x, w, labels, invalid, bias, k, hp, ignore_index, reduction,
                   bt, bv, weights=None):
  """Loss and (dX, dW, db) for a unit loss cotangent, token block by token block.

  ``weights`` (N,) f32 or None: per-token loss weights (row ``i``'s loss and
  gradient scaled by ``weights_i``; ``'mean'`` divides by ``sum_i weights_i
  k_{y_i}`` over the non-ignored rows).

  Each block materializes its full-vocabulary ``(bt, V)`` f32 logits once:
  lse, loss and ``G`` come from the same tile, then ``dX_i = G W`` and
  ``dW += G^T X_i`` (Liger-Kernel's chunking, Hsu et al. 2024, Sec. 3.2).
  Rows with an ``invalid`` label get NaN in their loss and cotangent, as the
  streaming paths' per-row loss gets in ``api.linear_cross_entropy``.
  """
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  nt = _cdiv(n, bt)
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  k_total = jnp.sum(k)
  row_w = jnp.ones((n,), F32) if weights is None else weights
  if reduction == "mean":
    denom = jnp.sum(jnp.where(valid, k[safe] * row_w, 0.0))
    scale = 1.0 / jnp.where(denom > 0, denom, 1.0)
  else:
    scale = jnp.ones((), F32)
  labels_eff = jnp.where(valid, labels, -2)
  cols = jnp.arange(v)

  def token_block(i, carry):
    loss, dx, dw, db = carry
    t0, _, own_rows = _block(i, n, bt)
    sl = lambda a: jax.lax.dynamic_slice_in_dim(a, t0, bt)
    x_blk = _take(x, t0, bt, i)
    s = _math.tile_logits(x_blk, w, bias, hp.softcap, layout=hp.weight_layout)
    y_blk = sl(labels_eff)
    v_blk = sl(valid) & own_rows
    m, l = _math.online_lse_update(jnp.full((bt,), -jnp.inf, F32),
                                   jnp.zeros((bt,), F32), s)
    lse = _math.finalize_lse(m, l)
    s_y, s_w = _math.full_row_target_and_weighted_sum(s, y_blk, k,
                                                      hp.label_smoothing)
    k_y = k[sl(safe)]
    bad = sl(invalid) & own_rows
    rows = label_range.nan_where_invalid(
        _math.row_loss(lse, s_y, s_w, k_y, v_blk, hp, k_total) * sl(row_w),
        bad)
    g = label_range.nan_where_invalid(scale * sl(row_w), bad)
    alpha, beta, gamma = _math.grad_coefficients(g, None, lse, k_y, v_blk, hp,
                                                 k_total)
    onehot = y_blk[:, None] == cols[None, :]
    d, _ = _math.tile_grad(s, lse, alpha, beta, gamma, onehot, k, hp)
    dc = d.astype(x.dtype)
    dx_t = _math.dx_tile(dc, w, hp.weight_layout)
    old = jax.lax.dynamic_slice_in_dim(dx, t0, bt)
    dx = jax.lax.dynamic_update_slice_in_dim(
        dx, jnp.where(own_rows[:, None], dx_t, old), t0, 0)
    dw = _accumulate_dw(dw, dc, x_blk, bv, hp.weight_layout)
    if db is not None:
      db = db + jnp.sum(d, axis=0)
    return loss + jnp.sum(rows) * scale, dx, dw, db

  init = (jnp.zeros((), F32), jnp.zeros(x.shape, F32), jnp.zeros(w.shape, F32),
          None if bias is None else jnp.zeros((v,), F32))
  # Inside jax.shard_map the carries vary over the inputs' mesh axes.
  init = _vary(init, varying_axes(x, w, labels, invalid, bias, k, weights))
  return jax.lax.fori_loop(0, nt, token_block, init)


def _accumulate_dw(dw, g, x_blk, bv, layout="vd"):
  """``dw + g^T x_blk`` (f32, ``g`` (T, V)) in vocab chunks of ``bv`` rows
  (``layout='dv'``: ``dw + x_blk^T g`` in chunks of ``bv`` columns).

  One (V, D) GEMM would materialize its full product before the add (an
  extra V x D f32 temporary and a whole-``dW`` add pass per token block);
  chunk by chunk each product is added in place.
  """
  ax = _math.vocab_axis(layout)
  v = dw.shape[ax]
  bv = min(bv, v)

  def chunk(dw, v0, size):
    g_c = jax.lax.dynamic_slice_in_dim(g, v0, size, axis=1)
    upd = _math.dw_tile(g_c, x_blk, layout)
    return jax.lax.dynamic_update_slice_in_dim(
        dw, jax.lax.dynamic_slice_in_dim(dw, v0, size, ax) + upd, v0, ax)

  n_full, tail = divmod(v, bv)
  dw = jax.lax.fori_loop(0, n_full, lambda c, dw: chunk(dw, c * bv, bv), dw)
  return chunk(dw, n_full * bv, tail) if tail else dw


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9, 10, 11))
def _reduced(x, w, bias, class_weights, labels, invalid, weights, hp,
             ignore_index, reduction, bt, bv):
  loss, _ = _rows(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv,
                  None, False)
  loss = label_range.nan_where_invalid(loss, invalid)
  row_w = jnp.ones_like(loss) if weights is None else weights
  if reduction == "sum":
    return jnp.sum(loss * row_w)
  k = _class_weights(class_weights, _math.vocab_size(w, hp.weight_layout))
  valid = labels != ignore_index
  denom = jnp.sum(jnp.where(valid, k[jnp.where(valid, labels, 0)] * row_w,
                            0.0))
  return jnp.sum(loss * row_w) / jnp.where(denom > 0, denom, 1.0)


def _reduced_fwd(x, w, bias, class_weights, labels, invalid, weights, hp,
                 ignore_index, reduction, bt, bv):
  v = _math.vocab_size(w, hp.weight_layout)
  k = _class_weights(class_weights, v)
  fb = max(1, min(n_fused_rows(v), bt, x.shape[0]))
  loss, dx, dw, db = _fused_forward(x, w, labels, invalid, bias, k, hp,
                                    ignore_index, reduction, fb, bv, weights)
  # Empty slices of the primals carry their mesh-axis types to the backward.
  empty = tuple(None if a is None else a[:0] for a in (x, w, bias))
  return loss, (dx, dw, db, class_weights, weights, empty)


def _reduced_bwd(hp, ignore_index, reduction, bt, bv, res, ct):
  dx, dw, db, class_weights, weights, empty = res
  ct = ct.astype(F32)
  dcw = None if class_weights is None else jnp.zeros_like(class_weights)
  dtw = None if weights is None else jnp.zeros_like(weights)
  # The f32 residuals become the gradient buffers: XLA drops a unit scale and
  # scales in place otherwise (no V x D temporary; see _accumulate_dw).
  grads = (dx * ct, dw * ct, None if db is None else db * ct)
  dx, dw, db = _sum_to_primal(grads, empty)
  return dx, dw, db, dcw, None, None, dtw


_reduced.defvjp(_reduced_fwd, _reduced_bwd)


def n_fused_rows(v: int, budget_bytes: int = 32 * 2**20) -> int:
  """Token rows per fused block: a ``(rows, V)`` f32 tile of ~``budget``."""
  return max(8, budget_bytes // (4 * v))


def fused_applies(x, w, bias, reduction, return_lse) -> bool:
  """True when ``reduced`` is used: f32 inputs, scalar loss, no lse output.

  (With narrower inputs the f32 ``dW`` accumulator would add 4 V D bytes of
  temporary memory; with a per-row loss or an lse output the cotangents
  are not known in the forward pass.)
  """
  f32 = lambda a: a is None or a.dtype == F32
  return (reduction != "none" and not return_lse and x.dtype == F32
          and w.dtype == F32 and f32(bias))


def reduced(x, w, labels, invalid, bias, class_weights, *, hp: _math.Hyper,
            ignore_index, reduction, block_tokens=None, block_vocab=None,
            weights=None, **unused):
  """Scalar ``'mean'``/``'sum'`` loss whose gradients are formed in the forward
  pass (6 N D V flops instead of 8); see ``fused_applies``. ``invalid`` (N,)
  bool marks rows whose (out-of-range) label makes their loss and gradient
  NaN (``label_range``); ``weights``: f32 per-token loss weights (N,) or
  None."""
  del unused
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  bt, bv = block_sizes(n, v, block_tokens, block_vocab)
  return _reduced(x, w, bias, class_weights, labels, invalid, weights, hp,
                  ignore_index, reduction, bt, bv)
