"""Multi-domain input pipeline: DomainBed holdout split, deterministic batches, sharding.

Every batch is a pure function of ``(seed, step)``: nothing is carried between
steps, so a run killed at step ``k`` and restarted with ``start_step=k`` sees
exactly the batches of an uninterrupted run (bit-identical resume).
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence, Tuple

import numpy as np

from diversity_jax._src import checks
from diversity_jax.data import _sources

Array = np.ndarray
SAMPLING = ("replacement", "epoch")


def _check_xy(x, y, fn: str, name: str = "x") -> Tuple[Array, Array]:
  x = np.asarray(x)
  y = np.asarray(y)
  checks.check_min_rank(x, 1, name, fn)
  checks.check_rank(y, 1, "y", fn)
  checks.check_integer(y, "y", fn)
  if x.shape[0] != y.shape[0]:
    raise ValueError(f"{fn}: `{name}` and `y` must have the same number of "
                     f"examples, got {x.shape[0]} and {y.shape[0]}")
  return x, y


def split_holdout(x, y, holdout_fraction: float = 0.2,
                  seed: int = 0) -> Tuple[Tuple[Array, Array], Tuple[Array, Array]]:
  """Splits one domain into (in, out) parts exactly as DomainBed does.

  DomainBed shuffles the indices ``0..n-1`` with ``np.random.RandomState(seed)``
  and puts the first ``n_out = int(n * holdout_fraction)`` shuffled examples in
  the *out* split (validation / test-domain evaluation) and the rest in the *in*
  split (training)::

      keys = RandomState(seed).shuffle(arange(n));  out = keys[:n_out];  in = keys[n_out:]

  Args:
    x: examples, ``[n, ...]``.
    y: integer labels, ``[n]``.
    holdout_fraction: fraction of examples held out, in ``[0, 1)``.
    seed: integer seed (DomainBed uses ``seed_hash(trial_seed, env_index)``).

  Returns:
    ``((x_in, y_in), (x_out, y_out))``: the training part first, then the
    held-out part. Deterministic in ``seed``; the parts are disjoint and cover
    all examples.

  Example:
    >>> import numpy as np
    >>> from diversity_jax import data
    >>> (xi, yi), (xo, yo) = data.split_holdout(np.zeros((10, 2)), np.arange(10))
    >>> len(yi), len(yo)
    (8, 2)

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021,
    Sec. 4 (training-domain validation); ``domainbed/lib/misc.py::split_dataset``
    and ``domainbed/scripts/train.py`` in facebookresearch/DomainBed.
  """
  fn = "split_holdout"
  x, y = _check_xy(x, y, fn)
  in_idx, out_idx = _holdout_indices(x.shape[0], holdout_fraction, seed, fn)
  return (x[in_idx], y[in_idx]), (x[out_idx], y[out_idx])


def _holdout_indices(n, holdout_fraction, seed, fn):
  checks.check_scalar_in_range(holdout_fraction, "holdout_fraction", fn,
                               low=0.0, high=1.0, high_inclusive=False)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
    raise TypeError(f"{fn}: `seed` must be an int, got {seed!r}")
  n_out = int(n * holdout_fraction)
  keys = list(range(n))
  np.random.RandomState(int(seed) % (2**32)).shuffle(keys)
  keys = np.asarray(keys, dtype=np.int64)
  return keys[n_out:], keys[:n_out]


def holdout_indices(n: int, holdout_fraction: float = 0.2,
                    seed: int = 0) -> Tuple[Array, Array]:
  """The positions :func:`split_holdout` puts in the (in, out) parts.

  For a domain read lazily (a streamed source) the split is made on indices:
  ``source.subset(in_idx)``, ``source.subset(out_idx)`` hold exactly the
  examples of ``split_holdout(x, y, holdout_fraction, seed)``.

  Args:
    n: number of examples of the domain.
    holdout_fraction: fraction held out, in ``[0, 1)``.
    seed: integer seed.

  Returns:
    ``(in_idx, out_idx)``: int64 index arrays, disjoint, covering ``0..n-1``.

  Example:
    >>> from diversity_jax import data
    >>> in_idx, out_idx = data.holdout_indices(10)
    >>> len(in_idx), len(out_idx)
    (8, 2)

  References:
    ``domainbed/lib/misc.py::split_dataset`` in facebookresearch/DomainBed.
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
    raise ValueError(f"holdout_indices: `n` must be an int >= 0, got {n!r}")
  return _holdout_indices(int(n), holdout_fraction, seed, "holdout_indices")


