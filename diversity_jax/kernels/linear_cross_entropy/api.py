"""Public ``linear_cross_entropy``: validation, dispatch and reduction.

Vocab parallelism. Under ``jax.jit`` with ``w`` sharded over the vocabulary
axis of a mesh, XLA's SPMD partitioner splits the default path by itself. The
explicit mode ``vocab_axis_name='model'`` is for code already inside
``jax.shard_map`` (Megatron / levanter / MaxText style): each device keeps
its ``(V_local, D)`` shard of ``w`` (and of ``bias`` / ``class_weights``),
``x`` and the global ``labels`` are replicated over the axis, and the loss
combines the per-shard log-sum-exps with ``pmax`` + ``psum``
(``xla_vocab_parallel.rows_vocab_parallel``); loss and lse are identical on every
shard, ``dX`` is ``psum``-ed and ``dW`` / ``db`` stay local.
"""

from __future__ import annotations

import math
from typing import Optional, Union

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax.kernels.linear_cross_entropy import _math
from diversity_jax.kernels.linear_cross_entropy import pallas_gpu
from diversity_jax.kernels.linear_cross_entropy import pallas_tpu
from diversity_jax.kernels.linear_cross_entropy import reference
from diversity_jax.kernels.linear_cross_entropy import xla_chunked
from diversity_jax.kernels.linear_cross_entropy import xla_fused
from diversity_jax.kernels.linear_cross_entropy import xla_vocab_parallel

_FN = "linear_cross_entropy"

#: name -> per-row implementation ``rows(x, w, labels, bias, class_weights,
#: *, hp, ignore_index, **options) -> (loss (N,), lse (N,))`` in f32.
IMPLEMENTATIONS = {
    "reference": reference.rows,
    "xla_chunked": xla_chunked.rows,
    "pallas_gpu": pallas_gpu.rows,
    "pallas_tpu": pallas_tpu.rows,
}
_REDUCTIONS = ("mean", "sum", "none")


def default_implementation(backend: Optional[str] = None) -> str:
  """Implementation used for ``implementation=None`` on ``backend``.

  ``xla_chunked`` on every backend for now: the Pallas kernels have only run
  in interpret mode on CPU (and been lowered to Triton IR / Mosaic TPU there,
  not compiled) and become the GPU / TPU defaults once validated and
  benchmarked on hardware (opt in with ``implementation='pallas_gpu' |
  'pallas_tpu'``).

  Args:
    backend: ``jax.default_backend()`` string (``'cpu'``, ``'gpu'``,
      ``'tpu'``) or None.

  Returns:
    A key of ``IMPLEMENTATIONS``.

  Example:
    >>> default_implementation("cpu")
    'xla_chunked'

  References:
    Dispatch modelled on tokamax ``linear_softmax_cross_entropy_loss``
    (github.com/openxla/tokamax), fallback to the portable XLA path.
  """
  del backend
  return "xla_chunked"


def _vocab_axis_size(vocab_axis_name, w, implementation, fused_backward):
  """Size of the bound ``vocab_axis_name`` (1 when None); validates its use."""
  if vocab_axis_name is None:
    return 1
  if not isinstance(vocab_axis_name, str):
    checks._fail(_FN, "`vocab_axis_name` must be a mesh axis name (str) or "
                 f"None, got {vocab_axis_name!r}", TypeError)
  if implementation not in (None, "xla_chunked"):
    checks._fail(_FN, "`vocab_axis_name` is supported by "
                 "implementation='xla_chunked' (or None) only, got "
                 f"implementation={implementation!r}")
  if fused_backward:
    checks._fail(_FN, "`vocab_axis_name` does not support "
                 "fused_backward=True", NotImplementedError)
  try:
    size = int(jax.lax.axis_size(vocab_axis_name))
  except NameError:
    checks._fail(_FN, f"`vocab_axis_name`={vocab_axis_name!r} is not a bound "
                 "axis name: call linear_cross_entropy inside jax.shard_map "
                 "over a mesh with that axis, passing the local vocab shard "
                 "of `w`")
  if vocab_axis_name not in xla_chunked.varying_axes(w):
    # Replicated w, or shard_map(check_vma=False), whose transpose would
    # rescale the cotangents behind the explicit collectives.
    checks._fail(_FN, f"`w` must vary over `vocab_axis_name`="
                 f"{vocab_axis_name!r}: pass its local vocab shard "
                 f"(in_specs P({vocab_axis_name!r})) to a jax.shard_map with "
                 "the default check_vma=True")
  return size


