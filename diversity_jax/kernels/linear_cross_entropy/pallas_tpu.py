"""``implementation='pallas_tpu'``: Pallas (Mosaic TPU) tiled kernels.

TPU style (as tokamax ``mosaic_tpu``): a 2-D grid whose last axis is
sequential ("arbitrary") and whose output block is revisited, so accumulators
live in VMEM and no atomics are needed:

* forward, grid (token blocks, vocab blocks): VMEM scratch ``(m, l)`` online
  LSE plus target-logit and smoothing-sum accumulators; the lse is written at
  the last vocab block;
* ``dX``, grid (token blocks, vocab blocks): ``dX_i += G_ij @ W_j``;
* ``dW``/``db``, grid (vocab blocks, token blocks): ``dW_j += G_ij^T @ X_i``.

``G`` and the tile math come from ``_math``; tiles whose
``max |p - onehot| < eps`` skip their GEMM (``pl.when``; CCE gradient filter,
Wijmans et al. 2025, Sec. 4.3). Per-row vectors are ``(N, 1)`` columns and
per-class vectors ``(1, V)`` rows (Mosaic block-shape rules); ``x``/``w`` are
zero-padded to (8, 128)-aligned blocks, padded classes masked with -inf. The
``D`` axis is not tiled (a full-``D`` tile per block), so the default blocks
shrink with large ``D`` to fit a VMEM budget (``fit_vmem``). Vocab sorting runs the
same kernels on sorted copies of ``w`` / bias / class weights (see
``_pallas_common``): the blocks stay contiguous for the BlockSpec pipeline.
Exercised in interpret mode on CPU and lowered to Mosaic TPU on the CPU
(``jax.export`` for ``'tpu'``, ``tests/kernels/test_lce_pallas_lowering.py``);
not yet compiled or run on a real TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy import _pallas_common

F32 = _math.F32


def _tile(x_ref, w_ref, b_ref, j, cfg):
  s = jax.lax.dot_general(x_ref[...], w_ref[...], (((1,), (1,)), ((), ())),
                          preferred_element_type=F32)
  cols = j * cfg.bv + jax.lax.broadcasted_iota(jnp.int32, (cfg.bv,), 0)
  own = cols < cfg.hp.num_classes
  return _math.finish_logits(s, b_ref[0, :], cfg.hp.softcap, own), cols, own


def _fwd_kernel(x_ref, w_ref, b_ref, k_ref, y_ref, lse_ref, sy_ref, sw_ref,
                m_sc, l_sc, *, cfg):
  j = pl.program_id(1)

  @pl.when(j == 0)
  def _():
    m_sc[...] = jnp.full(m_sc.shape, -jnp.inf, F32)
    l_sc[...] = jnp.zeros(l_sc.shape, F32)
    sy_ref[...] = jnp.zeros(sy_ref.shape, F32)
    sw_ref[...] = jnp.zeros(sw_ref.shape, F32)

  s, cols, own = _tile(x_ref, w_ref, b_ref, j, cfg)
  k = jnp.where(own, k_ref[0, :], 0.0)
  dy, dw = _math.target_and_weighted_sum(
      s, y_ref[:, 0], jnp.where(own, cols, -1), k, cfg.hp.label_smoothing)
  m, l = _math.online_lse_update(m_sc[:, 0], l_sc[:, 0], s)
  m_sc[...] = m[:, None]
  l_sc[...] = l[:, None]
  sy_ref[...] += dy[:, None]
  sw_ref[...] += dw[:, None]

  @pl.when(j == pl.num_programs(1) - 1)
  def _():
    lse_ref[...] = _math.finalize_lse(m_sc[:, 0], l_sc[:, 0])[:, None]


def _grad(x_ref, w_ref, b_ref, k_ref, y_ref, lse_ref, a_ref, b2_ref, g_ref, j,
          cfg):
  s, cols, own = _tile(x_ref, w_ref, b_ref, j, cfg)
  k = jnp.where(own, k_ref[0, :], 0.0)
  onehot = y_ref[:, 0][:, None] == jnp.where(own, cols, -1)[None, :]
  return _math.tile_grad(s, lse_ref[:, 0], a_ref[:, 0], b2_ref[:, 0],
                         g_ref[:, 0], onehot, k, cfg.hp)


def _dx_kernel(*refs, cfg):
  *ins, dx_ref = refs
  j = pl.program_id(1)

  @pl.when(j == 0)
  def _():
    dx_ref[...] = jnp.zeros(dx_ref.shape, F32)

  d, filt = _grad(*ins, j, cfg)

  @_pallas_common.when_kept(filt, cfg)
  def _():
    w = ins[1][...]
    dx_ref[...] += jnp.dot(d.astype(w.dtype), w, preferred_element_type=F32)


def _dw_kernel(*refs, cfg):
  *ins, dw_ref, db_ref = refs
  j, i = pl.program_id(0), pl.program_id(1)

  @pl.when(i == 0)
  def _():
    dw_ref[...] = jnp.zeros(dw_ref.shape, F32)
    db_ref[...] = jnp.zeros(db_ref.shape, F32)

  d, filt = _grad(*ins, j, cfg)

  @_pallas_common.when_kept(filt, cfg)
  def _():
    x = ins[0][...]
    dw_ref[...] += jax.lax.dot_general(
        d.astype(x.dtype), x, (((0,), (0,)), ((), ())),
        preferred_element_type=F32)
    db_ref[...] += jnp.sum(d, axis=0)[None, :]


def _specs(cfg, dp, token_axis):
  """Input specs for grid (i, j) (token_axis=0) or (j, i) (token_axis=1)."""
  t = (lambda f: (lambda a, b: f(a, b))) if token_axis == 0 else (
      lambda f: (lambda a, b: f(b, a)))
  bt, bv = cfg.bt, cfg.bv
  row = pl.BlockSpec((bt, 1), t(lambda i, j: (i, 0)))
  return [pl.BlockSpec((bt, dp), t(lambda i, j: (i, 0))),
          pl.BlockSpec((bv, dp), t(lambda i, j: (j, 0))),
          pl.BlockSpec((1, bv), t(lambda i, j: (0, j))),
          pl.BlockSpec((1, bv), t(lambda i, j: (0, j))),
          row], row


def _params(cfg):
  if cfg.interpret:
    return None
  return pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))


def _col(a):
  return a[:, None]


def _fwd(xp, wp, bp, kp, yp, cfg):
  (np_, dp), vp = xp.shape, wp.shape[0]
  grid = (np_ // cfg.bt, vp // cfg.bv)
  ins, row = _specs(cfg, dp, 0)
  vec = jax.ShapeDtypeStruct((np_, 1), F32)
  out = pl.pallas_call(
      functools.partial(_fwd_kernel, cfg=cfg), grid=grid, in_specs=ins,
      out_specs=[row] * 3, out_shape=[vec] * 3,
      scratch_shapes=[pltpu.VMEM((cfg.bt, 1), F32)] * 2,
      compiler_params=_params(cfg), interpret=cfg.interpret,
      name="lce_tpu_fwd")(xp, wp, bp[None], kp[None], _col(yp))
  return tuple(o[:, 0] for o in out)


def _dx(xp, wp, bp, kp, yp, lse, a, b, g, cfg):
  (np_, dp), vp = xp.shape, wp.shape[0]
  ins, row = _specs(cfg, dp, 0)
  return pl.pallas_call(
      functools.partial(_dx_kernel, cfg=cfg),
      grid=(np_ // cfg.bt, vp // cfg.bv), in_specs=ins + [row] * 4,
      out_specs=pl.BlockSpec((cfg.bt, dp), lambda i, j: (i, 0)),
      out_shape=jax.ShapeDtypeStruct((np_, dp), F32),
      compiler_params=_params(cfg), interpret=cfg.interpret,
      name="lce_tpu_bwd_dx")(xp, wp, bp[None], kp[None], _col(yp), _col(lse),
                             _col(a), _col(b), _col(g))


def _dw(xp, wp, bp, kp, yp, lse, a, b, g, cfg):
  (np_, dp), vp = xp.shape, wp.shape[0]
  ins, row = _specs(cfg, dp, 1)
  dw, db = pl.pallas_call(
      functools.partial(_dw_kernel, cfg=cfg),
      grid=(vp // cfg.bv, np_ // cfg.bt), in_specs=ins + [row] * 4,
      out_specs=[pl.BlockSpec((cfg.bv, dp), lambda j, i: (j, 0)),
                 pl.BlockSpec((1, cfg.bv), lambda j, i: (0, j))],
      out_shape=[jax.ShapeDtypeStruct((vp, dp), F32),
                 jax.ShapeDtypeStruct((1, vp), F32)],
      compiler_params=_params(cfg), interpret=cfg.interpret,
      name="lce_tpu_bwd_dw")(xp, wp, bp[None], kp[None], _col(yp), _col(lse),
                             _col(a), _col(b), _col(g))
  return dw, db[0]


LAUNCHERS = _pallas_common.Launchers(fwd=_fwd, dx=_dx, dw=_dw)


def _align(block, size, unit):
  """Block rounded to ``unit``, no larger than ``size`` rounded up to ``unit``."""
  cap = -(-size // unit) * unit
  return max(unit, min(-(-block // unit) * unit, cap))


#: VMEM the default blocks may take: under the 16 MiB default scoped-VMEM
#: limit of Mosaic TPU, with room for the compiler's own buffers.
VMEM_BUDGET = 12 * 2**20


def vmem_bytes(bt, bv, dp, itemsize):
  """VMEM of the largest kernel's blocks: double-buffered ``x`` / ``w``
  blocks in the input dtype, the double-buffered f32 ``dX`` or ``dW`` output
  block and ~3 f32 ``(bt, bv)`` tile temporaries (logits, p, G)."""
  return (2 * (bt + bv) * dp * itemsize + 2 * max(bt, bv) * dp * 4
          + 3 * bt * bv * 4)


def fit_vmem(bt, bv, dp, itemsize, budget=VMEM_BUDGET):
  """Default blocks halved (the larger first; multiples of 8 tokens and 128
  classes) until ``vmem_bytes`` fits ``budget``: the full-``D`` blocks grow
  with ``D`` (Gemma's 2304 needs 18 MiB at 256 x 512 in bf16). A ``D`` too
  large for the smallest blocks is left to the compiler (tiling ``D`` as
  tokamax's ``mosaic_tpu`` does would lift that)."""
  while vmem_bytes(bt, bv, dp, itemsize) > budget and (bt > 8 or bv > 128):
    if bv >= bt and bv > 128:
      bv = max(128, bv // 2 // 128 * 128)
    else:
      bt = max(8, bt // 2 // 8 * 8)
  return bt, bv


def rows(x, w, labels, bias, class_weights, *, hp, ignore_index,
         block_tokens=None, block_vocab=None, filter_eps=None,
         interpret=False, vocab_sorting=False, **unused):
  """Per-row ``(loss, lse)`` with the Mosaic TPU Pallas kernels.

  Default blocks: 256 tokens x 512 classes, shrunk by ``fit_vmem`` for large
  ``D``; explicit ``block_tokens`` / ``block_vocab`` are used as given
  (aligned to 8 / 128).
  """
  del unused
  bd = -(-x.shape[1] // 128) * 128          # full D, lane aligned
  bt = _align(block_tokens or 256, x.shape[0], 8)
  bv = _align(block_vocab or 512, w.shape[0], 128)
  if block_tokens is None and block_vocab is None:
    bt, bv = fit_vmem(bt, bv, bd, x.dtype.itemsize)
  return _pallas_common.rows(
      x, w, labels, bias, class_weights, hp=hp, ignore_index=ignore_index,
      launch=LAUNCHERS, block_tokens=bt, block_vocab=bv, block_dim=bd,
      filter_eps=filter_eps, interpret=interpret,
      vocab_sorting=vocab_sorting)
