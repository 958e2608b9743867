"""``implementation='xla_chunked'``: pure-JAX streaming linear cross-entropy.

Forward: token blocks (outer) x vocab blocks (inner ``fori_loop``) with an
online log-sum-exp carry ``(m, l)`` per row, so only one ``block_tokens x
block_vocab`` f32 logit tile is alive at a time. Backward (``jax.custom_vjp``):
vocab blocks (outer) x token blocks (inner); each tile's logits are recomputed,
turned into ``G = dL/dz`` by ``_math.tile_grad`` and contracted at once into an
f32 ``dW`` block (cast and stored once per vocab block, in place) and the f32
``dX`` carry. No N x V or V x D temporary exists in either pass.

Ragged sizes: the ``V // block_vocab`` full vocab blocks run in the loop and
the ``V % block_vocab`` tail runs once after it (exact size: no masked
columns, no overlapping ``dW`` writes). A ragged last token block starts at
``N - block_tokens`` (it overlaps the one before) and the overlapped rows get
zero gradient coefficients. Neither ``x`` nor ``w`` is ever padded or copied.

The CCE gradient filter (Wijmans et al. 2025, Sec. 4.3) skips a tile's two
backward GEMMs with ``lax.cond`` when ``max |p - onehot| < filter_eps``.
Cost: 2 N D V flops forward + 6 N D V backward (logits recomputed once).

Vocab sorting (``sort=True`` with the filter on; Wijmans et al. 2025, Sec.
4.3 and Table 1): the forward also sums each class's (bias-added, soft-capped)
logit over the valid rows from the tiles it already computes, an f32 ``(V,)``
residual ``LA`` (the logit average; CCE ``cce_lse_forward``'s ``LA`` side
output). The backward takes ``order = argsort(LA)`` (ascending, stable, as
CCE ``cce.py::sort_logit_avg``) and vocab block ``k`` holds the classes
``order[k bv:(k + 1) bv]``: their rows of ``w`` / ``bias`` / class weights are
gathered, the label test compares original class ids, and the block's ``dW``
/ ``db`` rows are scattered back to their original positions (a permutation:
each row written once, in place). Classes with non-negligible probability
then share blocks, so more tiles fall wholly below ``filter_eps``
(``skipped_tiles`` counts them).

bf16 / f16 on CPU: XLA:CPU supports no data movement in narrow floats, so
float normalization turns a bf16 ``dynamic-slice`` of a loop-carried ``w``
into an f32 slice of ``convert(w)`` and loop-invariant code motion hoists the
convert: a full f32 copy of ``w``. ``_take`` / ``_put`` slice and update the
``uint16`` bit pattern inside the loop instead (see ``_take``).

Inside ``jax.shard_map`` the loop carries and ``cond`` branches are marked as
varying over the mesh axes of the inputs (``_vary``) and each cotangent is
``psum``-ed over the axes where it varies but its primal does not
(``_sum_to_primal``: e.g. ``dW`` of a replicated ``w`` with ``x`` split over a
data axis); outside it both are no-ops.
The vocab-parallel mode (``xla_vocab_parallel``) and the fused backward
(``xla_fused``) reuse these loops.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp

from diversity_jax.kernels.linear_cross_entropy import _math

F32 = _math.F32


def _cdiv(a, b):
  return -(-a // b)


def _block(i, size, block):
  """Start of block ``i`` (clamped) and a mask of the indices it owns."""
  start = jnp.minimum(i * block, size - block)
  ids = start + jnp.arange(block)
  return start, ids, ids >= i * block


#: Default ``(block_tokens, block_vocab)`` per backend. CPU: measured
#: (BENCHMARKS.md); tiles of 1024 x 512 run the GEMMs at the CPU's peak.
#: GPU / TPU: larger tiles, so that the loops take few trips (each trip is a
#: few kernel launches, ~N V / (bt bv) of them): chosen, not yet measured (no
#: accelerator was available); a 2048 x 4096 f32 tile is 32 MiB.
DEFAULT_BLOCKS = {"cpu": (1024, 512), "gpu": (2048, 4096),
                  "tpu": (2048, 4096)}

#: CPU default for bf16 / f16 inputs where the host has no native bf16 dot
#: (``native_bf16_dot()`` False): each bf16 tile GEMM then runs on f32
#: copies of its operands, and taller token blocks convert each ``w`` block
#: fewer times; 2048 x 512 keeps the temporaries within 1/50 of the
#: materialized reference's (BENCHMARKS.md, "Linear cross-entropy on
#: AVX2-only CPUs").
CPU_BLOCKS_WITHOUT_BF16_DOT = (2048, 512)

#: CPU flags (``/proc/cpuinfo``) of a native bf16 dot product.
BF16_DOT_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
_ISA_WITHOUT_BF16_DOT = ("SSE4_2", "AVX", "AVX2")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
  """This host's CPU feature flags (Linux ``/proc/cpuinfo``; empty when
  unreadable)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags"):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