def _validate(x, w, labels, bias, class_weights, ignore_index, label_smoothing,
              log_partition_penalty, softcap, reduction, filter_eps,
              implementation, block_tokens, block_vocab, block_dim,
              vocab_shards=1, weight_layout="vd", weights=None):
  checks.check_choice(implementation, [None] + list(IMPLEMENTATIONS),
                      "implementation", _FN)
  checks.check_choice(reduction, _REDUCTIONS, "reduction", _FN)
  checks.check_floating(x, "x", _FN)
  checks.check_min_rank(x, 1, "x", _FN)
  checks.check_floating(w, "w", _FN)
  checks.check_rank(w, 2, "w", _FN)
  d = jnp.shape(x)[-1]
  checks.check_choice(weight_layout, _math.WEIGHT_LAYOUTS, "weight_layout",
                      _FN)
  v_axis = _math.vocab_axis(weight_layout)
  if jnp.shape(w)[1 - v_axis] != d:
    want = f"(V, {d})" if weight_layout == "vd" else f"({d}, V)"
    checks._fail(_FN, f"`w` must have shape {want} (weight_layout="
                 f"{weight_layout!r}) to match `x` of shape {jnp.shape(x)}, "
                 f"got {jnp.shape(w)}")
  if jnp.shape(w)[v_axis] < 1:
    checks._fail(_FN, f"`w` must have at least one row (class), got {jnp.shape(w)}")
  checks.check_integer(labels, "labels", _FN)
  checks.check_shape(labels, jnp.shape(x)[:-1], "labels", _FN)
  if weights is not None:
    checks.check_floating(weights, "weights", _FN)
    checks.check_shape(weights, jnp.shape(labels), "weights", _FN)
  v_local = jnp.shape(w)[v_axis]
  v = v_local * vocab_shards    # global vocabulary size
  if not isinstance(ignore_index, int) or isinstance(ignore_index, bool):
    checks._fail(_FN, f"`ignore_index` must be a Python int, got {ignore_index!r}",
                 TypeError)
  if 0 <= ignore_index < v:
    checks._fail(_FN, f"`ignore_index` must lie outside [0, {v}) (it would hide "
                 f"a class), got {ignore_index}")
  checks.check_label_range(labels, v, _FN, ignore_index=ignore_index)
  if bias is not None:
    checks.check_floating(bias, "bias", _FN)
    checks.check_shape(bias, (v_local,), "bias", _FN)
  if class_weights is not None:
    checks.check_floating(class_weights, "class_weights", _FN)
    checks.check_shape(class_weights, (v_local,), "class_weights", _FN)
  checks.check_scalar_in_range(label_smoothing, "label_smoothing", _FN,
                               low=0.0, high=1.0)
  checks.check_nonnegative(log_partition_penalty, "log_partition_penalty", _FN)
  for name, val in (("label_smoothing", label_smoothing),
                    ("log_partition_penalty", log_partition_penalty)):
    if isinstance(val, jax.core.Tracer):
      checks._fail(_FN, f"`{name}` must be a static Python float", TypeError)
  if softcap is not None:
    checks.check_positive(softcap, "softcap", _FN)
  if not (filter_eps is None or filter_eps == "auto"):
    if isinstance(filter_eps, str):
      checks._fail(_FN, f"`filter_eps` must be 'auto', a float or None, got "
                   f"{filter_eps!r}")
    checks.check_nonnegative(filter_eps, "filter_eps", _FN)
  for name, val in (("block_tokens", block_tokens), ("block_vocab", block_vocab),
                    ("block_dim", block_dim)):
    if val is not None and (not isinstance(val, int) or isinstance(val, bool)
                            or val < 1):
      checks._fail(_FN, f"`{name}` must be a positive int or None, got {val!r}")


