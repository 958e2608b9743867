r"""Online batch selection for the label-noise study: a large candidate batch,
the selected sub-batch trains.

Each step draws ``candidate_factor * batch_size`` candidates, scores them with
the current model's logits (no gradient) and keeps ``batch_size`` of them
with :func:`diversity_jax.selection.uds_select` (utility-diversity selection,
``k`` static inside the jitted step). A classifier's logits for one example
are a ``1 x K`` matrix, so the UDS utility (the nuclear norm) is the logits'
L2 norm, and the embedding is the logits vector itself (``K`` is already
low-dimensional; the authors project LM logits down by a random
Johnson-Lindenstrauss map):

.. math::
  s_i = \lVert z_i \rVert_2 + \alpha\,\frac{1}{|\mathcal M|}
  \sum_{m \in \mathcal M} \lVert z_i - m \rVert_2 .
"""

from __future__ import annotations

from typing import Tuple

import jax

from diversity_jax import selection


def init_memory(memory_size: int, num_classes: int) -> selection.UDSMemory:
  """Empty UDS memory of ``memory_size`` logits vectors."""
  return selection.uds_init_memory(memory_size, num_classes)


def select_sub_batch(candidate_logits: jax.Array,
                     memory: selection.UDSMemory, k: int, *, alpha: float
                     ) -> Tuple[jax.Array, selection.UDSMemory]:
  """Positions in the candidate batch of the ``k`` kept examples, new memory.

  Args:
    candidate_logits: ``(C, K)`` logits of the candidates (treated as
      constants).
    memory: the UDS memory of the logits of previously selected examples.
    k: number kept, a static int ``<= C``.
    alpha: weight of the diversity term.

  Returns:
    ``(positions, new_memory)``: ``(k,)`` int32 positions in ``[0, C)``,
    highest score first. A NaN score (diverged model) selects nothing in
    UDS (``-1``); positions are then ``0 .. k-1`` so the step still runs and
    the NaN shows in the loss.
  """
  z = jax.lax.stop_gradient(candidate_logits)
  idx, _, new_memory = selection.uds_select(z[:, None, :], z, memory, k,
                                            alpha=alpha)
  fallback = jax.numpy.arange(k, dtype=idx.dtype)
  return jax.numpy.where(idx >= 0, idx, fallback), new_memory
