"""The language-model head: summed next-token loss from hidden states.

``lm_head='fused'`` calls ``diversity_jax.kernels.linear_cross_entropy``
(the ``N x V`` logits are never built; with ``vocab_axis_name`` the
vocabulary shard of each device is streamed and the log-sum-exps combined
over the axis). ``lm_head='materialized'`` builds the logits and calls optax
on them (the comparison point; under vocab parallelism the output matrix is
first all-gathered over the axis). Both compute, per target token with
weight ``m_i`` (0 at padding),

  ``m_i [(1 - a) (lse_i - s_{i y_i}) + (a / V) (V lse_i - sum_j s_ij)
  + lambda lse_i^2]``

with soft-capped logits ``s = c tanh(z / c)``, label smoothing ``a`` and the
z-loss ``lambda`` (PaLM), and return the sum over tokens; the caller divides
by the number of target tokens.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from diversity_jax.kernels import linear_cross_entropy

LM_HEADS = ("fused", "materialized")


class HeadOptions(NamedTuple):
  """Static options of the head (``config.head``; hashable)."""
  lm_head: str = "fused"
  label_smoothing: float = 0.0
  z_loss: float = 0.0
  softcap: Optional[float] = None
  ignore_padding: bool = True
  implementation: Optional[str] = None
  fused_backward: Optional[bool] = None     # None: the kernel's default
  filter_eps: object = "auto"


def _logits(h, w, layout):
  """``h @ W`` as f32 logits for ``w`` ``(V, D)`` (``'vd'``) or ``(D, V)``."""
  dims = ((1,), (1,)) if layout == "vd" else ((1,), (0,))
  return jax.lax.dot_general(h, w.astype(h.dtype), (dims, ((), ())),
                             preferred_element_type=jnp.float32)


def materialized_loss(h, w, labels, mask, *, layout, opts: HeadOptions,
                      vocab_axis_name=None):
  """Per-token loss from the full logits (optax), ``(N,)`` f32, 0 where
  ``mask`` is False."""
  if vocab_axis_name is not None:
    w = jax.lax.all_gather(w, vocab_axis_name, axis=0 if layout == "vd" else 1,
                           tiled=True, to="invarying")
  z = _logits(h, w, layout)
  if opts.softcap:
    z = opts.softcap * jnp.tanh(z / opts.softcap)
  safe = jnp.where(mask, labels, 0)
  if opts.label_smoothing:
    targets = optax.smooth_labels(jax.nn.one_hot(safe, z.shape[-1]),
                                  opts.label_smoothing)
    loss = optax.softmax_cross_entropy(z, targets)
  else:
    loss = optax.softmax_cross_entropy_with_integer_labels(z, safe)
  if opts.z_loss:
    loss = loss + opts.z_loss * jnp.square(jax.nn.logsumexp(z, axis=-1))
  return jnp.where(mask, loss, 0.0)


def token_losses(h, w, labels, mask, *, layout: str, opts: HeadOptions,
                 vocab_axis_name: Optional[str] = None):
  """Per-token loss ``(N,)`` f32 (0 where ``mask`` is False), no gradient
  path: the scores of online batch selection. Arguments as ``loss_sum``."""
  if opts.lm_head == "materialized":
    return materialized_loss(h, w, labels, mask, layout=layout, opts=opts,
                             vocab_axis_name=vocab_axis_name)
  return linear_cross_entropy(
      h, w.astype(h.dtype), labels, weights=mask.astype(jnp.float32),
      weight_layout=layout, label_smoothing=opts.label_smoothing,
      log_partition_penalty=opts.z_loss, softcap=opts.softcap,
      reduction="none", filter_eps=opts.filter_eps,
      implementation=opts.implementation, vocab_axis_name=vocab_axis_name)


def loss_sum(h, w, labels, mask, *, layout: str, opts: HeadOptions,
             vocab_axis_name: Optional[str] = None, eval_only: bool = False):
  """Summed next-token loss over the tokens where ``mask`` holds.

  Args:
    h: hidden states ``(N, D)``.
    w: output matrix, ``(V, D)`` for ``layout='vd'`` or ``(D, V)`` for
      ``'dv'`` (the local vocab shard with ``vocab_axis_name``).
    labels: next-token ids ``(N,)``.
    mask: ``(N,)`` bool, False at the targets without loss (padding).
    layout: ``'vd'`` or ``'dv'``.
    opts: head options.
    vocab_axis_name: mesh axis of the vocab shards (inside ``shard_map``).
    eval_only: the plain cross-entropy (no smoothing, no z-loss) through
      the fused kernel whatever ``opts.lm_head``: validation never builds
      the logits.

  Returns:
    f32 scalar (identical on every shard of ``vocab_axis_name``).
  """
  if eval_only:
    opts = opts._replace(lm_head="fused", label_smoothing=0.0, z_loss=0.0,
                         fused_backward=False)
  if opts.lm_head == "materialized":
    return jnp.sum(materialized_loss(h, w, labels, mask, layout=layout,
                                     opts=opts,
                                     vocab_axis_name=vocab_axis_name))
  # The mask is the per-token loss weight; a (D, V) Dense kernel is read in
  # its own layout (no transposed copy).
  return linear_cross_entropy(
      h, w.astype(h.dtype), labels, weights=mask.astype(jnp.float32),
      weight_layout=layout, label_smoothing=opts.label_smoothing,
      log_partition_penalty=opts.z_loss, softcap=opts.softcap,
      reduction="sum", filter_eps=opts.filter_eps,
      implementation=opts.implementation,
      fused_backward=opts.fused_backward, vocab_axis_name=vocab_axis_name)
