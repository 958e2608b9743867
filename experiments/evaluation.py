"""Classification eval sets on a device mesh, and accuracy over them.

An eval split is put on the mesh once (zero-padded to whole chunks of
``eval_batch`` examples, a mask marking the real ones), or read chunk by
chunk from a source when the dataset streams. Counts are reduced on device:
a chunk sharded over several processes is never read back whole.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class EvalSet(NamedTuple):
  """An eval split on the mesh: ``(chunks, eval_batch, ...)`` arrays."""
  x: jax.Array
  y: jax.Array
  mask: jax.Array


class StreamedEvalSet(NamedTuple):
  """An eval split read chunk by chunk from a source (streaming datasets)."""
  source: Any
  eval_batch: int
  mesh: Any


def eval_set(part, eval_batch: int, mesh):
  """An ``(x, y)`` split as an :class:`EvalSet`; a source stays streamed."""
  if isinstance(part, tuple):
    return _eval_arrays(*part, eval_batch, mesh)
  return StreamedEvalSet(part, eval_batch, mesh)


def _eval_arrays(x, y, eval_batch: int, mesh) -> EvalSet:
  n = len(y)
  chunks = max(1, -(-n // eval_batch))
  pad = chunks * eval_batch - n
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
  y = np.concatenate([y, np.zeros(pad, y.dtype)])
  shape = lambda a: a.reshape((chunks, eval_batch) + a.shape[1:])
  sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, "data"))
  return EvalSet(*(jax.device_put(shape(a), sharding) for a in (x, y, mask)))


def chunks(s):
  """Yields ``(x, y, mask)`` chunks of ``eval_batch`` examples (zero-padded)."""
  if isinstance(s, EvalSet):
    for i in range(s.x.shape[0]):
      yield s.x[i], s.y[i], s.mask[i]
    return
  n, b = len(s.source), s.eval_batch
  for start in range(0, max(n, 1), b):
    x, y = s.source.read(np.arange(start, min(n, start + b)))
    chunk = _eval_arrays(x, y, b, s.mesh)
    yield chunk.x[0], chunk.y[0], chunk.mask[0]


def count_correct(apply_fn: Callable[[Any, Any], Any]):
  """``(params, x, y, mask) -> (correct, count)`` of ``apply_fn``'s argmax.

  Example:
    >>> fn = jax.jit(count_correct(lambda p, x: model.apply({'params': p}, x)))
  """
  def fn(params, x, y, mask):
    logits = apply_fn(params, x)
    return jnp.sum((jnp.argmax(logits, -1) == y) & mask), jnp.sum(mask)
  return fn


def accuracy(count_fn, params, s) -> float:
  """Accuracy over an eval set, from a jitted :func:`count_correct`."""
  correct, count = 0, 0
  for x, y, mask in chunks(s):
    c, n = count_fn(params, x, y, mask)
    correct, count = correct + int(c), count + int(n)
  return correct / max(count, 1)
