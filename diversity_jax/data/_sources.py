"""Random-access domain sources: read a domain per batch instead of all at once.

A *source* is one domain seen as an indexable collection of examples:

* ``len(source)``: number of examples;
* ``source.example_shape``: ``(H, W, C)``;
* ``source.read(indices) -> (x, y)``: the examples at ``indices`` (an int
  array), ``x`` float32 ``[n, H, W, C]`` in ``[0, 1]``, ``y`` int32 ``[n]``;
* ``source.subset(indices)``: the source restricted to ``indices``.

:class:`ArraySource` wraps arrays already in memory; ``data.load('tfds:...')``
returns a dataset whose domains are read lazily from disk when it streams (see
:meth:`Dataset.source <diversity_jax.data.Dataset.source>`).
:class:`~diversity_jax.data.MultiDomainBatches` reads each step's batch from
sources, so streaming keeps batches a pure function of ``(seed, step)``.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from diversity_jax._src import checks

Array = np.ndarray


def _as_indices(indices, n: int, fn: str) -> Array:
  idx = np.asarray(indices)
  checks.check_rank(idx, 1, "indices", fn)
  if idx.size:
    checks.check_integer(idx, "indices", fn)
  if idx.size and (idx.min() < 0 or idx.max() >= n):
    raise IndexError(f"{fn}: `indices` must lie in [0, {n}), got values in "
                     f"[{idx.min()}, {idx.max()}]")
  return idx.astype(np.int64)


class ArraySource:
  """A domain held in memory, as a source (``read`` is plain indexing).

  Args:
    x: examples ``[n, ...]``.
    y: integer labels ``[n]``.

  Example:
    >>> import numpy as np
    >>> from diversity_jax import data
    >>> src = data.ArraySource(np.zeros((5, 2, 2, 1), np.float32), np.arange(5))
    >>> x, y = src.read(np.array([4, 0]))
    >>> len(src), x.shape, y.tolist()
    (5, (2, 2, 2, 1), [4, 0])
  """

  def __init__(self, x, y):
    self.x = np.asarray(x)
    self.y = np.asarray(y)
    if self.x.shape[:1] != self.y.shape[:1] or self.y.ndim != 1:
      raise ValueError(f"ArraySource: `x` {self.x.shape} and `y` "
                       f"{self.y.shape} must hold the same number of examples")
    self.example_shape = tuple(self.x.shape[1:])

  def __len__(self) -> int:
    return int(self.y.shape[0])

  def read(self, indices) -> Tuple[Array, Array]:
    idx = _as_indices(indices, len(self), "ArraySource.read")
    return self.x[idx], self.y[idx]

  def subset(self, indices) -> "ArraySource":
    return ArraySource(*self.read(indices))


class SubsetSource:
  """``base`` restricted to ``indices`` (no copy: reads go through ``base``).

  Args:
    base: a source.
    indices: 1-D int array of positions in ``base``.

  Example:
    >>> import numpy as np
    >>> from diversity_jax import data
    >>> base = data.ArraySource(np.zeros((5, 1)), np.arange(5))
    >>> data.SubsetSource(base, np.array([3, 1])).read(np.array([1]))[1]
    array([1])
  """

  def __init__(self, base, indices):
    self.base = base
    self.indices = _as_indices(indices, len(base), "SubsetSource")
    self.example_shape = tuple(base.example_shape)

  def __len__(self) -> int:
    return int(self.indices.shape[0])

  def read(self, indices) -> Tuple[Array, Array]:
    idx = _as_indices(indices, len(self), "SubsetSource.read")
    return self.base.read(self.indices[idx])

  def subset(self, indices) -> "SubsetSource":
    return SubsetSource(self.base,
                        self.indices[_as_indices(indices, len(self),
                                                 "SubsetSource.subset")])


def is_source(obj) -> bool:
  """Whether ``obj`` follows the source protocol (len, example_shape, read)."""
  return (hasattr(obj, "read") and hasattr(obj, "example_shape")
          and hasattr(obj, "__len__"))