def native_bf16_dot(flags=None, xla_flags=None) -> bool:
  """Whether XLA:CPU runs bf16 x bf16 -> f32 GEMMs natively on this host.

  True when the CPU has a bf16 dot instruction (``BF16_DOT_FLAGS``: AVX-512
  BF16, AMX-BF16; YNNPACK, XLA:CPU's dot library, then runs bf16 tiles at
  about twice the f32 rate) unless ``XLA_FLAGS`` caps the ISA below AVX-512
  (``--xla_cpu_max_isa=AVX2``, ...) or turns YNNPACK dots off
  (``--xla_cpu_experimental_ynn_fusion_type=``): the GEMMs then run on f32
  copies of bf16 operands.

  Args:
    flags: CPU flags (None: ``cpu_flags()``).
    xla_flags: the ``XLA_FLAGS`` string (None: the environment's).
  """
  flags = cpu_flags() if flags is None else frozenset(flags)
  xla_flags = (os.environ.get("XLA_FLAGS", "") if xla_flags is None
               else xla_flags)
  for flag in xla_flags.split():
    name, _, value = flag.lstrip("-").partition("=")
    if name == "xla_cpu_max_isa" and value.upper() in _ISA_WITHOUT_BF16_DOT:
      return False
    if name == "xla_cpu_experimental_ynn_fusion_type" and not value:
      return False
  return bool(flags & BF16_DOT_FLAGS)


def block_sizes(n, v, block_tokens=None, block_vocab=None, dtype=None):
  """``(bt, bv)``: the given block sizes or the defaults, clamped to
  ``[1, N]`` and ``[1, V]``.

  Defaults: ``DEFAULT_BLOCKS`` of the backend; on CPU, narrow-float
  (``dtype`` bf16 / f16) inputs on a host without a native bf16 dot
  (``native_bf16_dot()``) use ``CPU_BLOCKS_WITHOUT_BF16_DOT``.
  """
  backend = jax.default_backend()
  dt, dv = DEFAULT_BLOCKS.get(backend, DEFAULT_BLOCKS["cpu"])
  if (backend == "cpu" and dtype is not None
      and jnp.dtype(dtype).itemsize < 4 and not native_bf16_dot()):
    dt, dv = CPU_BLOCKS_WITHOUT_BF16_DOT
  bt = dt if block_tokens is None else int(block_tokens)
  bv = dv if block_vocab is None else int(block_vocab)
  return max(1, min(bt, n)), max(1, min(bv, v))


def bitcast_narrow_inputs() -> bool:
  """Whether narrow floats move through the loops as ``uint16`` bits (CPU only:
  on GPU / TPU the narrow dtypes are native in loops)."""
  return jax.default_backend() == "cpu"


def _packed(a) -> bool:
  return a.dtype.itemsize < 4 and bitcast_narrow_inputs()


def _bits(a):
  return jax.lax.bitcast_convert_type(a, jnp.uint16)


