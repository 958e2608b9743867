"""``fused_backward`` for ``xla_chunked``: gradients in the forward pass.

``reduced``: for scalar losses the gradients are formed in the forward pass
from full-vocabulary row blocks (Liger-style, 6 N D V flops in total against
the streaming path's 8) and only scaled by the cotangent in the backward. The
default on CPU for f32 inputs, and for bf16 / f16 on hosts without a native
bf16 dot (``fused_by_default``); opt-in elsewhere. Its temporary is one ``(V,
rows)`` f32 logit tile of ~32 MiB (``n_fused_rows``, at least 128 rows; the
target logit is a gather and the gradient tile overwrites the logits, so one
tile where XLA reuses that buffer, two elsewhere), which is small next to the
reference's logits only for large N. Its ``dX`` / ``dW`` residuals (f32, ``N D
+ V D``) exist from this forward to this backward, where the streaming path
keeps only the ``(N,)`` lse: for f32 inputs they become the gradient buffers
(no extra peak when the loss is the last op before the backward, a plain LM
step), but they are ``V D`` f32 per pending forward where forwards run ahead
of their backwards (pipeline-parallel microbatches, more forward work after
the loss); bf16 / f16 inputs add f32 copies of ``w`` (XLA:CPU converts the
operands of the ``dX`` GEMM, which contracts the tile's leading axis, and
hoists the convert) and of ``dW`` (the accumulator): ``8 V D`` bytes. No
gradient filter.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from diversity_jax._src import label_range
from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy import xla_chunked
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

#: The fused path's logit tiles are vocab-major, ``(V, rows) = W x_blk^T``:
#: XLA:CPU's Eigen GEMMs run the ``(rows, V)`` logit GEMM at a quarter to two
#: thirds of the ``(V, rows)`` one's rate for 64-1024 rows, YNNPACK's at
#: about the same (``benchmarks/lce_tile_orientation.py``, BENCHMARKS.md);
#: ``dW`` chunks are then contiguous row slices of the tile.
AXIS = _math.VOCAB_MAJOR


def _fused_forward(x, w, labels, invalid, bias, k, hp, ignore_index, reduction,
                   bt, bv, weights=None):
  """Loss and (dX, dW, db) for a unit loss cotangent, token block by token block.

  ``weights`` (N,) f32 or None: per-token loss weights (row ``i``'s loss and
  gradient scaled by ``weights_i``; ``'mean'`` divides by ``sum_i weights_i
  k_{y_i}`` over the non-ignored rows).

  Each block materializes its full-vocabulary f32 logits once, vocab-major
  (``S_i^T = W X_i^T``, ``(V, bt)``): lse, loss and ``G_i^T`` come from the
  same tile, then ``dX_i = G_i W`` and ``dW += G_i^T X_i`` (Liger-Kernel's
  chunking, Hsu et al. 2024, Sec. 3.2).
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
    s = _math.tile_logits(x_blk, w, bias, hp.softcap, layout=hp.weight_layout,
                          axis=AXIS)
    y_blk = sl(labels_eff)
    v_blk = sl(valid) & own_rows
    m, l = _math.online_lse_update(jnp.full((bt,), -jnp.inf, F32),
                                   jnp.zeros((bt,), F32), s, AXIS)
    lse = _math.finalize_lse(m, l)
    s_y, s_w = _math.full_row_target_and_weighted_sum(
        s, y_blk, k, hp.label_smoothing, AXIS)
    k_y = k[sl(safe)]
    bad = sl(invalid) & own_rows
    rows = label_range.nan_where_invalid(
        _math.row_loss(lse, s_y, s_w, k_y, v_blk, hp, k_total) * sl(row_w),
        bad)
    g = label_range.nan_where_invalid(scale * sl(row_w), bad)
    alpha, beta, gamma = _math.grad_coefficients(g, None, lse, k_y, v_blk, hp,
                                                 k_total)
    onehot = _math.per_class(cols, AXIS) == _math.per_row(y_blk, AXIS)
    d, _ = _math.tile_grad(s, lse, alpha, beta, gamma, onehot, k, hp, AXIS)
    dc = d.astype(x.dtype)
    dx_t = _math.dx_tile(dc, w, hp.weight_layout, AXIS)
    old = jax.lax.dynamic_slice_in_dim(dx, t0, bt)
    dx = jax.lax.dynamic_update_slice_in_dim(
        dx, jnp.where(own_rows[:, None], dx_t, old), t0, 0)
    dw = _accumulate_dw(dw, dc, x_blk, bv, hp.weight_layout)
    if db is not None:
      db = db + jnp.sum(d, axis=1 - AXIS)
    return loss + jnp.sum(rows) * scale, dx, dw, db

  init = (jnp.zeros((), F32), jnp.zeros(x.shape, F32), jnp.zeros(w.shape, F32),
          None if bias is None else jnp.zeros((v,), F32))
  # Inside jax.shard_map the carries vary over the inputs' mesh axes.
  init = _vary(init, varying_axes(x, w, labels, invalid, bias, k, weights))
  return jax.lax.fori_loop(0, nt, token_block, init)


