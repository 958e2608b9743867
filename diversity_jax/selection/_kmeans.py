"""k-means on device: k-means++ seeding and Lloyd steps over blocks of items.

Distances are computed ``block_size`` items at a time inside a ``lax.scan``,
so the largest temporary is ``block_size x k`` (plus an ``(n,)`` vector):
``n = 10^6`` items of dimension 256 in f32 (1 GiB) cluster in about 1 GiB of
extra memory at most, never an ``n x k`` matrix.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.selection import _common


class KMeansResult(NamedTuple):
  """Output of :func:`kmeans`."""

  centers: jax.Array  # (k, d)
  labels: jax.Array  # (n,) int32, index of each item's nearest center
  inertia: jax.Array  # scalar, sum of squared distances to the nearest center


def _assign_blocks(x, centers, block_size: int):
  """Nearest center of every item, by blocks: labels, squared distances and
  the per-cluster sums and counts."""
  n, d = x.shape
  k = centers.shape[0]
  block = min(block_size, n)
  num_blocks = -(-n // block)
  csq = jnp.sum(jnp.square(centers), axis=-1)

  def body(carry, i):
    labels, dists, sums, counts = carry
    # the last block is clamped inside the array; rows that an earlier block
    # covered are not counted twice.
    start = jnp.minimum(i * block, n - block)
    xb = jax.lax.dynamic_slice_in_dim(x, start, block)
    rows = start + jnp.arange(block)
    fresh = rows >= i * block
    xsq = jnp.sum(jnp.square(xb), axis=-1)
    dist = jnp.maximum(xsq[:, None] - 2.0 * xb @ centers.T + csq[None], 0.0)
    # a NaN row has NaN distance: keep it NaN (argmin sends it to the NaN
    # entry's cluster, whose center becomes NaN)
    lb = jnp.argmin(dist, axis=-1).astype(jnp.int32)
    db = jnp.min(dist, axis=-1)
    seg = jnp.where(fresh, lb, k)  # k: a dropped segment
    sums = sums + jax.ops.segment_sum(xb, seg, k)
    counts = counts + jax.ops.segment_sum(jnp.ones((block,), x.dtype), seg, k)
    labels = jax.lax.dynamic_update_slice_in_dim(labels, lb, start, 0)
    dists = jax.lax.dynamic_update_slice_in_dim(dists, db, start, 0)
    return (labels, dists, sums, counts), None

  init = (jnp.zeros((n,), jnp.int32), jnp.zeros((n,), x.dtype),
          jnp.zeros((k, d), x.dtype), jnp.zeros((k,), x.dtype))
  (labels, dists, sums, counts), _ = jax.lax.scan(
      body, init, jnp.arange(num_blocks))
  return labels, dists, sums, counts


def _check_block_size(block_size, fn: str) -> int:
  block_size = _common.check_k(block_size, 2**62, fn, "block_size")
  if block_size < 1:
    checks._fail(fn, f"`block_size` must be >= 1, got {block_size}")
  return block_size


def kmeans(features: jax.Array, init_centers: jax.Array, *, num_steps: int,
           block_size: int = 4096) -> KMeansResult:
  r"""k-means by a fixed number of Lloyd steps from given initial centers.

  Each step assigns every item to its nearest center and moves each center to
  the mean of its items (a center with no item stays where it is):

  .. math::

    a_i = \operatorname*{arg\,min}_j \lVert x_i - \mu_j \rVert_2^2,\qquad
    \mu_j \leftarrow \frac{\sum_{i: a_i = j} x_i}{|\{i: a_i = j\}|},

  and the result reports the final assignment and the inertia
  :math:`\sum_i \min_j \lVert x_i - \mu_j \rVert_2^2` for the final centers.
  Distances are computed ``block_size`` items at a time
  (:math:`\lVert x\rVert^2 - 2 x^\top \mu + \lVert \mu \rVert^2`), so memory is
  ``O(n + block_size * k + k d)`` beyond the data. Seed with
  :func:`kmeans_plus_plus_init`.

  Args:
    features: ``(n, d)`` floating items (bf16 computed in f32), ``n >= 1``.
    init_centers: ``(k, d)`` initial centers.
    num_steps: number of Lloyd steps (static int >= 0).
    block_size: items per distance block (static int >= 1).

  Returns:
    :class:`KMeansResult` ``(centers, labels, inertia)``; a NaN or inf item
    makes the inertia (and its cluster's center) NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.selection import kmeans
    >>> x = jnp.array([[0., 0.], [0., 1.], [9., 9.], [9., 10.]])
    >>> out = kmeans(x, x[:2], num_steps=3, block_size=3)
    >>> out.labels.tolist(), round(float(out.inertia), 4)
    ([0, 0, 1, 1], 1.0)

  References:
    Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory
    28(2), 1982; checked against scikit-learn's ``KMeans(algorithm='lloyd')``
    (same inertia from the same initial centers). Used for
    diversity-centric data selection in Yu et al., "Diversify and Conquer:
    Diversity-Centric Data Selection with Iterative Refinement", ICLR 2025
    (arXiv 2409.11378), Sec. 3.
  """
  fn = "kmeans"
  _common.check_features(features, fn)
  _common.check_features(init_centers, fn, "init_centers")
  n, d = features.shape
  if n == 0:
    checks._fail(fn, "`features` must hold at least one item")
  checks.check_shape(init_centers, (None, d), "init_centers", fn)
  if init_centers.shape[0] == 0:
    checks._fail(fn, "`init_centers` must hold at least one center")
  num_steps = _common.check_k(num_steps, 2**62, fn, "num_steps")
  block_size = _check_block_size(block_size, fn)
  x = numerics.promote_to_f32(jnp.asarray(features))
  centers = numerics.promote_to_f32(jnp.asarray(init_centers)).astype(x.dtype)

  def step(_, centers):
    _, _, sums, counts = _assign_blocks(x, centers, block_size)
    mean = sums / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, mean, centers)

  centers = jax.lax.fori_loop(0, num_steps, step, centers)
  labels, dists, _, _ = _assign_blocks(x, centers, block_size)
  return KMeansResult(centers, labels, jnp.sum(dists))


def kmeans_plus_plus_init(key: jax.Array, features: jax.Array, k: int
                          ) -> jax.Array:
  r"""k-means++ seeding: ``k`` initial centers drawn from the items.

  The first center is uniform over the items; each next one is item ``i``
  with probability

  .. math::

    P(i) = \frac{D(x_i)^2}{\sum_j D(x_j)^2},\qquad
    D(x)^2 = \min_{c \in C} \lVert x - c \rVert_2^2,

  (uniform over the items when every :math:`D^2` is 0). One running
  ``(n,)`` vector of :math:`D^2`, updated with one matrix-vector product per
  center: ``O(n k d)`` time, ``O(n)`` memory. Deterministic given ``key``.

  Args:
    key: a ``jax.random`` key.
    features: ``(n, d)`` floating items, ``n >= 1``.
    k: number of centers, a static int in ``[1, n]``.

  Returns:
    ``(k, d)`` f32 centers (rows of ``features``).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.selection import kmeans_plus_plus_init
    >>> x = jnp.array([[0., 0.], [0., 0.], [5., 5.]])
    >>> c = kmeans_plus_plus_init(jax.random.key(0), x, 2)
    >>> sorted(c[:, 0].tolist())
    [0.0, 5.0]

  References:
    Arthur & Vassilvitskii, "k-means++: The Advantages of Careful Seeding",
    SODA 2007, Sec. 2.2 (the D^2 weighting).
  """
  fn = "kmeans_plus_plus_init"
  _common.check_features(features, fn)
  n = features.shape[0]
  k = _common.check_k(k, n, fn)
  if k == 0:
    checks._fail(fn, "`k` must be >= 1")
  x = numerics.promote_to_f32(jnp.asarray(features))
  xsq = jnp.sum(jnp.square(x), axis=-1)
  keys = jax.random.split(key, k)

  def sq_dist_to(c):
    return jnp.maximum(xsq - 2.0 * (x @ c) + jnp.sum(jnp.square(c)), 0.0)

  first = jax.random.randint(keys[0], (), 0, n)
  d2 = sq_dist_to(x[first])
  idx = jnp.zeros((k,), jnp.int32).at[0].set(first)

  def step(t, carry):
    d2, idx = carry
    positive = jnp.sum(d2) > 0
    logits = jnp.where(positive, jnp.log(jnp.where(d2 > 0, d2, 0.0)), 0.0)
    i = jax.random.categorical(keys[t], logits).astype(jnp.int32)
    return jnp.minimum(d2, sq_dist_to(x[i])), idx.at[t].set(i)

  _, idx = jax.lax.fori_loop(1, k, step, (d2, idx))
  return x[idx]