def _take(a, start, size, *salt, axis=0):
  """Rows (or, with ``axis=1``, columns) ``[start, start + size)`` of ``a``
  inside a loop body.

  XLA's CPU backend supports no data movement in bf16 / f16: float
  normalization rewrites a narrow ``dynamic-slice`` of a loop-carried array to
  ``convert(a)`` in f32 followed by the slice, and loop-invariant code motion
  hoists that convert, so a full f32 copy of ``w`` (4 V D bytes) would live
  through the loops. Slicing the ``uint16`` bit pattern instead leaves
  nothing to normalize; the ``optimization_barrier`` on ``(start, salt, a)``
  (``salt`` = the loop counters) keeps the bit-cast in the loop, where it
  fuses into the slice, instead of being hoisted as a whole-array copy.
  """
  if not _packed(a):
    return jax.lax.dynamic_slice_in_dim(a, start, size, axis)
  start, _, a = jax.lax.optimization_barrier((start, salt, a))
  blk = jax.lax.dynamic_slice_in_dim(_bits(a), start, size, axis)
  return jax.lax.bitcast_convert_type(blk, a.dtype)


def _put(a, blk, start, axis=0):
  """``a`` with rows (``axis=1``: columns) from ``start`` on set to ``blk``
  (cast to ``a.dtype``), in place.

  Narrow floats on CPU are updated through their ``uint16`` bits (see
  ``_take``); the bit-casts fuse with the in-place dynamic-update-slice. (A
  select against the old rows would break the in-place update: ragged vocab
  tails are handled as separate exact-size blocks instead.)
  """
  blk = blk.astype(a.dtype)
  if not _packed(a):
    return jax.lax.dynamic_update_slice_in_dim(a, blk, start, axis)
  out = jax.lax.dynamic_update_slice_in_dim(_bits(a), _bits(blk), start, axis)
  return jax.lax.bitcast_convert_type(out, a.dtype)


def _gather(a, idx, *salt, axis=0):
  """Rows ``a[idx]`` (``axis=1``: columns) inside a loop body (narrow floats
  as ``uint16`` bits on CPU, see ``_take``)."""
  if not _packed(a):
    return jnp.take(a, idx, axis=axis, mode="clip")
  idx, _, a = jax.lax.optimization_barrier((idx, salt, a))
  blk = jnp.take(_bits(a), idx, axis=axis, mode="clip")
  return jax.lax.bitcast_convert_type(blk, a.dtype)


def _scatter(a, blk, idx, axis=0):
  """``a`` with rows ``idx`` (distinct; ``axis=1``: columns) set to ``blk``
  (cast), in place.

  Narrow floats on CPU: XLA:CPU fuses no bit-cast into a scatter (the
  ``uint16`` view of ``a`` would be a whole-array copy), so the rows are
  written one by one with ``_put``, whose dynamic-update-slice stays in place.
  """
  if not _packed(a):
    return a.at[(slice(None),) * axis + (idx,)].set(
        blk.astype(a.dtype), unique_indices=True, mode="promise_in_bounds")
  return jax.lax.fori_loop(
      0, idx.shape[0],
      lambda r, a: _put(a, jax.lax.dynamic_slice_in_dim(blk, r, 1, axis),
                        idx[r], axis),
      a)


def _class_weights(class_weights, v):
  if class_weights is None:
    return jnp.ones((v,), F32)
  return jax.lax.stop_gradient(class_weights).astype(F32)


def _bias_f32(bias):
  return None if bias is None else bias.astype(F32)


def varying_axes(*arrays) -> frozenset:
  """Mesh axes over which any of ``arrays`` varies inside ``jax.shard_map``
  (empty outside it)."""
  out = frozenset()
  for a in arrays:
    if a is None:
      continue
    aval = jax.typeof(a)
    mat = getattr(aval, "manual_axis_type", None)
    out |= frozenset(getattr(mat, "varying", None)
                     or getattr(aval, "vma", None) or ())
  return out