def linear_cross_entropy(
    x: jax.Array,
    w: jax.Array,
    labels: jax.Array,
    *,
    bias: Optional[jax.Array] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    log_partition_penalty: float = 0.0,
    softcap: Optional[float] = None,
    class_weights: Optional[jax.Array] = None,
    reduction: str = "mean",
    return_lse: bool = False,
    filter_eps: Union[str, float, None] = "auto",
    implementation: Optional[str] = None,
    block_tokens: Optional[int] = None,
    block_vocab: Optional[int] = None,
    block_dim: Optional[int] = None,
    interpret: bool = False,
    fused_backward: Optional[bool] = None,
    vocab_axis_name: Optional[str] = None,
    vocab_sorting: bool = False,
    weight_layout: str = "vd",
    weights: Optional[jax.Array] = None,
):
  r"""Cross-entropy of ``x @ w.T + bias`` without materializing the logits.

  With ``z_ij = x_i . w_j + b_j``, soft-capped ``s_ij = c tanh(z_ij / c)``,
  ``lse_i = log sum_j exp(s_ij)``, class weights ``k`` (``K = sum_j k_j``) and
  label smoothing ``a`` (PyTorch convention, target
  ``(1 - a) onehot + a / V``), the per-token loss is

  .. math::
    L_i = (1 - a) k_{y_i} (lse_i - s_{i y_i})
          + \frac{a}{V} \big(K\, lse_i - \sum_j k_j s_{ij}\big)
          + \lambda\, lse_i^2

  (``\lambda`` = ``log_partition_penalty``, the PaLM z-loss), times the
  per-token weight ``m_i`` when ``weights`` is given. ``'mean'`` divides
  ``sum_i m_i L_i`` over non-ignored tokens by ``sum_i m_i k_{y_i}`` over
  the same tokens (the number of non-ignored tokens without class or token
  weights, as ``torch.nn.functional.cross_entropy``); every label ignored
  gives 0. ``'none'`` returns ``m_i L_i`` with ``labels.shape`` (0 at
  ignored tokens).

  Gradients (``jax.custom_vjp`` in the fused paths) use
  ``dL_i/ds_ij = alpha_i p_ij - beta_i [j = y_i] - gamma_i k_j`` times the
  soft-cap factor ``1 - (s_ij / c)^2``; the lse is differentiable when
  returned. Gradients flow to ``x``, ``w`` and ``bias``; ``class_weights`` is
  treated as a constant. Inputs in bf16 / f16 are multiplied in their dtype
  with f32 accumulation; lse, running sums and the ``dX``/``dW``
  accumulations are f32. Outputs: loss (and lse) in f32, gradients in the
  input dtypes.

  Args:
    x: embeddings ``(..., D)``, floating.
    w: classifier ``(V, D)`` (row per class, as ``nn.Linear`` / CCE), or
      ``(D, V)`` with ``weight_layout='dv'``.
    labels: integer ``(...)`` = ``x.shape[:-1]``; ``ignore_index`` marks
      tokens without loss. Any other label outside ``[0, V)`` raises when
      ``labels`` is concrete; traced (under ``jit``) it makes that token's
      loss NaN, hence a NaN ``'mean'`` / ``'sum'``, and its gradient NaN (its
      ``dX`` row, and ``dW`` / ``db``, which sum over tokens), in every
      implementation.
    bias: optional ``(V,)``.
    ignore_index: label value to ignore (must be outside ``[0, V)``).
    label_smoothing: ``a`` in ``[0, 1]``.
    log_partition_penalty: z-loss weight ``lambda >= 0``.
    softcap: ``c > 0`` or None.
    class_weights: optional ``(V,)`` per-class weights ``k``.
    reduction: ``'mean'`` | ``'sum'`` | ``'none'``.
    return_lse: also return ``lse`` (f32, shape ``labels.shape``).
    filter_eps: CCE gradient filter: tiles with ``max |p - onehot| < eps``
      skip their backward GEMMs. ``'auto'`` = ``finfo(x.dtype).eps / 32``;
      None or 0 disables it (exact). Disabled automatically with label
      smoothing. Used by ``xla_chunked`` and the Pallas kernels.
    implementation: None (``default_implementation()``), ``'xla_chunked'``,
      ``'pallas_gpu'``, ``'pallas_tpu'`` or ``'reference'`` (materializes
      the logits).
    block_tokens, block_vocab, block_dim: tile sizes (None: per-implementation
      defaults, per backend for ``xla_chunked``; ``block_dim`` is used by the
      Pallas kernels only).
    interpret: run the Pallas kernels in interpret mode (CPU testing).
    fused_backward: ``xla_chunked`` only, used for a scalar reduction with
      ``return_lse=False`` and without ``vocab_axis_name`` /
      ``vocab_sorting``: form ``dX``/``dW`` in the forward pass from
      full-vocabulary blocks of ~32 MiB of f32 logits (vocab-major
      ``(V, rows)`` tiles, 128 to ``block_tokens`` rows): 6 N D V flops
      instead of 8, no gradient filter. Temporaries: one or two such
      tiles; for f32 inputs the f32 ``dX``/``dW`` residuals become the
      gradient buffers (they exist from this forward to this backward:
      ``V D`` f32 per pending forward when forwards run ahead of
      backwards, e.g. pipeline microbatches); bf16 / f16 inputs add f32
      copies of ``w`` and ``dW``, ``8 V D`` bytes. None (default): on CPU
      for f32 inputs, and for bf16 / f16 inputs on hosts without a native
      bf16 dot (``xla_chunked.native_bf16_dot()``, e.g. AVX2-only x86),
      where it is the faster path (BENCHMARKS.md, "Linear cross-entropy on
      AVX2-only CPUs"), unless ``vocab_sorting=True`` or a numeric
      ``filter_eps`` asks for the filter; elsewhere the streaming path.
      False: streaming forward, recomputing backward (smallest memory, with
      the gradient filter). True: wherever it applies.
    vocab_axis_name: explicit vocab parallelism (``xla_chunked`` only, without
      ``fused_backward``). None (default): ``w`` holds every class. A mesh
      axis name: the call must run inside ``jax.shard_map`` over that axis;
      ``w`` (and ``bias``, ``class_weights``) is the local shard
      ``(V_local, D)`` holding classes ``[r V_local, (r + 1) V_local)`` on the
      shard of axis index ``r``; ``x`` and ``labels`` (global class ids) are
      replicated over the axis; ``V = V_local * axis_size`` in ``a / V``. The
      global lse is ``M + log psum(exp(lse_local - M))``, ``M = pmax
      lse_local`` (as CCE's ``vocab_parallel/utils.py::vp_reduce_lse``;
      Shoeybi et al., "Megatron-LM", arXiv:1909.08053, Sec. 3, parallel
      output embedding fused with the cross-entropy); target logits, ``K``
      and the smoothing sums are ``psum``-ed. Loss and lse are identical on every
      shard (``out_specs=P()`` over the axis); ``dX`` is the ``psum`` of the
      local ``dX``; ``dW`` and ``db`` stay local. Requires the default
      ``check_vma=True`` of ``shard_map``.
    vocab_sorting: CCE vocabulary sorting (``xla_chunked``, also with
      ``vocab_axis_name``, and the Pallas kernels). ``xla_chunked``'s forward
      also averages each class's (bias-added, soft-capped) logit over the
      non-ignored rows, ``LA = sum_{i valid} s_ij / #valid`` (an f32 ``(V,)``
      residual), and the backward visits the vocab blocks in ``argsort(LA)``
      order (gathered ``w`` rows, ``dW`` scattered back), so the few classes
      with non-negligible probability share blocks and more tiles fall
      wholly below ``filter_eps`` and skip their GEMMs. With
      ``vocab_axis_name`` each shard sorts its own classes (a shard-local
      ``LA``, no collective). The Pallas kernels sort by the uncapped
      ``(mean_i x_i) . w_j + b_j`` (same order without soft-cap);
      ``pallas_gpu`` gathers its tiles through the order, ``pallas_tpu``
      streams sorted copies of ``w`` / ``bias`` / ``class_weights`` (one
      extra ``(V, D)`` array during the backward); both interpret-mode
      tested only. Values equal the unsorted path up to float
      reassociation (and the filter's own tolerance). It pays off only where
      the filter skips tiles (peaked softmaxes); on CPU with bf16 / f16 the
      scattered ``dW`` rows are written one by one (XLA:CPU scatters no
      narrow float in place), about V small row writes per backward.
      Ignored when the filter is off (``filter_eps`` None or 0, label
      smoothing) and on the ``'reference'`` path, which has no filter;
      ``vocab_sorting=True`` keeps the streaming path under
      ``fused_backward=None``; with ``fused_backward=True`` it is ignored.
    weight_layout: ``'vd'`` (``w`` is ``(V, D)``) or ``'dv'`` (``w`` is
      ``(D, V)``, a flax ``nn.Dense`` kernel: ``logits = x @ w``). The
      ``'dv'`` matrix is read in column blocks and ``dW`` is written in its
      layout, so no transposed copy of ``w`` is made (``xla_chunked``, with
      ``fused_backward`` and ``vocab_axis_name``, and ``'reference'``; the
      Pallas kernels take ``'vd'`` only). With ``vocab_axis_name`` the local
      shard is ``(D, V_local)``.
    weights: optional per-token loss weights ``m``, floating, shape
      ``labels.shape`` (packed sequences, loss masking); each token's loss
      and gradient are scaled by ``m_i`` (see the formula). Treated as a
      constant (no gradient).

  Returns:
    The loss (scalar for ``'mean'`` / ``'sum'``, ``labels.shape`` for
    ``'none'``), or ``(loss, lse)`` when ``return_lse``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.kernels import linear_cross_entropy
    >>> x = jnp.ones((4, 8)); w = jnp.zeros((16, 8)); y = jnp.arange(4)
    >>> float(jax.jit(linear_cross_entropy)(x, w, y))  # log(16)
    2.772588...

    Vocab-parallel inside ``shard_map`` (``w`` split over a 'model' axis):

    >>> from jax.sharding import Mesh, PartitionSpec as P
    >>> mesh = Mesh(jax.devices()[:1], ("model",))
    >>> f = jax.shard_map(
    ...     lambda x, w, y: linear_cross_entropy(x, w, y,
    ...                                          vocab_axis_name="model"),
    ...     mesh=mesh, in_specs=(P(), P("model"), P()), out_specs=P())
    >>> float(jax.jit(f)(x, w, y))
    2.772588...

  References:
    Wijmans et al., "Cut Your Losses in Large-Vocabulary Language Models",
    ICLR 2025 (arXiv:2411.09009), Eq. 1-4 (indexed matmul + LSE forward) and
    Sec. 4.3 and Table 1 (gradient filtering, vocabulary sorting by the
    average logit: CCE ``cce.py::sort_logit_avg``); code
    https://github.com/apple/ml-cross-entropy. Hsu et al., "Liger Kernel",
    arXiv:2410.10989, Sec. 3 (fused linear cross-entropy with label smoothing
    and z-loss). Chowdhery et al., "PaLM", arXiv:2204.02311, Sec. 5 (z-loss).
    Szegedy et al., arXiv:1512.00567, Sec. 7 (label smoothing).
  """
  if not isinstance(vocab_sorting, bool):
    checks._fail(_FN, f"`vocab_sorting` must be a Python bool, got "
                 f"{vocab_sorting!r}", TypeError)
  if fused_backward is not None and not isinstance(fused_backward, bool):
    checks._fail(_FN, f"`fused_backward` must be None or a Python bool, got "
                 f"{fused_backward!r}", TypeError)
  shards = _vocab_axis_size(vocab_axis_name, w, implementation,
                            fused_backward)
  _validate(x, w, labels, bias, class_weights, ignore_index, label_smoothing,
            log_partition_penalty, softcap, reduction, filter_eps,
            implementation, block_tokens, block_vocab, block_dim,
            vocab_shards=shards, weight_layout=weight_layout, weights=weights)
  impl = implementation or default_implementation(jax.default_backend())
  if weight_layout != "vd" and impl.startswith("pallas"):
    checks._fail(_FN, f"implementation={impl!r} takes `w` as (V, D) only: "
                 f"weight_layout={weight_layout!r} is supported by "
                 "'xla_chunked' and 'reference'", NotImplementedError)
  batch_shape = jnp.shape(labels)
  d = jnp.shape(x)[-1]
  n = math.prod(batch_shape)
  x2 = jnp.reshape(x, (n, d))
  y2 = jnp.reshape(labels, (n,)).astype(jnp.int32)
  # Traced out-of-range labels (other than ignore_index): computed as class 0
  # by every implementation, then NaN in loss and gradient (label_range).
  y2, invalid = label_range.sanitize(
      y2, _math.vocab_size(w, weight_layout) * shards,
      ignore_index=ignore_index)
  # Narrow dtypes stay narrow for the GEMMs (f32 accumulation inside).
  cdt = jnp.promote_types(x2.dtype, w.dtype)
  x2, w = x2.astype(cdt), w.astype(cdt)
  hp = _math.Hyper(num_classes=_math.vocab_size(w, weight_layout) * shards,
                   label_smoothing=float(label_smoothing),
                   log_partition_penalty=float(log_partition_penalty),
                   softcap=None if softcap is None else float(softcap),
                   has_class_weights=class_weights is not None,
                   weight_layout=weight_layout)
  if class_weights is not None:
    class_weights = jax.lax.stop_gradient(class_weights)
  w_rows = None if weights is None else jax.lax.stop_gradient(
      jnp.reshape(weights, (n,)).astype(_math.F32))
  eps = _math.resolve_filter_eps(filter_eps, cdt, hp)
  options = {"filter_eps": eps, "interpret": interpret,
             "vocab_sorting": vocab_sorting}
  for name, val in (("block_tokens", block_tokens), ("block_vocab", block_vocab),
                    ("block_dim", block_dim)):
    if val is not None:
      options[name] = val
  if fused_backward is None:
    # A numeric filter_eps or vocab_sorting asks for the streaming filter.
    fused_backward = (vocab_axis_name is None and not vocab_sorting
                      and isinstance(filter_eps, (str, type(None)))
                      and xla_fused.fused_by_default(cdt))
  if (n > 0 and impl == "xla_chunked" and fused_backward
      and xla_fused.fused_applies(reduction, return_lse)):
    return xla_fused.reduced(x2, w, y2, invalid, bias, class_weights, hp=hp,
                             ignore_index=ignore_index, reduction=reduction,
                             weights=w_rows, **options)
  if n == 0:
    zero_w = 0.0 * jnp.sum(w)
    if vocab_axis_name is not None:   # replicated over the axis, as below
      zero_w = jax.lax.psum(zero_w, vocab_axis_name)
    loss_rows = jnp.zeros((0,), _math.F32) + 0.0 * jnp.sum(x2) + zero_w
    lse = loss_rows
  elif vocab_axis_name is not None:
    loss_rows, lse = xla_vocab_parallel.rows_vocab_parallel(
        x2, w, y2, bias, class_weights, hp=hp, ignore_index=ignore_index,
        axis_name=vocab_axis_name, **options)
  else:
    loss_rows, lse = IMPLEMENTATIONS[impl](
        x2, w, y2, bias, class_weights, hp=hp, ignore_index=ignore_index,
        **options)
  loss_rows = label_range.nan_where_invalid(loss_rows, invalid)
  valid = y2 != ignore_index
  if w_rows is not None:
    loss_rows = loss_rows * w_rows
  if reduction == "none":
    loss = jnp.reshape(loss_rows, batch_shape)
  else:
    loss = jnp.sum(loss_rows)
    if reduction == "mean":
      if class_weights is None:
        k_y = jnp.ones((n,), _math.F32)
      elif vocab_axis_name is not None:
        k_y = xla_vocab_parallel.target_weight_vocab_parallel(
            class_weights, y2, ignore_index, vocab_axis_name)
      else:
        k_y = class_weights.astype(_math.F32)[jnp.where(valid, y2, 0)]
      if w_rows is not None:
        k_y = k_y * w_rows
      denom = jnp.sum(jnp.where(valid, k_y, 0.0))
      loss = loss / jnp.where(denom > 0, denom, 1.0)
  if return_lse:
    return loss, jnp.reshape(lse, batch_shape)
  return loss