def _accumulate_dw(dw, g, x_blk, bv, layout="vd"):
  """``dw + g x_blk`` (f32, ``g`` (V, T) vocab-major) in vocab chunks of
  ``bv`` rows (``layout='dv'``: ``dw + x_blk^T g^T`` in chunks of ``bv``
  columns).

  One (V, D) GEMM would materialize its full product before the add (an
  extra V x D f32 temporary and a whole-``dW`` add pass per token block);
  chunk by chunk each product is added in place.
  """
  ax = _math.vocab_axis(layout)
  v = dw.shape[ax]
  bv = min(bv, v)

  def chunk(dw, v0, size):
    g_c = jax.lax.dynamic_slice_in_dim(g, v0, size, axis=AXIS)
    upd = _math.dw_tile(g_c, x_blk, layout, AXIS)
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
  # f32 residuals of f32 primals become the gradient buffers: XLA drops a
  # unit scale and scales in place otherwise (no V x D temporary; see
  # _accumulate_dw). Narrow primals get the scaled residual cast once.
  grads = tuple(None if g is None else (g * ct).astype(p.dtype)
                for g, p in zip((dx, dw, db), empty))
  dx, dw, db = _sum_to_primal(grads, empty)
  return dx, dw, db, dcw, None, None, dtw


_reduced.defvjp(_reduced_fwd, _reduced_bwd)


#: Fewest token rows per fused block: below ~128 rows the tile GEMMs slow
#: down (XLA:CPU with Eigen: 65 GFLOP per CPU-s at 64 rows against 75-87 at
#: 128-256, V = 65536, D = 1024; BENCHMARKS.md), so for V > 65536 the tile
#: grows past the budget instead (64 MiB at V = 131072).
MIN_FUSED_ROWS = 128


def n_fused_rows(v: int, budget_bytes: int = 32 * 2**20) -> int:
  """Token rows per fused block: a ``(V, rows)`` f32 tile of ~``budget``, at
  least ``MIN_FUSED_ROWS`` rows."""
  return max(MIN_FUSED_ROWS, budget_bytes // (4 * v))


def fused_applies(reduction, return_lse) -> bool:
  """Whether ``reduced`` can run: a scalar loss without an lse output (with a
  per-row loss or an lse output the cotangents are not known in the forward
  pass)."""
  return reduction != "none" and not return_lse


def fused_by_default(dtype) -> bool:
  """Whether ``fused_backward=None`` picks ``reduced`` (where it applies).

  On CPU: f32 inputs, and bf16 / f16 inputs on hosts without a native bf16
  dot (``xla_chunked.native_bf16_dot()``), where each bf16 GEMM runs on f32
  copies and the streaming path's 8 N D V flops cost ~1.3x the reference's
  time (BENCHMARKS.md). Narrow inputs then hold f32 copies of ``w`` and
  ``dW``, ``8 V D`` bytes, next to the ``(V, rows)`` tile. Elsewhere (bf16
  with a native bf16 dot, GPU / TPU): the streaming path, the smallest
  memory.
  """
  if jax.default_backend() != "cpu":
    return False
  return jnp.dtype(dtype) == F32 or not xla_chunked.native_bf16_dot()


def reduced(x, w, labels, invalid, bias, class_weights, *, hp: _math.Hyper,
            ignore_index, reduction, block_tokens=None, block_vocab=None,
            weights=None, **unused):
  """Scalar ``'mean'``/``'sum'`` loss whose gradients are formed in the forward
  pass (6 N D V flops instead of 8, f32 accumulation for any input dtype);
  see ``fused_applies``. ``invalid`` (N,)
  bool marks rows whose (out-of-range) label makes their loss and gradient
  NaN (``label_range``); ``weights``: f32 per-token loss weights (N,) or
  None."""
  del unused
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  bt, bv = block_sizes(n, v, block_tokens, block_vocab)
  return _reduced(x, w, bias, class_weights, labels, invalid, weights, hp,
                  ignore_index, reduction, bt, bv)