def _vary(tree, axes: frozenset):
  """``tree`` marked as varying over ``axes`` (``jax.lax.pcast``), so that loop
  carries and ``cond`` branches created from constants type-check inside
  ``jax.shard_map``; a no-op outside it."""
  if not axes:
    return tree

  def leaf(a):
    missing = tuple(sorted(axes - varying_axes(a)))
    return jax.lax.pcast(a, missing, to="varying") if missing else a

  return jax.tree.map(leaf, tree)


def _sum_to_primal(cts, primals):
  """Cotangents ``psum``-ed over the mesh axes where they vary but their
  primal does not (inside ``jax.shard_map``: the transpose of the implicit
  broadcast of a replicated input, e.g. ``dW`` over a data axis)."""
  def leaf(ct, primal):
    if ct is None:
      return None
    extra = tuple(sorted(varying_axes(ct) - varying_axes(primal)))
    return jax.lax.psum(ct, extra) if extra else ct
  return tuple(leaf(c, p) for c, p in zip(cts, primals))


def _forward(x, w, labels, bias, k, hp, ignore_index, bt, bv, sort=False):
  """Per-row ``(loss, lse)``: ``_forward_stats`` then ``_math.row_loss``;
  with ``sort`` also the per-class logit average ``LA`` (V,) over valid rows
  (all zeros when every row is ignored), else None."""
  valid = labels != ignore_index
  labels_eff = jnp.where(valid, labels, -2)
  stats = _forward_stats(x, w, labels_eff, bias, k, hp, bt, bv,
                         row_ok=valid if sort else None)
  lse, s_y, s_w = stats[:3]
  safe = jnp.where(valid, labels, 0)
  loss = _math.row_loss(lse, s_y, s_w, k[safe], valid, hp, jnp.sum(k))
  return loss, lse, _math.class_average(stats[3], valid) if sort else None


def _forward_stats(x, w, labels_eff, bias, k, hp, bt, bv, row_ok=None):
  """Per-row ``(lse, s_y, s_w)`` over the rows of ``w``: online LSE, target
  logit (0 where ``labels_eff`` matches no row) and ``sum_j k_j s_ij``; with
  a boolean ``row_ok`` (N,) also the per-class sums ``sum_{i: row_ok_i}
  s_ij`` (V,) f32 (vocab sorting), accumulated from the same tiles.

  Token blocks (outer) x vocab blocks (inner). The ``V // bv`` full vocab
  blocks run in a loop and the ``V % bv`` tail once after it: no column is
  ever masked, so a tile is read by the reductions straight out of its GEMM.
  """
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  nt = _cdiv(n, bt)
  n_full, tail = divmod(v, bv)
  axes = varying_axes(x, w, labels_eff, bias, k)
  bias = _bias_f32(bias)

  def token_block(i, outs):
    t0, _, own = _block(i, n, bt)
    x_blk = _take(x, t0, bt, i)
    y_blk = jax.lax.dynamic_slice_in_dim(labels_eff, t0, bt)
    # Rows counted in the class sums: valid and owned by this token block.
    keep = (None if row_ok is None
            else jax.lax.dynamic_slice_in_dim(row_ok, t0, bt) & own)

    def vocab_block(carry, j, v0, size):
      m, l, sy, sw, la = carry
      sl_v = lambda a: jax.lax.dynamic_slice_in_dim(a, v0, size)
      w_blk = _take(w, v0, size, i, j,
                    axis=_math.vocab_axis(hp.weight_layout))
      s = _math.tile_logits(x_blk, w_blk, None if bias is None else sl_v(bias),
                            hp.softcap, layout=hp.weight_layout)
      dy, dw_ = _math.target_and_weighted_sum(
          s, y_blk, v0 + jnp.arange(size), sl_v(k), hp.label_smoothing)
      m, l = _math.online_lse_update(m, l, s)
      if la is not None:
        col = jnp.sum(jnp.where(keep[:, None], s, 0.0), axis=0)
        la = jax.lax.dynamic_update_slice_in_dim(la, sl_v(la) + col, v0, 0)
      return m, l, sy + dy, sw + dw_, la

    la = outs[3] if row_ok is not None else None
    carry = (jnp.full((bt,), -jnp.inf, F32),) + (jnp.zeros((bt,), F32),) * 3
    carry = _vary(carry, axes) + (la,)
    carry = jax.lax.fori_loop(
        0, n_full, lambda j, c: vocab_block(c, j, j * bv, bv), carry)
    if tail:
      carry = vocab_block(carry, jnp.int32(n_full), n_full * bv, tail)
    m, l, sy, sw, la = carry
    lse = _math.finalize_lse(m, l)
    new = tuple(jax.lax.dynamic_update_slice_in_dim(a, b, t0, 0)
                for a, b in zip(outs[:3], (lse, sy, sw)))
    return new if la is None else new + (la,)

  zeros = _vary(jnp.zeros((n,), F32), axes)
  init = (zeros, zeros, zeros)
  if row_ok is not None:
    init = init + (_vary(jnp.zeros((v,), F32), axes),)
  return jax.lax.fori_loop(0, nt, token_block, init)


