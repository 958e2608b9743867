"""Custom VJP shared by the Pallas paths (``pallas_gpu``, ``pallas_tpu``).

A backend supplies three launchers working on *padded* arrays (``N``, ``V``,
``D`` rounded up to the block sizes; padded vocab columns are masked with -inf
inside the kernels, padded rows have label -2, zero gradient coefficients and
``lse = +inf`` so that ``p = 0`` there):

* ``fwd(xp, wp, bp, kp, yp, cfg) -> (lse, s_y, s_w)``, each (Np,) f32;
* ``dx(xp, wp, bp, kp, yp, lse, alpha, beta, gamma, cfg) -> (Np, Dp) f32``;
* ``dw(same) -> ((Vp, Dp) f32, (Vp,) f32)`` (``dW`` and ``db``).

The per-row loss and the gradient coefficients come from ``_math`` (the same
code as every other path).

Vocab sorting (``Config.sort`` with the filter on): ``order`` (Vp,) int32 is
a permutation whose first ``V`` entries are ``argsort`` of the logit average
``(mean_{valid i} x_i) . w_j + b_j`` and whose padded entries stay last. A
backend with ``Launchers.sorts`` (``pallas_gpu``) takes ``order=`` in its
backward launchers and gathers its vocab tiles through it; any other
(``pallas_tpu``, whose Mosaic pipeline DMAs contiguous blocks) is given
copies of ``wp`` / ``bp`` / ``kp`` permuted by ``order`` and labels mapped to
their sorted position (``_sorted_args``: one extra ``(Vp, Dp)`` array of
``w``'s dtype while the backward runs). Either way ``dw`` returns its rows in
the sorted layout, put back in class order here (one gather fused with the
final cast). The average is taken before the soft-cap (a monotone map of it:
the same order as the capped mean logit), not of each capped logit as
``xla_chunked`` and CCE do; the order only changes which tiles the filter
skips, never the values beyond the filter's tolerance.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from diversity_jax.kernels.linear_cross_entropy import _math

F32 = _math.F32


class Config(NamedTuple):
  hp: _math.Hyper
  bt: int
  bv: int
  bd: int
  eps: Optional[float]
  interpret: Any
  sort: bool = False
  # Vocab splits of the token-gridded kernels (``pallas_gpu``): the padded
  # vocabulary is a multiple of ``bv * vsplit``.
  vsplit: int = 1


class Launchers(NamedTuple):
  fwd: Callable
  dx: Callable
  dw: Callable
  sorts: bool = False          # dx / dw accept ``order=`` (vocab sorting)


def when_kept(filt, cfg):
  """``pl.when`` of the CCE filter: the body runs unless ``filt < eps`` (so a
  NaN statistic, see ``_math.tile_grad``, runs it); a plain call when
  filtering is off."""
  if cfg.eps is None:
    return lambda body: body()
  return pl.when(jnp.logical_not(filt < cfg.eps))


def _round_up(a, b):
  return -(-a // b) * b


def _pad(a, size, axis, value=0):
  extra = size - a.shape[axis]
  if extra == 0:
    return a
  widths = [(0, 0)] * a.ndim
  widths[axis] = (0, extra)
  return jnp.pad(a, widths, constant_values=value)


def _prepare(x, w, bias, k, labels, ignore_index, cfg):
  n, d = x.shape
  v = w.shape[0]
  np_, vp, dp = (_round_up(n, cfg.bt), _round_up(v, cfg.bv * cfg.vsplit),
                 _round_up(d, cfg.bd))
  valid = labels != ignore_index
  y = jnp.where(valid, labels, -2).astype(jnp.int32)
  xp = _pad(_pad(x, np_, 0), dp, 1)
  wp = _pad(_pad(w, vp, 0), dp, 1)
  b = jnp.zeros((v,), F32) if bias is None else bias.astype(F32)
  return xp, wp, _pad(b, vp, 0), _pad(k, vp, 0), _pad(y, np_, 0, -2), valid


def _weights(class_weights, v):
  if class_weights is None:
    return jnp.ones((v,), F32)
  return jax.lax.stop_gradient(class_weights).astype(F32)


def _forward(x, w, bias, class_weights, labels, ignore_index, cfg, launch):
  n = x.shape[0]
  k = _weights(class_weights, w.shape[0])
  xp, wp, bp, kp, yp, valid = _prepare(x, w, bias, k, labels, ignore_index, cfg)
  lse, s_y, s_w = launch.fwd(xp, wp, bp, kp, yp, cfg)
  lse, s_y, s_w = lse[:n], s_y[:n], s_w[:n]
  safe = jnp.where(valid, labels, 0)
  loss = _math.row_loss(lse, s_y, s_w, k[safe], valid, cfg.hp, jnp.sum(k))
  return loss, lse


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def _rows(x, w, bias, class_weights, labels, ignore_index, cfg, launch):
  return _forward(x, w, bias, class_weights, labels, ignore_index, cfg, launch)


def _rows_fwd(x, w, bias, class_weights, labels, ignore_index, cfg, launch):
  out = _forward(x, w, bias, class_weights, labels, ignore_index, cfg, launch)
  return out, (x, w, bias, class_weights, labels, out[1])


def _rows_bwd(ignore_index, cfg, launch, res, cts):
  x, w, bias, class_weights, labels, lse = res
  g, h = cts
  n, d = x.shape
  v = w.shape[0]
  k = _weights(class_weights, v)
  xp, wp, bp, kp, yp, valid = _prepare(x, w, bias, k, labels, ignore_index, cfg)
  safe = jnp.where(valid, labels, 0)
  coeffs = _math.grad_coefficients(g.astype(F32), h.astype(F32), lse, k[safe],
                                   valid, cfg.hp, jnp.sum(k))
  np_ = xp.shape[0]
  alpha, beta, gamma = (_pad(c, np_, 0) for c in coeffs)
  lse_p = _pad(lse, np_, 0, jnp.inf)
  args = (xp, wp, bp, kp, yp, lse_p, alpha, beta, gamma, cfg)
  if cfg.sort and cfg.eps is not None:
    order = _vocab_order(x, w, bias, valid, wp.shape[0])
    inv = jnp.argsort(order).astype(jnp.int32)     # sorted row of class c
    if launch.sorts:      # the kernels gather their vocab tiles
      dx = launch.dx(*args, order=order)
      dw, db = launch.dw(*args, order=order)
    else:                 # the kernels stream sorted copies
      sorted_args = _sorted_args(args, order, inv)
      dx = launch.dx(*sorted_args)
      dw, db = launch.dw(*sorted_args)
    dx = dx[:n, :d].astype(x.dtype)
    inv = inv[:v]          # padded ids sit last in ``order``
    dw = jnp.take(dw, inv, axis=0)[:, :d].astype(w.dtype)
    db = None if bias is None else jnp.take(db, inv).astype(bias.dtype)
  else:
    dx = launch.dx(*args)[:n, :d].astype(x.dtype)
    dw, db = launch.dw(*args)
    dw = dw[:v, :d].astype(w.dtype)
    db = None if bias is None else db[:v].astype(bias.dtype)
  dcw = None if class_weights is None else jnp.zeros_like(class_weights)
  return dx, dw, db, dcw, None


_rows.defvjp(_rows_fwd, _rows_bwd)


def _sorted_args(args, order, inv):
  """Backward launcher arguments in the sorted class layout: rows of ``wp``
  and entries of ``bp`` / ``kp`` permuted by ``order``, labels mapped to their
  sorted position ``inv`` (ignored / padded rows keep -2)."""
  xp, wp, bp, kp, yp, *rest = args
  ys = jnp.where(yp >= 0, inv[jnp.maximum(yp, 0)], yp)
  take = lambda a: jnp.take(a, order, axis=0)
  return (xp, take(wp), take(bp), take(kp), ys, *rest)


def _vocab_order(x, w, bias, valid, vp):
  """(Vp,) int32: ``argsort`` of ``(mean_{valid} x) . w_j + b_j`` (ascending,
  stable, as CCE ``sort_logit_avg``), then the padded ids ``V .. Vp - 1``."""
  v = w.shape[0]
  count = jnp.maximum(jnp.sum(valid), 1).astype(F32)
  xbar = jnp.sum(jnp.where(valid[:, None], x.astype(F32), 0.0), 0) / count
  la = jnp.dot(w, xbar.astype(w.dtype), preferred_element_type=F32)
  if bias is not None:
    la = la + bias.astype(F32)
  order = _math.sorted_order(la)
  return jnp.concatenate([order, jnp.arange(v, vp, dtype=jnp.int32)])


def next_pow2(n: int) -> int:
  return 1 << max(0, int(n) - 1).bit_length()


def rows(x, w, labels, bias, class_weights, *, hp, ignore_index, launch,
         block_tokens, block_vocab, block_dim, filter_eps, interpret,
         vocab_sorting=False, vocab_splits=1):
  """Per-row ``(loss, lse)`` through a backend's Pallas launchers."""
  cfg = Config(hp=hp, bt=int(block_tokens), bv=int(block_vocab),
               bd=int(block_dim), eps=filter_eps, interpret=interpret,
               sort=bool(vocab_sorting), vsplit=int(vocab_splits))
  return _rows(x, w, bias, class_weights, labels, ignore_index, cfg, launch)
