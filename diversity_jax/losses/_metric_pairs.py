"""Shared internals of the metric-learning losses (embeddings + integer labels).

Everything here works on at most a constant number of ``(B, B)`` arrays: no
``(B, B, D)`` broadcast is ever formed, so a batch of 4096 embeddings costs a
few ``4096**2`` float buffers, never ``4096**2 * D``.

* ``validate_batch``: trace-time checks of ``embeddings`` (B, D) float,
  ``labels`` (B,) int and ``where`` (B,) bool; promotes to f32.
* ``l2_normalize``: ``x / max(||x||, eps)`` as ``torch.nn.functional.normalize``
  (the convention of pytorch-metric-learning) with a finite gradient at 0.
* ``cosine_similarity_matrix``: ``S = x_hat @ y_hat.T``.
* ``pair_masks``: positive / negative pair masks (self-pairs and pairs touching a
  ``where``-dropped example excluded).
* ``query_reference_pairs``: the (B, R) pair set of a pairwise loss: queries
  against the batch itself or against explicit references (a cross-batch
  memory), restricted to a kept-pair mask (a miner's output).
* ``masked_logsumexp_add_one``: ``log(1 + sum_{k in mask} exp(x_k))`` per row,
  0 for a row with no kept entry (pml ``logsumexp(..., add_one=True)``).
* ``nonfinite_batch``: NaN in, NaN out for outputs that depend on every kept
  embedding (masks and miners would otherwise drop the NaN pairs silently).

Labels are identities: only their equality matters, any integer is valid.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics


def validate_batch(embeddings, labels, where, fn: str, *,
                   embeddings_name: str = "embeddings",
                   labels_name: str = "labels",
                   min_dim: int = 1):
  """Checks a metric-learning batch and returns f32 ``embeddings``.

  ``embeddings`` must be a floating (B, D) array, ``labels`` an integer (B,)
  array and ``where`` an optional boolean (B,) mask. Errors name the argument.
  """
  checks.check_floating(embeddings, embeddings_name, fn)
  checks.check_rank(embeddings, 2, embeddings_name, fn)
  if jnp.shape(embeddings)[1] < min_dim:
    raise ValueError(
        f"{fn}: `{embeddings_name}` must have at least {min_dim} features "
        f"(last axis), got shape {jnp.shape(embeddings)}")
  checks.check_integer(labels, labels_name, fn)
  checks.check_shape(labels, (jnp.shape(embeddings)[0],), labels_name, fn)
  checks.check_where(where, (jnp.shape(embeddings)[0],), fn)
  if where is not None:
    where = jnp.broadcast_to(where, (jnp.shape(embeddings)[0],))
  x = numerics.promote_to_f32(embeddings).astype(jnp.float32)
  return x, jnp.asarray(labels), where


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """``x / max(||x||_2, eps)`` along ``axis`` (zero-safe gradient)."""
  norm = numerics.safe_norm(x, axis=axis, keepdims=True)
  return x / jnp.maximum(norm, eps)


def cosine_similarity_matrix(x: jax.Array, y: Optional[jax.Array] = None):
  """Cosine similarities ``S[i, j] = <x_i, y_j> / (|x_i| |y_j|)``; (B, R)."""
  xn = l2_normalize(x)
  yn = xn if y is None else l2_normalize(y)
  return jnp.matmul(xn, yn.T, precision=jax.lax.Precision.HIGHEST)


def pair_masks(labels: jax.Array, where=None):
  """Boolean (B, B) masks of positive and negative pairs.

  Positive: ``labels[i] == labels[j]`` and ``i != j``; negative:
  ``labels[i] != labels[j]``. Pairs involving an example with ``where`` False
  are in neither mask.
  """
  b = labels.shape[0]
  same = labels[:, None] == labels[None, :]
  not_self = ~jnp.eye(b, dtype=jnp.bool_)
  pos = same & not_self
  neg = ~same
  if where is not None:
    keep = where[:, None] & where[None, :]
    pos = pos & keep
    neg = neg & keep
  return pos, neg


def validate_references(x, ref_embeddings, ref_labels, pair_where, fn: str):
  """Checks optional references (R, D) / (R,) and a (B, R) ``pair_where``.

  Returns f32 references (or None) and the references' labels.
  """
  if (ref_embeddings is None) != (ref_labels is None):
    raise ValueError(f"{fn}: `ref_embeddings` and `ref_labels` go together: "
                     "pass both or neither")
  y = None
  if ref_embeddings is not None:
    checks.check_floating(ref_embeddings, "ref_embeddings", fn)
    checks.check_rank(ref_embeddings, 2, "ref_embeddings", fn)
    checks.check_shape(ref_embeddings, (None, x.shape[1]), "ref_embeddings", fn)
    checks.check_integer(ref_labels, "ref_labels", fn)
    checks.check_shape(ref_labels, (jnp.shape(ref_embeddings)[0],),
                       "ref_labels", fn)
    y = numerics.promote_to_f32(ref_embeddings).astype(jnp.float32)
    ref_labels = jnp.asarray(ref_labels)
  num_refs = x.shape[0] if y is None else y.shape[0]
  if pair_where is not None:
    if jnp.result_type(pair_where) != jnp.bool_:
      raise TypeError(f"{fn}: `pair_where` must be a boolean mask, got "
                      f"{jnp.result_type(pair_where)}")
    checks.check_shape(pair_where, (x.shape[0], num_refs), "pair_where", fn)
  return y, ref_labels


def query_reference_pairs(x, labels, where, ref_embeddings=None,
                          ref_labels=None, pair_where=None, *, fn: str):
  """References and (B, R) positive / negative masks of a pairwise loss.

  Without references the batch is its own reference set (``pair_masks``:
  self-pairs and ``where``-dropped examples excluded). With ``ref_embeddings``
  (R, D) and ``ref_labels`` (R,) every query is paired with every reference
  (``where`` drops query rows only; a reference that is a copy of the query,
  as in a cross-batch memory, is excluded through ``pair_where``).
  ``pair_where`` (B, R) keeps a subset of the pairs (a miner's output).

  Returns ``(y, pos, neg, invalid)``: the f32 references, the masks and the
  (B,) NaN flags (``nonfinite_batch`` of the kept queries and references).
  """
  y, ref_labels = validate_references(x, ref_embeddings, ref_labels,
                                      pair_where, fn)
  invalid = nonfinite_batch(x, where)
  if y is None:
    y = x
    pos, neg = pair_masks(labels, where)
  else:
    same = labels[:, None] == ref_labels[None, :]
    pos, neg = same, ~same
    if where is not None:
      pos = pos & where[:, None]
      neg = neg & where[:, None]
    invalid = invalid | jnp.any(~jnp.isfinite(y))
  if pair_where is not None:
    pos = pos & pair_where
    neg = neg & pair_where
  return y, pos, neg, invalid


def masked_logsumexp_add_one(x: jax.Array, mask: jax.Array, axis: int = -1):
  """``log(1 + sum_{mask} exp(x))`` along ``axis``; 0 where nothing is kept.

  Stable for any finite ``x`` and with zero gradient for masked entries.
  """
  x_safe = jnp.where(mask, x, 0.0)
  m = jnp.max(jnp.where(mask, x_safe, -jnp.inf), axis=axis, keepdims=True,
              initial=-jnp.inf)
  m = jax.lax.stop_gradient(jnp.maximum(m, 0.0))  # the appended 0 logit
  total = jnp.sum(jnp.where(mask, jnp.exp(x_safe - m), 0.0), axis=axis,
                  keepdims=True) + jnp.exp(-m)
  out = jnp.squeeze(m + jnp.log(total), axis=axis)
  return jnp.where(jnp.any(mask, axis=axis), out, 0.0)


def masked_logsumexp(x: jax.Array, mask: jax.Array, axis=None):
  """``log(sum_{mask} exp(x))``; returns ``(value, any_kept)``.

  ``value`` is 0 (finite, zero gradient) where nothing is kept; the caller
  decides what an empty set means.
  """
  x_safe = jnp.where(mask, x, 0.0)
  m = jnp.max(jnp.where(mask, x_safe, -jnp.inf), axis=axis, keepdims=True,
              initial=-jnp.inf)
  any_kept = jnp.any(mask, axis=axis, keepdims=True)
  m = jax.lax.stop_gradient(jnp.where(any_kept, m, 0.0))
  total = jnp.sum(jnp.where(mask, jnp.exp(x_safe - m), 0.0), axis=axis,
                  keepdims=True)
  value = jnp.where(any_kept, m + jnp.log(jnp.where(any_kept, total, 1.0)), 0.0)
  if axis is None:
    return value.reshape(()), any_kept.reshape(())
  return jnp.squeeze(value, axis=axis), jnp.squeeze(any_kept, axis=axis)


def masked_pair_mean(values: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of ``values`` over ``mask`` (all axes); 0 when the mask is empty."""
  return numerics.masked_mean(values, mask)


def nonfinite_batch(x: jax.Array, where=None) -> jax.Array:
  """(B,) bool, all True when a kept row of ``x`` (B, D) holds a NaN or inf.

  For outputs that depend on every kept embedding (pair losses, batch
  metrics): pass it as ``invalid`` to ``numerics.apply_where`` (per anchor)
  or to ``label_range.nan_where_invalid`` (batch scalar), so a NaN embedding
  gives NaN instead of being dropped by a pair mask or a miner's comparison.
  """
  bad_rows = ~jnp.all(jnp.isfinite(x), axis=-1)
  if where is not None:
    bad_rows = bad_rows & where
  return jnp.broadcast_to(jnp.any(bad_rows), bad_rows.shape)