def _backward(x, w, labels, bias, k, lse, g, h, hp, ignore_index, bt, bv, eps,
              order=None):
  """``(dX, dW, db)`` in the input dtypes (see ``_backward_grads``)."""
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  labels_eff = jnp.where(valid, labels, -2)
  alpha, beta, gamma = _math.grad_coefficients(
      g, h, lse, k[safe], valid, hp, jnp.sum(k))
  dx, dw, db = _backward_grads(x, w, labels_eff, bias, k, lse, alpha, beta,
                               gamma, hp, bt, bv, eps, order)
  return dx.astype(x.dtype), dw, db


def _backward_grads(x, w, labels_eff, bias, k, lse, alpha, beta, gamma, hp,
                    bt, bv, eps, order=None):
  """f32 ``dX``, ``dW`` (``w.dtype``) and ``db`` (``bias.dtype``) for per-row
  coefficients ``(alpha, beta, gamma)`` (``_math.grad_coefficients``).

  Vocab blocks (outer) x token blocks (inner); ``dW`` rows written once. The
  ``V // bv`` full vocab blocks run in a loop and a ragged tail block of
  ``V % bv`` rows runs once after it, so no two blocks overlap and each
  ``dW`` block is cast and stored in place exactly once. With ``order`` (a
  permutation of ``[0, V)``, vocab sorting) block ``j`` holds the classes
  ``order[j bv:(j + 1) bv]``: gathered rows in, scattered ``dW`` / ``db`` rows
  out.
  """
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  nt = _cdiv(n, bt)
  axes = varying_axes(x, w, labels_eff, bias, k, lse, alpha, beta, gamma)
  layout = hp.weight_layout
  ax = _math.vocab_axis(layout)
  cdt = x.dtype
  out_b = None if bias is None else bias.dtype
  bias = _bias_f32(bias)

  def block_grads(dx, j, v0, size):
    """``dX`` updated with vocab block ``[v0, v0 + size)`` (of ``order`` when
    given); its f32 dW, db rows."""
    if order is None:
      w_blk = _take(w, v0, size, j, axis=ax)
      sl_v = lambda a: jax.lax.dynamic_slice_in_dim(a, v0, size)
      cols = v0 + jnp.arange(size)
    else:
      cols = jax.lax.dynamic_slice_in_dim(order, v0, size)   # class ids
      w_blk = _gather(w, cols, j, axis=ax)
      sl_v = lambda a: jnp.take(a, cols, axis=0, mode="clip")
    b_blk = None if bias is None else sl_v(bias)
    k_blk = sl_v(k)

    def token_block(i, inner):
      dx, dw_blk, db_blk = inner
      t0, _, own_rows = _block(i, n, bt)
      sl = lambda a: jax.lax.dynamic_slice_in_dim(a, t0, bt)
      x_blk = _take(x, t0, bt, i, j)
      mask = lambda a: jnp.where(own_rows, sl(a), 0.0)
      s = _math.tile_logits(x_blk, w_blk, b_blk, hp.softcap, layout=layout)
      onehot = sl(labels_eff)[:, None] == cols[None, :]
      d, filt = _math.tile_grad(s, sl(lse), mask(alpha), mask(beta),
                                mask(gamma), onehot, k_blk, hp)

      def gemms(d):
        dc = d.astype(cdt)
        return (_math.dx_tile(dc, w_blk, layout),
                _math.dw_tile(dc, x_blk, layout),
                None if db_blk is None else jnp.sum(d, axis=0))

      if eps is None:
        dx_t, dw_t, db_t = gemms(d)
      else:   # the skipped branch returns zeros: no copy of the carries
        skip = lambda d: _vary(
            jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                         jax.eval_shape(gemms, d)), axes)
        dx_t, dw_t, db_t = jax.lax.cond(
            filt < eps, skip, lambda d: _vary(gemms(d), axes), d)
      # Rows of a clamped token block owned by the previous block have d = 0.
      dx = jax.lax.dynamic_update_slice_in_dim(dx, sl(dx) + dx_t, t0, 0)
      return (dx, dw_blk + dw_t, None if db_blk is None else db_blk + db_t)

    d_model = x.shape[1]
    dw_shape = (size, d_model) if layout == "vd" else (d_model, size)
    init = (dx,) + _vary((jnp.zeros(dw_shape, F32),
                          None if bias is None else jnp.zeros((size,), F32)),
                         axes)
    return jax.lax.fori_loop(0, nt, token_block, init)

  def store(carry, j, v0, size):
    dx, dw, db = carry
    dx, dw_blk, db_blk = block_grads(dx, j, v0, size)
    if order is None:
      dw = _put(dw, dw_blk, v0, ax)
      if db is not None:
        db = jax.lax.dynamic_update_slice_in_dim(db, db_blk, v0, 0)
    else:
      idx = jax.lax.dynamic_slice_in_dim(order, v0, size)
      dw = _scatter(dw, dw_blk, idx, ax)
      if db is not None:
        db = _scatter(db, db_blk, idx)
    return dx, dw, db

  init = _vary((jnp.zeros(x.shape, F32), jnp.zeros(w.shape, w.dtype),
                None if bias is None else jnp.zeros((v,), F32)), axes)
  n_full, tail = divmod(v, bv)
  carry = jax.lax.fori_loop(0, n_full, lambda j, c: store(c, j, j * bv, bv),
                            init)
  if tail:
    carry = store(carry, jnp.int32(n_full), n_full * bv, tail)
  dx, dw, db = carry
  return dx, dw, None if bias is None else db.astype(out_b)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9, 10))
