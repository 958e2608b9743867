"""Specs of the metric-learning losses for the family-wide loss test."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import numerics
from tests.losses.spec import LossSpec

_DIM = 8
_CLASSES = 3


def _embeddings(key, batch, dtype):
  return jax.random.normal(key, (batch, _DIM), dtype)


def _pair_labels(batch):
  # Two examples per class: every anchor has a positive and (batch > 2) negatives.
  return jnp.arange(batch, dtype=jnp.int32) // 2


def _batch_args(key, batch, dtype):
  return (_embeddings(key, batch, dtype), _pair_labels(batch))


def _head_args(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  weights = jax.random.normal(k2, (_DIM, _CLASSES), jnp.float32)
  labels = jnp.arange(batch, dtype=jnp.int32) % _CLASSES
  return (_embeddings(k1, batch, dtype), labels, weights)


def _proto_args(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  protos = jax.random.normal(k2, (_CLASSES, _DIM), jnp.float32)
  labels = jnp.arange(batch, dtype=jnp.int32) % _CLASSES
  return (_embeddings(k1, batch, dtype), labels, protos,
          jnp.arange(_CLASSES, dtype=jnp.int32))


def _anchor_mean(fn, *args, where=None, **kwargs):
  # Per-anchor pairwise losses: a `where`-dropped example leaves the batch (it
  # is nobody's positive or negative), so the kept anchors' values change and
  # the per-example `where` check does not apply. The batch loss is the mean
  # over kept anchors (the paper's number), checked as a batch-level loss.
  out = fn(*args, where=where, **kwargs)
  return numerics.masked_mean(out, where)


def _embeddings_only(key, batch, dtype):
  return (_embeddings(key, batch, dtype),)


def _row_mean_distance(fn, embeddings, **kwargs):
  return fn(embeddings, **kwargs).mean(axis=-1)


def _opis_on_bf16_grid(fn, embeddings, labels, **kwargs):
  # OPIS is a step function of the embeddings: rounding every input to the
  # bf16 grid first makes the f32 and bf16 calls of the common test identical
  # instead of letting a rounding flip one pair across a threshold.
  return fn(embeddings.astype(jnp.bfloat16), labels, **kwargs)


def _opis_args(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  labels = jnp.arange(batch, dtype=jnp.int32) % _CLASSES
  centers = 3.0 * jax.random.normal(k2, (_CLASSES, _DIM), jnp.float32)
  x = centers[labels] + jax.random.normal(k1, (batch, _DIM), jnp.float32)
  return (x.astype(dtype), labels)


_FD = dict(eps=1e-3, atol=5e-2, rtol=5e-2)

SPECS = [
    LossSpec("multi_similarity_loss", _batch_args, call=_anchor_mean,
             per_example=False, min_batch=2, check_grads_kwargs=_FD,
             labels="identities"),
    LossSpec("threshold_consistent_margin_loss", _batch_args,
             per_example=False, min_batch=2, check_grads_kwargs=_FD,
             labels="identities"),
    # snr_distance is a (B, R) distance, not a loss: the spec reduces it to a
    # per-anchor mean; it takes no `where`.
    LossSpec("snr_distance", _embeddings_only, call=_row_mean_distance,
             supports_where=False, min_batch=1, check_grads_kwargs=_FD,
             nan_scope="batch"),
    LossSpec("snr_contrastive_loss", _batch_args, per_example=False,
             min_batch=2, check_grads_kwargs=_FD, labels="identities"),
    LossSpec("normalized_softmax_loss", _head_args, check_grads_kwargs=_FD,
             labels="classes"),
    LossSpec("unpg_loss", _head_args, call=_anchor_mean, per_example=False,
             check_grads_kwargs=_FD, labels="classes"),
    # Query labels are matched against the prototype labels (a query with
    # no own-class prototype is defined, as in the authors' code).
    LossSpec("proto_triplet_loss", _proto_args, check_grads_kwargs=_FD,
             labels="identities", label_args=(1, 3)),
    LossSpec("opis", _opis_args, call=_opis_on_bf16_grid,
             kwargs=dict(far_range=(0.05, 0.5), num_thresholds=11),
             per_example=False, min_batch=4, labels="identities",
             skip_reason="opis is an evaluation metric, piecewise constant in "
             "the embeddings (gradient 0 a.e., no finite-difference check); the "
             "spec evaluates it on bf16-rounded embeddings."),
    LossSpec("icnn_loss", _batch_args, per_example=False, supports_where=False,
             min_batch=3, check_grads_kwargs=_FD, labels="identities",
             skip_reason="icnn_loss scores a whole labelled set through a "
             "kNN graph: piecewise smooth (neighbour order changes), so its "
             "gradient is checked against finite differences of the numpy "
             "reference away from order changes in test_metric_susana.py; it "
             "takes no `where` (k shrinks with the set size)."),
]
