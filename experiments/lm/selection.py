"""Online batch selection in the LM step (``config.selection``).

Each step draws a candidate batch of ``selection.candidates`` sequences and
trains on ``batch_size`` of them, chosen inside the jitted step by
``diversity_jax.selection.uds_select`` (UDS) from a forward pass of the
current model over the candidates (no gradient):

* utility ``u_i``: sequence ``i``'s mean loss per target token, the training
  loss itself (the same head, z-loss and label smoothing). ``uds_select``
  scores a ``(L, V)`` logits matrix by its nuclear norm; the utility enters
  as a ``1 x 1`` matrix, whose nuclear norm is ``|u_i| = u_i``, so the
  ``B x L x V`` logits are never built;
* embedding ``e_i``: the mean of the final hidden states over its target
  positions, scaled to unit length;
* score ``s_i = u_i + alpha mean_{m in M} ||e_i - m||_2`` against the FIFO
  memory ``M`` of the embeddings of the last ``memory_size`` selected
  sequences (a ``UDSMemory`` in ``TrainState.selection``, checkpointed with
  the parameters); the ``batch_size`` highest scores are kept.

On a mesh the scoring forward runs inside ``jax.shard_map`` as the loss does
(candidates split over ``'data'``, vocabulary over ``'model'``) and the
top-k runs on the gathered ``(candidates,)`` scores.

References:
  "Utility-Diversity Aware Online Batch Selection for LLM Supervised
  Fine-tuning" (UDS), 2025, and its code https://github.com/gfyddha/UDS
  (``UDSamplingTrainer.compute_top_index``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from diversity_jax._src import numerics
from diversity_jax.selection import uds_init_memory
from diversity_jax.selection import uds_select
from experiments.lm import head as head_lib
from experiments.lm import step as step_lib

METHODS = ("none", "uds")


def sequence_scores(model, params, tokens, *, opts, pad_id,
                    vocab_axis_name=None):
  """``(utility (B,), embeddings (B, D))`` of the rows of ``tokens``.

  Utility: mean loss per target token of each row (0 for a row without
  targets); embedding: the unit-length mean of its final hidden states over
  its target positions. No gradient flows through either.
  """
  params = jax.lax.stop_gradient(params)
  inputs, targets, mask = step_lib.split_rows(tokens, pad_id,
                                              opts.ignore_padding)
  h, w = model.apply({"params": params}, inputs)
  b, l, d = h.shape
  per_token = head_lib.token_losses(
      h.reshape(-1, d), w, targets.reshape(-1), mask.reshape(-1),
      layout=model.head_layout, opts=opts._replace(fused_backward=False),
      vocab_axis_name=vocab_axis_name).reshape(b, l)
  count = jnp.sum(mask, axis=1).astype(jnp.float32)
  utility = numerics.safe_divide(jnp.sum(per_token, axis=1), count)
  hm = jnp.where(mask[..., None], h.astype(jnp.float32), 0.0)
  pooled = numerics.safe_divide(jnp.sum(hm, axis=1), count[:, None])
  emb = numerics.safe_divide(
      pooled, numerics.safe_norm(pooled, axis=-1, keepdims=True))
  return utility, emb


def make_select_fn(model, mesh, opts, pad_id: int, *, k: int, alpha: float):
  """``select(params, memory, tokens) -> (indices (k,), memory, metrics)``:
  UDS over the candidate rows of ``tokens`` (see module doc)."""
  scores_fn = step_lib.map_rows(
      lambda m, p, t, vocab_axis_name: sequence_scores(
          m, p, t, opts=opts, pad_id=pad_id, vocab_axis_name=vocab_axis_name),
      model, mesh, (P(step_lib.DATA), P(step_lib.DATA)))

  def select(params, memory, tokens):
    utility, emb = scores_fn(params, tokens)
    idx, _, memory = uds_select(utility[:, None, None], emb, memory, k,
                                alpha=alpha)
    chosen = jnp.take(utility, jnp.maximum(idx, 0))
    metrics = {"candidate_loss": jnp.mean(utility),
               "selected_loss": jnp.mean(chosen)}
    return idx, memory, metrics

  return select


def init_memory(config, model):
  """``() -> UDSMemory`` of ``config.selection.memory_size`` rows of width
  ``model.dim`` (for ``step.init_state``)."""
  return lambda: uds_init_memory(config.selection.memory_size, model.dim)
