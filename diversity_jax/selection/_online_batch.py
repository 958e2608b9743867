"""Utility-diversity online batch selection (UDS) with an explicit memory."""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.selection import _common


class UDSMemory(NamedTuple):
  """FIFO memory of the embeddings of previously selected samples."""

  buffer: jax.Array  # (size, dim)
  count: jax.Array  # int32 scalar, number of filled rows
  pointer: jax.Array  # int32 scalar, next row to write


def uds_init_memory(size: int, dim: int) -> UDSMemory:
  r"""Empty memory for :func:`uds_select`: ``size`` rows of ``dim`` floats.

  .. math::

    \mathcal{M} = \emptyset\quad(\text{count} = 0).

  Args:
    size: number of remembered samples (static int >= 1; the paper uses 1024).
    dim: embedding dimension (static int >= 1).

  Returns:
    A :class:`UDSMemory` with a zero ``(size, dim)`` f32 buffer.

  Example:
    >>> from diversity_jax.selection import uds_init_memory
    >>> m = uds_init_memory(4, 3)
    >>> m.buffer.shape, int(m.count)
    ((4, 3), 0)

  References:
    "Utility-Diversity Aware Online Batch Selection for LLM Supervised
    Fine-tuning" (UDS), 2025: the memory buffer of historical samples.
    Code: https://github.com/gfyddha/UDS (``update_repr_queue``, FIFO).
  """
  fn = "uds_init_memory"
  size = _common.check_k(size, 2**62, fn, "size")
  dim = _common.check_k(dim, 2**62, fn, "dim")
  if size < 1 or dim < 1:
    checks._fail(fn, f"`size` and `dim` must be >= 1, got {size}, {dim}")
  zero = jnp.zeros((), jnp.int32)
  return UDSMemory(jnp.zeros((size, dim), jnp.float32), zero, zero)


def _nuclear_norms(logits: jax.Array) -> jax.Array:
  return jnp.sum(jax.vmap(lambda m: jnp.linalg.svd(m, compute_uv=False))(
      logits), axis=-1)


def uds_select(logits: jax.Array, embeddings: jax.Array, memory: UDSMemory,
               k: int, *, alpha: float = 2.5e-3,
               token_mask: Optional[jax.Array] = None,
               where: Optional[jax.Array] = None):
  r"""UDS: keep the ``k`` candidates of highest utility + diversity score.

  For candidate :math:`i` with logits :math:`Z_i \in \mathbb{R}^{L \times V}`
  (the model's own forward pass, no reference model) and low-dimensional
  embedding :math:`e_i`, against the memory :math:`\mathcal{M}` of embeddings
  of previously selected samples,

  .. math::

    s_i = \lVert Z_i \rVert_* + \alpha\,\frac{1}{|\mathcal{M}|}
    \sum_{m \in \mathcal{M}} \lVert e_i - m \rVert_2,

  (the diversity term is 0 while the memory is empty). The nuclear norm
  measures both utility and intra-sample diversity, the mean distance to the
  memory inter-sample diversity. The ``k`` best candidates are returned
  (highest score first, ties to the lowest index) and their embeddings
  written to the memory, first in, first out.

  Args:
    logits: ``(B, L, V)`` floating logits of the candidate batch.
    embeddings: ``(B, D)`` floating per-sample embeddings (the authors use a
      random Johnson-Lindenstrauss projection of the padded logits matrix).
    memory: the :class:`UDSMemory` state (from :func:`uds_init_memory`).
    k: number of selected samples, a static int in ``[0, min(B, size)]``.
    alpha: weight of the diversity term (the authors' default 2.5e-3).
    token_mask: optional ``(B, L)`` boolean mask of real (non-padding)
      tokens; padded rows are zeroed (the nuclear norm of the zero-padded
      matrix, as in the authors' code).
    where: optional ``(B,)`` boolean mask of eligible candidates.

  Returns:
    ``(indices, scores, new_memory)``: ``(k,)`` int32 indices (``-1`` for
    unfilled slots; all ``-1``, memory unchanged, when an eligible score is
    NaN), the ``(B,)`` f32 scores and the updated :class:`UDSMemory`.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.selection import uds_init_memory, uds_select
    >>> z = jnp.stack([jnp.eye(3), 2 * jnp.eye(3), jnp.ones((3, 3))])
    >>> e = jnp.array([[0., 0.], [1., 0.], [0., 1.]])
    >>> idx, s, mem = uds_select(z, e, uds_init_memory(4, 2), 2)
    >>> idx.tolist(), [round(float(v), 3) for v in s], int(mem.count)
    ([1, 0], [3.0, 6.0, 3.0], 2)

  References:
    "Utility-Diversity Aware Online Batch Selection for LLM Supervised
    Fine-tuning" (UDS), 2025: utility and intra-sample diversity from the
    nuclear norm of the logits matrix, inter-sample diversity as the mean
    distance to a memory buffer of selected samples. Code:
    https://github.com/gfyddha/UDS (``UDSamplingTrainer.compute_top_index``,
    ``compute_diversity_scores``; default ``alpha = 2.5e-3``).
  """
  fn = "uds_select"
  checks.check_floating(logits, "logits", fn)
  checks.check_rank(logits, 3, "logits", fn)
  b = logits.shape[0]
  _common.check_features(embeddings, fn, "embeddings")
  checks.check_shape(embeddings, (b, memory.buffer.shape[1]), "embeddings", fn)
  k = _common.check_k(k, min(b, memory.buffer.shape[0]), fn)
  checks.check_nonnegative(alpha, "alpha", fn)
  checks.check_where(where, (b,), fn)
  if token_mask is not None:
    checks.check_where(token_mask, logits.shape[:2], fn, "token_mask")
  z = numerics.promote_to_f32(jnp.asarray(logits))
  e = numerics.promote_to_f32(jnp.asarray(embeddings)).astype(jnp.float32)
  if token_mask is not None:
    z = jnp.where(token_mask[..., None], z, 0.0)
  utility = _nuclear_norms(z)
  size = memory.buffer.shape[0]
  filled = jnp.arange(size) < memory.count
  dist = jnp.sqrt(jnp.sum(jnp.square(e[:, None] - memory.buffer[None]), -1))
  mean_dist = numerics.safe_divide(
      jnp.sum(jnp.where(filled[None], dist, 0.0), axis=-1),
      memory.count.astype(jnp.float32))
  scores = utility + alpha * mean_dist
  eligible = jnp.ones((b,), bool) if where is None else where
  ranked = jnp.where(eligible, jnp.nan_to_num(scores, nan=0.0), -jnp.inf)
  top, idx = jax.lax.top_k(ranked, k)
  idx = jnp.where(top > -jnp.inf, idx, -1).astype(jnp.int32)
  bad = jnp.any(eligible & jnp.isnan(scores))
  idx = _common.invalidate(idx, bad)
  ok = idx >= 0
  rows = (memory.pointer + jnp.cumsum(ok) - 1) % size
  rows = jnp.where(ok, rows, size)  # out of range: dropped by the scatter
  buffer = memory.buffer.at[rows].set(e[jnp.maximum(idx, 0)], mode="drop")
  written = jnp.sum(ok).astype(jnp.int32)
  new_memory = UDSMemory(buffer, jnp.minimum(memory.count + written, size),
                         (memory.pointer + written) % size)
  return idx, scores, new_memory