def _rows(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv, eps,
          sort=False):
  k = _class_weights(class_weights, _math.vocab_size(w, hp.weight_layout))
  return _forward(x, w, labels, bias, k, hp, ignore_index, bt, bv)[:2]


def _rows_fwd(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv, eps,
              sort=False):
  k = _class_weights(class_weights, _math.vocab_size(w, hp.weight_layout))
  loss, lse, la = _forward(x, w, labels, bias, k, hp, ignore_index, bt, bv,
                           sort=sort and eps is not None)
  return (loss, lse), (x, w, bias, class_weights, labels, lse, la)


def _rows_bwd(hp, ignore_index, bt, bv, eps, sort, res, cts):
  x, w, bias, class_weights, labels, lse, la = res
  del sort   # la is None unless sorting applies
  g, h = cts
  k = _class_weights(class_weights, _math.vocab_size(w, hp.weight_layout))
  order = _math.sorted_order(la)
  dx, dw, db = _backward(x, w, labels, bias, k, lse, g.astype(F32),
                         h.astype(F32), hp, ignore_index, bt, bv, eps, order)
  dx, dw, db = _sum_to_primal((dx, dw, db), (x, w, bias))
  dcw = None if class_weights is None else jnp.zeros_like(class_weights)
  return dx, dw, db, dcw, None


