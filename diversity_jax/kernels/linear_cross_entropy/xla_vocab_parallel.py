"""``xla_chunked`` with an explicit vocab-parallel axis (``vocab_axis_name``).

``w`` (and ``bias`` / class weights) is the local vocab shard of a
``jax.shard_map`` axis; ``x`` and the global labels are replicated over it.
Each shard runs ``xla_chunked``'s streaming loops on its classes; the global
lse is ``pmax`` + ``psum`` of the rescaled per-shard sums, the target logit,
smoothing sum and class-weight totals are ``psum``-ed, ``dX`` is ``psum``-ed in
f32 and ``dW`` / ``db`` stay local (Megatron-LM's vocab-parallel
cross-entropy, Shoeybi et al. 2019; CCE ``vp_reduce_lse``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import F32
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _backward_grads
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _class_weights
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import block_sizes
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _forward_stats
from diversity_jax.kernels.linear_cross_entropy.xla_chunked import _sum_to_primal


def _vp_labels(labels, ignore_index, v_local, axis_name):
  """``(valid, here, local)``: non-ignored rows, rows whose target lies in
  this shard's ``[start, start + V_local)`` and the shard-local target id
  (-2, matching no column, elsewhere); ``start = axis_index * V_local``."""
  start = jax.lax.axis_index(axis_name) * v_local
  valid = labels != ignore_index
  local = labels - start
  here = valid & (local >= 0) & (local < v_local)
  return valid, here, jnp.where(here, local, -2)


def _vp_target_weight(k, here, local, axis_name):
  """Global ``k_{y_i}`` (0 on ignored rows): one shard holds it, ``psum``."""
  k_y = jnp.where(here, k[jnp.where(here, local, 0)], 0.0)
  return jax.lax.psum(k_y, axis_name)


def _vp_class_totals(class_weights, labels, ignore_index, v_local, hp,
                     axis_name):
  """``(valid, here, local, k, k_y, K)`` with the global ``k_y`` and ``K``."""
  valid, here, local = _vp_labels(labels, ignore_index, v_local, axis_name)
  k = _class_weights(class_weights, v_local)
  if class_weights is None:   # k = 1: no collective needed
    return valid, here, local, k, valid.astype(F32), float(hp.num_classes)
  k_y = _vp_target_weight(k, here, local, axis_name)
  return valid, here, local, k, k_y, jax.lax.psum(jnp.sum(k), axis_name)


def _vp_forward(x, w, labels, bias, class_weights, hp, ignore_index, bt, bv,
                axis_name, sort=False):
  """Global per-row ``(loss, lse)``; with ``sort`` also this shard's logit
  average ``LA`` (V_local,) over the valid rows (vocab sorting), else None."""
  valid, _, local, k, k_y, k_total = _vp_class_totals(
      class_weights, labels, ignore_index,
      _math.vocab_size(w, hp.weight_layout), hp, axis_name)
  stats = _forward_stats(x, w, local, bias, k, hp, bt, bv,
                         row_ok=valid if sort else None)
  lse_loc, s_y, s_w = stats[:3]
  # Global lse from the per-shard lse: max, then the rescaled sum.
  m = jax.lax.pmax(lse_loc, axis_name)
  lse = m + jnp.log(jax.lax.psum(jnp.exp(lse_loc - m), axis_name))
  s_y = jax.lax.psum(s_y, axis_name)
  s_w = jax.lax.psum(s_w, axis_name) if hp.label_smoothing else s_w
  loss = _math.row_loss(lse, s_y, s_w, k_y, valid, hp, k_total)
  return loss, lse, _math.class_average(stats[3], valid) if sort else None


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9, 10, 11))
def _rows_vp(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv, eps,
             axis_name, sort=False):
  return _vp_forward(x, w, labels, bias, class_weights, hp, ignore_index, bt,
                     bv, axis_name)[:2]


def _rows_vp_fwd(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv,
                 eps, axis_name, sort=False):
  loss, lse, la = _vp_forward(x, w, labels, bias, class_weights, hp,
                              ignore_index, bt, bv, axis_name,
                              sort=sort and eps is not None)
  return (loss, lse), (x, w, bias, class_weights, labels, lse, la)


def _rows_vp_bwd(hp, ignore_index, bt, bv, eps, axis_name, sort, res, cts):
  x, w, bias, class_weights, labels, lse, la = res
  del sort   # la is None unless sorting applies
  g, h = cts
  valid, _, local, k, k_y, k_total = _vp_class_totals(
      class_weights, labels, ignore_index,
      _math.vocab_size(w, hp.weight_layout), hp, axis_name)
  alpha, beta, gamma = _math.grad_coefficients(
      g.astype(F32), h.astype(F32), lse, k_y, valid, hp, k_total)
  dx, dw, db = _backward_grads(x, w, local, bias, k, lse, alpha, beta, gamma,
                               hp, bt, bv, eps,
                               _math.sorted_order(la))
  # x is replicated over the axis: its gradient sums every shard's columns
  # (f32 all-reduce, as CCE's vocab-parallel dE); dW and db stay local.
  dx = jax.lax.psum(dx, axis_name).astype(x.dtype)
  dx, dw, db = _sum_to_primal((dx, dw, db), (x, w, bias))
  dcw = None if class_weights is None else jnp.zeros_like(class_weights)
  return dx, dw, db, dcw, None


_rows_vp.defvjp(_rows_vp_fwd, _rows_vp_bwd)


def rows_vocab_parallel(x, w, labels, bias, class_weights, *,
                        hp: _math.Hyper, ignore_index, axis_name,
                        block_tokens=None, block_vocab=None, filter_eps=None,
                        vocab_sorting=False, **unused):
  """Per-row global ``(loss, lse)`` with ``w`` (and ``bias``,
  ``class_weights``) the local vocab shard of ``axis_name``.

  Call inside ``jax.shard_map`` with ``x`` and the *global* ``labels``
  replicated over ``axis_name``; ``hp.num_classes`` is the global vocabulary
  size. Each shard streams its own rows of ``w`` (``_forward_stats``), the
  global lse is ``M + log psum(exp(lse_local - M))`` with ``M = pmax
  lse_local``, the target logit and the label-smoothing sum are ``psum``-ed;
  the results are identical on every shard. Backward: local ``dW`` / ``db``
  and ``dX = psum`` of the local ``dX`` (f32).

  ``vocab_sorting`` (with the filter on) sorts each shard's own classes: the
  forward also averages the local logits over the valid rows (``LA`` of
  ``xla_chunked``, shard-local, no collective) and the local backward visits
  its vocab blocks in ``argsort(LA)`` order. Classes never move between
  shards, so ``dW`` stays local and in place.
  """
  del unused
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  bt, bv = block_sizes(n, v, block_tokens, block_vocab, x.dtype)
  return _rows_vp(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv,
                  filter_eps, axis_name, bool(vocab_sorting))


def target_weight_vocab_parallel(class_weights, labels, ignore_index,
                                 axis_name):
  """Global per-row ``k_{y_i}`` (0 on ignored rows) from the local shard
  ``class_weights`` of ``axis_name`` (one shard holds it: ``psum``)."""
  v_local = class_weights.shape[0]
  _, here, local = _vp_labels(labels, ignore_index, v_local, axis_name)
  return _vp_target_weight(jax.lax.stop_gradient(class_weights).astype(F32),
                           here, local, axis_name)