class MultiDomainBatches:
  """One minibatch per training domain per step, a pure function of ``(seed, step)``.

  ``batch(step)`` returns ``{'x': (E, B, ...), 'y': (E, B), 'index': (E, B)}``
  with ``E`` domains and ``B = batch_size`` examples per domain. ``index`` holds
  global example ids: domain ``e``'s example ``i`` has id
  ``sum(n_0..n_{e-1}) + i`` (domains in the order given).

  Sampling (per domain, independent random streams keyed by
  ``(seed, domain, step)`` or ``(seed, domain, epoch)``):

  * ``'replacement'`` (default, what DomainBed's ``InfiniteDataLoader`` does: a
    ``RandomSampler(replacement=True)`` with ``drop_last=True``): each step draws
    ``B`` indices uniformly with replacement.
  * ``'epoch'``: each domain is reshuffled once per epoch and cut into
    ``n // B`` full batches (the last partial batch is dropped); requires
    ``B <= n`` for every domain.

  Args:
    domains: sequence of ``(x, y)`` pairs, one per training domain, with the same
      per-example shape ``x.shape[1:]``; an entry may also be a source (see
      :class:`ArraySource`; e.g. ``Dataset.source(domain)`` of a streamed TFDS
      dataset), read per batch: the indices are the same as for its arrays.
    batch_size: examples per domain per step, ``>= 1``.
    seed: integer seed.
    start_step: first step yielded when the object is iterated.
    sampling: ``'replacement'`` or ``'epoch'``.

  Example:
    >>> import numpy as np
    >>> from diversity_jax import data
    >>> doms = [(np.zeros((5, 2, 2, 1), np.float32), np.arange(5)),
    ...         (np.ones((7, 2, 2, 1), np.float32), np.arange(7))]
    >>> it = data.MultiDomainBatches(doms, batch_size=3, seed=0)
    >>> it.batch(10)['x'].shape
    (2, 3, 2, 2, 1)

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021,
    Sec. 4 and Appendix; ``domainbed/lib/fast_data_loader.py::InfiniteDataLoader``
    in facebookresearch/DomainBed.
  """

  def __init__(self, domains: Sequence[Tuple[Array, Array]], batch_size: int,
               seed: int = 0, start_step: int = 0, *,
               sampling: str = "replacement"):
    fn = "MultiDomainBatches"
    if isinstance(domains, Mapping):
      raise TypeError(f"{fn}: `domains` must be a sequence of (x, y) pairs, got "
                      "a mapping; pass list(d.values())")
    domains = list(domains)
    if not domains:
      raise ValueError(f"{fn}: `domains` must hold at least one (x, y) pair")
    for name, value, low in (("batch_size", batch_size, 1), ("seed", seed, 0),
                             ("start_step", start_step, 0)):
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: `{name}` must be an int, got {value!r}")
      if value < low:
        raise ValueError(f"{fn}: `{name}` must be >= {low}, got {value}")
    checks.check_choice(sampling, SAMPLING, "sampling", fn)
    sources = []
    for e, pair in enumerate(domains):
      if _sources.is_source(pair):
        src = pair
      elif not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{fn}: `domains[{e}]` must be an (x, y) pair or a "
                        "source")
      else:
        x, y = _check_xy(pair[0], pair[1], fn, name=f"domains[{e}][0]")
        src = _sources.ArraySource(x, y.astype(np.int32))
      n, shape = len(src), tuple(src.example_shape)
      if n == 0:
        raise ValueError(f"{fn}: `domains[{e}]` is empty; every training domain "
                         "needs at least one example")
      if sources and shape != tuple(sources[0].example_shape):
        raise ValueError(f"{fn}: `domains[{e}][0]` has example shape "
                         f"{shape}, but domains[0] has "
                         f"{tuple(sources[0].example_shape)}")
      if sampling == "epoch" and batch_size > n:
        raise ValueError(f"{fn}: `batch_size`={batch_size} exceeds the "
                         f"{n} examples of domains[{e}]; use "
                         "sampling='replacement' or a smaller batch")
      sources.append(src)
    self._sources = sources
    self.sizes = tuple(len(src) for src in sources)
    self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.sizes[:-1]))
    self.batch_size = int(batch_size)
    self.seed = int(seed)
    self.start_step = int(start_step)
    self.sampling = sampling
    self.num_domains = len(sources)

  def _indices(self, e: int, step: int) -> Array:
    n, b = self.sizes[e], self.batch_size
    if self.sampling == "replacement":
      rng = np.random.default_rng([self.seed, e, step])
      return rng.integers(0, n, size=b)
    per_epoch = n // b
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([self.seed, e, epoch, 1]).permutation(n)
    return perm[pos * b:(pos + 1) * b]

  def batch(self, step: int) -> dict:
    """The batch of ``step`` (an int ``>= 0``); the same every call."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
      raise ValueError(f"MultiDomainBatches.batch: `step` must be an int >= 0, "
                       f"got {step!r}")
    idx = [self._indices(e, int(step)) for e in range(self.num_domains)]
    parts = [src.read(i) for src, i in zip(self._sources, idx)]
    return {
        "x": np.stack([x for x, _ in parts]),
        "y": np.stack([np.asarray(y, np.int32) for _, y in parts]),
        "index": np.stack([o + i for o, i in zip(self.offsets, idx)]).astype(np.int32),
    }

  def __iter__(self) -> Iterator[dict]:
    step = self.start_step
    while True:
      yield self.batch(step)
      step += 1


def shard_batch(batch, mesh, axis: str = "data"):
  """Places a batch on ``mesh``, split over the per-domain batch axis (axis 1).

  Every leaf of ``batch`` (``x``: ``(E, B, ...)``, ``y`` and ``index``:
  ``(E, B)``) gets ``NamedSharding(mesh, P(None, axis))``. Each process builds
  its addressable shards from the full batch (which every process can compute,
  since batches are a pure function of ``(seed, step)``), so the same call works
  on one device, many host devices, and multi-host meshes.

  Args:
    batch: pytree of arrays with the batch on axis 1 (as from
      :meth:`MultiDomainBatches.batch`).
    mesh: a ``jax.sharding.Mesh``.
    axis: mesh axis name to shard the batch over; ``B`` must be divisible by
      its size.

  Returns:
    The same pytree of globally sharded ``jax.Array`` s.

  Example:
    >>> import jax, numpy as np
    >>> from diversity_jax import data
    >>> mesh = jax.make_mesh((jax.device_count(),), ('data',))
    >>> b = {'y': np.zeros((2, 8 * jax.device_count()), np.int32)}
    >>> data.shard_batch(b, mesh)['y'].shape[1] == 8 * jax.device_count()
    True
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  fn = "shard_batch"
  if axis not in mesh.axis_names:
    raise ValueError(f"{fn}: `axis` {axis!r} is not a mesh axis; mesh axes: "
                     f"{list(mesh.axis_names)}")
  size = mesh.shape[axis]
  sharding = NamedSharding(mesh, PartitionSpec(None, axis))

  def put(path, leaf):
    leaf = np.asarray(leaf)
    name = jax.tree_util.keystr(path) or "batch"
    if leaf.ndim < 2:
      raise ValueError(f"{fn}: `batch{name}` must have rank >= 2 (domain, batch, "
                       f"...), got shape {leaf.shape}")
    if leaf.shape[1] % size:
      raise ValueError(f"{fn}: the batch size {leaf.shape[1]} of `batch{name}` "
                       f"must be divisible by the {size} devices of mesh axis "
                       f"{axis!r}")
    return jax.make_array_from_callback(leaf.shape, sharding,
                                        lambda index: leaf[index])

  return jax.tree_util.tree_map_with_path(put, batch)
