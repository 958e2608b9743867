"""Cross-batch memory (XBM): a ring buffer of past embeddings as explicit state.

The memory holds the last ``memory_size`` embeddings (without gradient) and
their labels. Each step enqueues the batch, then scores a pair loss on
(batch queries) x (memory references) through the losses' ``ref_embeddings``
/ ``ref_labels`` / ``pair_where`` arguments: empty slots and each query's own
copy are excluded by the pair mask, so shapes stay static under ``jax.jit``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax.losses import _metric_pairs as pairs


class CrossBatchMemoryState(NamedTuple):
  """State of :func:`cross_batch_memory_loss`.

  Attributes:
    embeddings: (M, D) f32 stored embeddings (zeros in empty slots).
    labels: (M,) integer labels of the stored embeddings.
    filled: (M,) bool, True for slots that hold an embedding.
    position: () int32, the slot the next embedding is written to.
  """
  embeddings: jax.Array
  labels: jax.Array
  filled: jax.Array
  position: jax.Array


def cross_batch_memory_init(memory_size: int, embedding_dim: int, *,
                            label_dtype=jnp.int32) -> CrossBatchMemoryState:
  """An empty cross-batch memory of ``memory_size`` slots.

  Args:
    memory_size: number of stored embeddings :math:`M \\ge 1`.
    embedding_dim: embedding width :math:`D \\ge 1`.
    label_dtype: integer dtype of the stored labels.

  Returns:
    A :class:`CrossBatchMemoryState` with every slot empty.

  Example:
    >>> from diversity_jax.metric_learning import cross_batch_memory_init
    >>> state = cross_batch_memory_init(1024, 128)
    >>> state.embeddings.shape, int(state.filled.sum())
    ((1024, 128), 0)

  References:
    Wang, Zhang, Huang, Scott, "Cross-Batch Memory for Embedding Learning",
    CVPR 2020, Sec. 4 (arXiv:1912.06798). Code: github.com/msight-tech/
    research-xbm; pytorch-metric-learning ``losses.CrossBatchMemory``.
  """
  fn = "cross_batch_memory_init"
  for name, value in (("memory_size", memory_size),
                      ("embedding_dim", embedding_dim)):
    if not (isinstance(value, int) and value >= 1):
      raise ValueError(f"{fn}: `{name}` must be a positive int, got {value!r}")
  if not jnp.issubdtype(label_dtype, jnp.integer):
    raise TypeError(f"{fn}: `label_dtype` must be an integer dtype, got "
                    f"{label_dtype}")
  return CrossBatchMemoryState(
      embeddings=jnp.zeros((memory_size, embedding_dim), jnp.float32),
      labels=jnp.zeros((memory_size,), label_dtype),
      filled=jnp.zeros((memory_size,), jnp.bool_),
      position=jnp.zeros((), jnp.int32))


def cross_batch_memory_update(state: CrossBatchMemoryState, embeddings, labels,
                              *, where=None):
  r"""Enqueues a batch into the ring buffer (oldest entries overwritten).

  The kept examples (``where``) are written, in batch order, to slots
  :math:`(\mathrm{position} + j) \bmod M`; they carry no gradient.

  Args:
    state: a :class:`CrossBatchMemoryState`.
    embeddings: (B, D) float embeddings, :math:`B \le M`.
    labels: (B,) integer labels.
    where: optional (B,) bool mask of the examples to enqueue.

  Returns:
    ``(new_state, slots)``: the new state and the (B,) int32 slot each
    example was written to (``-1`` for an example not enqueued).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.metric_learning import (
    ...     cross_batch_memory_init, cross_batch_memory_update)
    >>> state = cross_batch_memory_init(6, 4)
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (4, 4))
    >>> state, slots = cross_batch_memory_update(state, x, jnp.arange(4))
    >>> state, slots = cross_batch_memory_update(state, x, jnp.arange(4))
    >>> slots, int(state.position)
    (Array([4, 5, 0, 1], dtype=int32), 2)

  References:
    Wang, Zhang, Huang, Scott, "Cross-Batch Memory for Embedding Learning",
    CVPR 2020, Sec. 4 (the memory and its update) (arXiv:1912.06798).
    Code: pytorch-metric-learning ``losses.CrossBatchMemory``.
  """
  fn = "cross_batch_memory_update"
  x, labels, where = pairs.validate_batch(embeddings, labels, where, fn)
  memory_size, dim = state.embeddings.shape
  checks.check_shape(x, (None, dim), "embeddings", fn)
  b = x.shape[0]
  if b > memory_size:
    raise ValueError(f"{fn}: the batch ({b} `embeddings`) is larger than the "
                     f"memory ({memory_size} slots)")
  keep = jnp.ones((b,), jnp.bool_) if where is None else where
  offset = jnp.cumsum(keep) - 1
  slots = jnp.where(keep, (state.position + offset) % memory_size, -1)
  target = jnp.where(keep, slots, memory_size)  # out of range: dropped
  x = jax.lax.stop_gradient(x)
  new = CrossBatchMemoryState(
      embeddings=state.embeddings.at[target].set(x, mode="drop"),
      labels=state.labels.at[target].set(
          labels.astype(state.labels.dtype), mode="drop"),
      filled=state.filled.at[target].set(True, mode="drop"),
      position=((state.position + jnp.sum(keep)) % memory_size).astype(
          jnp.int32))
  return new, slots.astype(jnp.int32)


def cross_batch_memory_loss(loss_fn: Callable, embeddings, labels,
                            state: CrossBatchMemoryState, *, where=None,
                            miner: Optional[Callable] = None, **loss_kwargs):
  r"""A pair loss over (batch) x (cross-batch memory); returns the new state.

  The batch is enqueued first (without gradient), then ``loss_fn`` scores
  every query :math:`x_i` of the batch against every filled memory slot
  :math:`m_j`, except the query's own copy:

  .. math::
    \ell = \mathrm{loss\_fn}\big(\{x_i\}, \{m_j : j \text{ filled},
      j \ne \mathrm{slot}(i)\}\big),

  so positives and negatives come from the last :math:`M` embeddings instead
  of one batch. ``loss_fn`` is any pair loss that takes ``ref_embeddings``,
  ``ref_labels`` and ``pair_where`` (:func:`~diversity_jax.losses.multi_similarity_loss`,
  :func:`~diversity_jax.losses.threshold_consistent_margin_loss`,
  :func:`~diversity_jax.losses.snr_contrastive_loss`). An optional ``miner``
  (e.g. :func:`multi_similarity_miner`) selects among the same candidate
  pairs; its mask is passed on as ``pair_where``. Gradients flow into the
  batch embeddings only, as in the paper.

  Args:
    loss_fn: a pair loss ``loss_fn(embeddings, labels, *, where,
      ref_embeddings, ref_labels, pair_where, **loss_kwargs)``.
    embeddings: (B, D) float batch embeddings, :math:`B \le M`.
    labels: (B,) integer labels.
    state: a :class:`CrossBatchMemoryState`.
    where: optional (B,) bool mask: dropped examples are neither queries nor
      enqueued.
    miner: optional ``miner(embeddings, labels, *, where, ref_embeddings,
      ref_labels, pair_where) -> (B, M) bool`` pair miner.
    **loss_kwargs: hyperparameters of ``loss_fn``.

  Returns:
    ``(loss, new_state)``: ``loss_fn``'s output and the updated memory.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.losses import multi_similarity_loss
    >>> from diversity_jax.metric_learning import (
    ...     cross_batch_memory_init, cross_batch_memory_loss)
    >>> state = cross_batch_memory_init(32, 4)
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (8, 4))
    >>> y = jnp.array([0, 0, 1, 1, 2, 2, 3, 3])
    >>> loss, state = jax.jit(cross_batch_memory_loss, static_argnums=0)(
    ...     multi_similarity_loss, x, y, state)
    >>> loss.shape, int(state.filled.sum())
    ((8,), 8)

  References:
    Wang, Zhang, Huang, Scott, "Cross-Batch Memory for Embedding Learning",
    CVPR 2020, Sec. 4 (the XBM loss) (arXiv:1912.06798). Code:
    github.com/msight-tech/research-xbm; pytorch-metric-learning
    ``losses.CrossBatchMemory``.
  """
  state, slots = cross_batch_memory_update(state, embeddings, labels,
                                           where=where)
  memory_size = state.embeddings.shape[0]
  own = slots[:, None] == jnp.arange(memory_size)[None, :]
  candidates = state.filled[None, :] & ~own
  refs = dict(ref_embeddings=state.embeddings, ref_labels=state.labels)
  if miner is not None:
    candidates = miner(embeddings, labels, where=where, pair_where=candidates,
                       **refs)
  loss = loss_fn(embeddings, labels, where=where, pair_where=candidates,
                 **refs, **loss_kwargs)
  return loss, state
