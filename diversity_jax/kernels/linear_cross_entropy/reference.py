"""``implementation='reference'``: materialized N x V logits, plain autodiff.

The baseline for tests and benchmarks. It evaluates the same per-row formula as
the fused paths (``_math.row_loss``) on the full logits matrix and lets
``jax.grad`` differentiate it, so it shares no custom VJP code with them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax.kernels.linear_cross_entropy import _math


def rows(x, w, labels, bias, class_weights, *, hp: _math.Hyper, ignore_index,
         **unused):
  """Per-row ``(loss, lse)`` in f32 for ``x`` (N, D), ``w`` (V, D) (or (D, V)
  with ``hp.weight_layout='dv'``), ``labels`` (N,)."""
  del unused
  valid = labels != ignore_index
  safe = jnp.where(valid, labels, 0)
  s = _math.tile_logits(x, w, bias, hp.softcap,
                        layout=hp.weight_layout)               # (N, V) f32
  lse = jax.nn.logsumexp(s, axis=-1)
  s_y = jnp.take_along_axis(s, safe[:, None], axis=-1)[:, 0]
  if class_weights is None:
    k = jnp.ones((_math.vocab_size(w, hp.weight_layout),), _math.F32)
  else:
    k = class_weights.astype(_math.F32)
  s_w = s @ k if hp.label_smoothing else jnp.zeros_like(lse)
  loss = _math.row_loss(lse, s_y, s_w, k[safe], valid, hp, jnp.sum(k))
  return loss, lse