_rows.defvjp(_rows_fwd, _rows_bwd)


def rows(x, w, labels, bias, class_weights, *, hp: _math.Hyper, ignore_index,
         block_tokens=None, block_vocab=None, filter_eps=None,
         vocab_sorting=False, **unused):
  """Per-row ``(loss, lse)`` in f32 without an N x V buffer (see module doc).

  ``vocab_sorting`` orders the backward's vocab blocks by ``argsort`` of the
  per-class logit average; ignored when ``filter_eps`` is None.
  """
  del unused
  n, v = x.shape[0], _math.vocab_size(w, hp.weight_layout)
  bt, bv = block_sizes(n, v, block_tokens, block_vocab, x.dtype)
  return _rows(x, w, bias, class_weights, labels, hp, ignore_index, bt, bv,
               filter_eps, bool(vocab_sorting))


def logit_average(x, w, labels, *, hp: _math.Hyper, ignore_index,
                  bias=None, block_tokens=None, block_vocab=None):
  """The forward's vocab-sorting side output ``LA`` (V,) f32: each class's
  (bias-added, soft-capped) logit averaged over the non-ignored rows (zeros
  when every row is ignored). The backward's order is ``argsort(LA)``.

  References: Wijmans et al. 2025 (arXiv:2411.09009), Sec. 4.3; CCE
  ``cce_lse_forward.py`` (``LA`` output) and ``cce.py::sort_logit_avg``.
  """
  n, v = x.shape[0], w.shape[0]
  bt, bv = block_sizes(n, v, block_tokens, block_vocab, x.dtype)
  k = _class_weights(None, v)
  return _forward(x, w, labels, bias, k, hp, ignore_index, bt, bv,
                  sort=True)[2]


def skipped_tiles(x, w, labels, lse, *, filter_eps, order=None, bias=None,
                  softcap=None, ignore_index=-100, block_tokens=None,
                  block_vocab=None):
  """``(skipped, total)``: backward tiles the CCE filter would skip.

  Walks the backward's tile grid (vocab blocks of ``order``, or of the
  natural order when None, with the exact-size ragged tail; clamped token
  blocks) and counts the tiles with ``max |p - onehot| < filter_eps``
  (``_math.tile_grad``'s statistic, which ``_backward_grads`` tests). A
  diagnostic for vocab sorting (CCE paper Table 1); not used by the loss.
  """
  n, v = x.shape[0], w.shape[0]
  bt, bv = block_sizes(n, v, block_tokens, block_vocab, x.dtype)
  order = jnp.arange(v, dtype=jnp.int32) if order is None else order
  valid = labels != ignore_index
  labels_eff = jnp.where(valid, labels, -2)
  hp = _math.Hyper(num_classes=v, softcap=softcap)
  bias = _bias_f32(bias)
  one = jnp.ones((bt,), F32)

  def block(count, v0, size):
    cols = jax.lax.dynamic_slice_in_dim(order, v0, size)
    w_blk = jnp.take(w, cols, axis=0, mode="clip")
    b_blk = None if bias is None else jnp.take(bias, cols, mode="clip")

    def token_block(i, count):
      t0, _, _ = _block(i, n, bt)
      sl = lambda a: jax.lax.dynamic_slice_in_dim(a, t0, bt)
      s = _math.tile_logits(sl(x), w_blk, b_blk, softcap)
      onehot = sl(labels_eff)[:, None] == cols[None, :]
      _, filt = _math.tile_grad(s, sl(lse), one, one, one, onehot, None, hp)
      return count + (filt < filter_eps).astype(jnp.int32)

    return jax.lax.fori_loop(0, _cdiv(n, bt), token_block, count)

  n_full, tail = divmod(v, bv)
  count = jax.lax.fori_loop(0, n_full, lambda j, c: block(c, j * bv, bv),
                            jnp.int32(0))
  if tail:
    count = block(count, n_full * bv, tail)
  return count, _cdiv(n, bt) * (n_full + (1 if tail else 0))
