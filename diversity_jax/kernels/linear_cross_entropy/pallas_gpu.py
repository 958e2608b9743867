"""``implementation='pallas_gpu'``: Pallas kernels for the Triton GPU lowering.

Three deterministic kernels (no atomics), all tiles f32-accumulated, every
loop static:

* forward, grid (token blocks, vocab splits): for each vocab block of its
  split a K-loop over ``D`` builds the ``(bt, bv)`` logit tile, then the
  online LSE ``(m, l)``, target logit and smoothing sum are updated
  (``_math``); padded vocab columns are -inf. The splits' partials are
  merged outside the kernel (``_math.merge_lse``).
* ``dX``, grid (token blocks, vocab splits): recompute each tile, form ``G =
  dL/dz`` (``_math.tile_grad``) and, unless the tile is filtered, add ``G @
  W_j`` into the program's own partial ``dX`` rows, ``block_dim`` columns at
  a time; the partials are summed outside.
* ``dW``/``db``, grid over vocab blocks: same tiles, ``G^T @ X_i`` into the
  program's own ``dW`` rows.

Vocab splits (``vocab_splits``) only exist to give the token-gridded kernels
enough programs to fill the GPU; with one split the kernels are the plain
one-program-per-token-block ones.

The CCE gradient filter (Wijmans et al. 2025, Sec. 4.3) skips a tile's GEMM
with ``pl.when(max |p - onehot| >= eps)``. Triton needs power-of-two tiles:
the block sizes are powers of two (>= 16) and inputs are zero-padded to them.
Costs 10 N D V flops (forward 2, each backward kernel recomputes the logits)
in exchange for no atomics. The Triton lowering is requested explicitly
(``pltriton.CompilerParams``; jax's default GPU lowering is Mosaic GPU). Run
on CPU with ``interpret=True``; ``tests/kernels/test_lce_pallas_lowering.py``
lowers the kernels to Triton IR on the CPU (``jax.export`` for ``'cuda'``).

Vocab sorting (``order`` given to the backward kernels, see
``_pallas_common``): vocab block ``j`` is the classes ``order[j bv:(j + 1)
bv]``; the kernels gather those rows of ``w`` / bias / class weights (integer
array indexing of the refs) and compare labels with the original class ids;
the ``dW`` kernel writes its block in the sorted layout. Checked in interpret
mode only: the Triton lowering of the row gathers has not run on a GPU yet.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy import _pallas_common

F32 = _math.F32


def _vocab_rows(j, cfg, o_ref):
  """Row selector of vocab block ``j`` and its class ids: the contiguous
  ``[j bv, (j + 1) bv)``, or ``order[j bv:(j + 1) bv]`` (a gather) with
  vocab sorting."""
  if o_ref is None:
    sel = pl.ds(j * cfg.bv, cfg.bv)
    return sel, j * cfg.bv + jax.lax.broadcasted_iota(jnp.int32, (cfg.bv,), 0)
  ids = o_ref[pl.ds(j * cfg.bv, cfg.bv)]
  return ids, ids


def _logit_tile(x_ref, w_ref, b_ref, j, cfg, nd, v, o_ref=None):
  """Capped f32 logits of (this program's rows) x (vocab block j)."""
  bd = cfg.bd
  rows = x_ref.shape[0]
  sel, cols = _vocab_rows(j, cfg, o_ref)

  def k_step(kk, z):
    xb = x_ref[:, pl.ds(kk * bd, bd)]
    wb = w_ref[sel, pl.ds(kk * bd, bd)]
    return z + jax.lax.dot_general(xb, wb, (((1,), (1,)), ((), ())),
                                   preferred_element_type=F32)

  z = jax.lax.fori_loop(0, nd, k_step, jnp.zeros((rows, cfg.bv), F32))
  own = cols < v
  s = _math.finish_logits(z, b_ref[sel], cfg.hp.softcap, own)
  return s, cols, own


def _fwd_kernel(x_ref, w_ref, b_ref, k_ref, y_ref, m_ref, l_ref, sy_ref,
                sw_ref, *, cfg, per, nd, v):
  """Online-LSE partials ``(m, l)``, target and smoothing sums of this
  program's rows over its vocab split (``per`` blocks)."""
  y = y_ref[...]
  rows = y.shape[0]
  j0 = pl.program_id(1) * per

  def v_step(t, carry):
    m, l, sy, sw = carry
    j = j0 + t
    s, cols, own = _logit_tile(x_ref, w_ref, b_ref, j, cfg, nd, v)
    k = jnp.where(own, k_ref[pl.ds(j * cfg.bv, cfg.bv)], 0.0)
    dy, dw = _math.target_and_weighted_sum(
        s, y, jnp.where(own, cols, -1), k, cfg.hp.label_smoothing)
    m, l = _math.online_lse_update(m, l, s)
    return m, l, sy + dy, sw + dw

  init = (jnp.full((rows,), -jnp.inf, F32), jnp.zeros((rows,), F32),
          jnp.zeros((rows,), F32), jnp.zeros((rows,), F32))
  m, l, sy, sw = jax.lax.fori_loop(0, per, v_step, init)
  m_ref[...] = m
  l_ref[...] = l
  sy_ref[...] = sy
  sw_ref[...] = sw


def _grad_tile(s, cols, own, y, k_ref, lse, a, b, g, j, cfg, o_ref=None):
  k = jnp.where(own, k_ref[_vocab_rows(j, cfg, o_ref)[0]], 0.0)
  onehot = y[:, None] == jnp.where(own, cols, -1)[None, :]
  return _math.tile_grad(s, lse, a, b, g, onehot, k, cfg.hp)


def _zero_columns(ref, nd, bd):
  """``ref[...] = 0`` in ``bd``-column strips (Triton ops need power-of-two
  shapes; the padded ``D`` is only a multiple of ``bd``)."""
  @pl.loop(0, nd)
  def _(kk):
    ref[:, pl.ds(kk * bd, bd)] = jnp.zeros((ref.shape[0], bd), F32)


def _dx_kernel(x_ref, w_ref, b_ref, k_ref, y_ref, lse_ref, a_ref, b2_ref,
               g_ref, *refs, cfg, per, nd, v):
  """This program's rows of ``dX`` from its vocab split (``per`` blocks)."""
  o_ref, dx_ref = refs if len(refs) == 2 else (None,) + refs
  bd = cfg.bd
  _zero_columns(dx_ref, nd, bd)
  y, lse, a, b, g = y_ref[...], lse_ref[...], a_ref[...], b2_ref[...], g_ref[...]
  j0 = pl.program_id(1) * per

  @pl.loop(0, per)
  def _(t):
    j = j0 + t
    s, cols, own = _logit_tile(x_ref, w_ref, b_ref, j, cfg, nd, v, o_ref)
    d, filt = _grad_tile(s, cols, own, y, k_ref, lse, a, b, g, j, cfg, o_ref)
    dc = d.astype(w_ref.dtype)
    sel = _vocab_rows(j, cfg, o_ref)[0]

    @_pallas_common.when_kept(filt, cfg)
    def _():
      @pl.loop(0, nd)
      def _(kk):
        wb = w_ref[sel, pl.ds(kk * bd, bd)]
        dx_ref[:, pl.ds(kk * bd, bd)] += jnp.dot(
            dc, wb, preferred_element_type=F32)


def _dw_kernel(x_ref, w_ref, b_ref, k_ref, y_ref, lse_ref, a_ref, b2_ref,
               g_ref, *refs, cfg, nt, nd, v):
  """Without ``order``: ``w`` / bias / class-weight refs are this program's
  vocab block. With it (vocab sorting): the full arrays, gathered through
  ``order[j bv:(j + 1) bv]``; the output block is in the sorted layout."""
  o_ref, dw_ref, db_ref = refs if len(refs) == 3 else (None,) + refs
  bt, bd, bv = cfg.bt, cfg.bd, cfg.bv
  j = pl.program_id(0)
  if o_ref is None:
    sel = slice(None)
    cols = j * bv + jax.lax.broadcasted_iota(jnp.int32, (bv,), 0)
  else:
    sel, cols = _vocab_rows(j, cfg, o_ref)
  _zero_columns(dw_ref, nd, bd)
  db_ref[...] = jnp.zeros(db_ref.shape, F32)

  @pl.loop(0, nt)
  def _(i):
    rows = pl.ds(i * bt, bt)

    def k_step(kk, z):
      xb = x_ref[rows, pl.ds(kk * bd, bd)]
      wb = w_ref[sel, pl.ds(kk * bd, bd)]
      return z + jax.lax.dot_general(xb, wb, (((1,), (1,)), ((), ())),
                                     preferred_element_type=F32)

    z = jax.lax.fori_loop(0, nd, k_step, jnp.zeros((bt, bv), F32))
    own = cols < v
    s = _math.finish_logits(z, b_ref[sel], cfg.hp.softcap, own)
    k = jnp.where(own, k_ref[sel], 0.0)
    onehot = y_ref[rows][:, None] == jnp.where(own, cols, -1)[None, :]
    d, filt = _math.tile_grad(s, lse_ref[rows], a_ref[rows], b2_ref[rows],
                              g_ref[rows], onehot, k, cfg.hp)
    dc = d.astype(x_ref.dtype)

    @_pallas_common.when_kept(filt, cfg)
    def _():
      db_ref[...] += jnp.sum(d, axis=0)

      @pl.loop(0, nd)
      def _(kk):
        xb = x_ref[rows, pl.ds(kk * bd, bd)]
        dw_ref[:, pl.ds(kk * bd, bd)] += jax.lax.dot_general(
            dc, xb, (((0,), (0,)), ((), ())), preferred_element_type=F32)


def _params(cfg):
  """Triton lowering, chosen explicitly: since jax 0.8 ``pallas_call`` on GPU
  lowers to Mosaic GPU unless given Triton compiler params (and Mosaic GPU
  would stage every whole-array block in shared memory)."""
  return None if cfg.interpret else pltriton.CompilerParams(num_warps=4,
                                                            num_stages=2)


def _full(shape):
  return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


def _rows_spec(bt, *rest):
  return pl.BlockSpec((bt,) + rest, lambda i, *_: (i,) + (0,) * len(rest))


def _split_spec(bt, *rest):
  """Block ``(i, split s)`` of a ``(vsplit, Np, ...)`` partial output."""
  return pl.BlockSpec((None, bt) + rest,
                      lambda i, s: (s, i) + (0,) * len(rest))


def _fwd(xp, wp, bp, kp, yp, cfg):
  (np_, dp), vp = xp.shape, wp.shape[0]
  nt, nv, nd = np_ // cfg.bt, vp // cfg.bv, dp // cfg.bd
  kern = functools.partial(_fwd_kernel, cfg=cfg, per=nv // cfg.vsplit, nd=nd,
                           v=cfg.hp.num_classes)
  part = jax.ShapeDtypeStruct((cfg.vsplit, np_), F32)
  m, l, sy, sw = pl.pallas_call(
      kern, grid=(nt, cfg.vsplit),
      in_specs=[_rows_spec(cfg.bt, dp), _full((vp, dp)), _full((vp,)),
                _full((vp,)), _rows_spec(cfg.bt)],
      out_specs=[_split_spec(cfg.bt)] * 4,
      out_shape=[part] * 4, interpret=cfg.interpret,
      compiler_params=_params(cfg),
      name="lce_fwd")(xp, wp, bp, kp, yp)
  return _math.merge_lse(m, l), jnp.sum(sy, 0), jnp.sum(sw, 0)


def _dx(xp, wp, bp, kp, yp, lse, a, b, g, cfg, order=None):
  (np_, dp), vp = xp.shape, wp.shape[0]
  nt, nv, nd = np_ // cfg.bt, vp // cfg.bv, dp // cfg.bd
  kern = functools.partial(_dx_kernel, cfg=cfg, per=nv // cfg.vsplit, nd=nd,
                           v=cfg.hp.num_classes)
  row = _rows_spec(cfg.bt)
  extra = () if order is None else (order,)
  parts = pl.pallas_call(
      kern, grid=(nt, cfg.vsplit),
      in_specs=[_rows_spec(cfg.bt, dp), _full((vp, dp)), _full((vp,)),
                _full((vp,)), row, row, row, row, row]
      + [_full((vp,))] * len(extra),
      out_specs=_split_spec(cfg.bt, dp),
      out_shape=jax.ShapeDtypeStruct((cfg.vsplit, np_, dp), F32),
      interpret=cfg.interpret, compiler_params=_params(cfg),
      name="lce_bwd_dx")(xp, wp, bp, kp, yp, lse, a, b, g, *extra)
  return jnp.sum(parts, 0)


def _dw(xp, wp, bp, kp, yp, lse, a, b, g, cfg, order=None):
  (np_, dp), vp = xp.shape, wp.shape[0]
  nt, nv, nd = np_ // cfg.bt, vp // cfg.bv, dp // cfg.bd
  kern = functools.partial(_dw_kernel, cfg=cfg, nt=nt, nd=nd,
                           v=cfg.hp.num_classes)
  vec = _full((np_,))
  if order is None:      # this program's vocab block
    vocab = [_rows_spec(cfg.bv, dp), _rows_spec(cfg.bv), _rows_spec(cfg.bv)]
    extra = ()
  else:                  # whole arrays, gathered through ``order``
    vocab = [_full((vp, dp)), _full((vp,)), _full((vp,))]
    extra = (order,)
  return pl.pallas_call(
      kern, grid=(nv,),
      in_specs=[_full((np_, dp))] + vocab + [vec] * 5
      + [_full((vp,))] * len(extra),
      out_specs=[_rows_spec(cfg.bv, dp), _rows_spec(cfg.bv)],
      out_shape=[jax.ShapeDtypeStruct((vp, dp), F32),
                 jax.ShapeDtypeStruct((vp,), F32)],
      interpret=cfg.interpret, compiler_params=_params(cfg),
      name="lce_bwd_dw")(xp, wp, bp, kp, yp, lse, a,
                                                  b, g, *extra)


LAUNCHERS = _pallas_common.Launchers(fwd=_fwd, dx=_dx, dw=_dw, sorts=True)


def vocab_splits(num_token_blocks: int, num_vocab_blocks: int,
                 interpret) -> int:
  """Vocab splits of the forward and ``dX`` grids: enough programs for about
  two per streaming multiprocessor (``core_count`` of the default device),
  at most 8 and at most one per vocab block; 1 in interpret mode.

  The forward and ``dX`` kernels have one program per token block, too few
  to fill the GPU at LM batch sizes (N = 4096, ``block_tokens`` = 64: 64
  programs for an H100's 132 SMs); split ``s`` of a token block streams
  vocab blocks ``[s per, (s + 1) per)`` and writes partials (online-LSE
  ``(m, l)``, target sums, an f32 ``dX``) combined outside the kernel, so
  the split costs ``(vsplit - 1) N D`` f32 of temporaries and no atomics.
  """
  if interpret:
    return 1
  cores = int(getattr(jax.devices()[0], "core_count", 0) or 0)
  want = -(-2 * cores // max(1, num_token_blocks))
  return max(1, min(want, 8, num_vocab_blocks))


def rows(x, w, labels, bias, class_weights, *, hp, ignore_index,
         block_tokens=64, block_vocab=128, block_dim=32, filter_eps=None,
         interpret=False, vocab_sorting=False, **unused):
  """Per-row ``(loss, lse)`` with the Triton-lowered Pallas kernels."""
  del unused
  p2 = _pallas_common.next_pow2
  bt = max(16, min(p2(block_tokens), p2(x.shape[0])))
  bv = max(16, min(p2(block_vocab), p2(w.shape[0])))
  bd = max(16, min(p2(block_dim), p2(x.shape[1])))
  splits = vocab_splits(-(-x.shape[0] // bt), -(-w.shape[0] // bv), interpret)
  return _pallas_common.rows(
      x, w, labels, bias, class_weights, hp=hp, ignore_index=ignore_index,
      launch=LAUNCHERS, block_tokens=bt, block_vocab=bv, block_dim=bd,
      filter_eps=filter_eps, interpret=interpret,
      vocab_sorting=vocab_sorting, vocab_splits=splits)
