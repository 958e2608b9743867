r"""Synthetic label noise on the training labels: symmetric and pair-flip.

Both corrupt exactly ``round(rate * N)`` training examples, chosen uniformly
without replacement (as the SCE authors' ``get_data`` flips a fixed count),
so the realized noise rate is the requested one up to ``1 / N``:

* symmetric: a corrupted label moves to one of the other ``K - 1`` classes
  uniformly, :math:`T = (1 - \eta) I + \frac{\eta}{K - 1}(\mathbf 1\mathbf
  1^\top - I)` (Zhang & Sabuncu 2018, GCE; Wang et al. 2019, SCE);
* pair-flip: a corrupted label of class :math:`c` becomes :math:`c + 1 \bmod
  K`, :math:`T = (1 - \eta) I + \eta P` with :math:`P` the cyclic shift (Han et
  al. 2018, Co-teaching's "pair flipping"; the SCE paper's asymmetric noise
  maps hand-picked similar classes instead). Above 50% the wrong class is the
  majority label of every class, so no loss can recover the clean labels.

The rate and the kind are traced values, so one compiled program corrupts
labels for a whole grid of (seed, kind, rate) under ``jax.vmap``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("symmetric", "pair")


def corrupt_labels(key: jax.Array, labels: jax.Array, rate, pair_flip, *,
                   num_classes: int) -> jax.Array:
  """Noisy copy of ``labels``: ``round(rate * N)`` examples relabelled.

  Args:
    key: PRNG key (which examples, and the symmetric targets).
    labels: ``(N,)`` integer clean labels in ``[0, num_classes)``.
    rate: noise rate in ``[0, 1]`` (may be traced).
    pair_flip: bool (may be traced): pair-flip ``c -> c + 1 mod K`` if true,
      symmetric (uniform over the other classes) otherwise.
    num_classes: ``K >= 2`` (static).

  Returns:
    ``(N,)`` noisy labels, the dtype of ``labels``.
  """
  n = labels.shape[0]
  k_pick, k_class = jax.random.split(key)
  rank = jnp.argsort(jax.random.permutation(k_pick, n))  # a random ranking
  flip = rank < jnp.round(jnp.asarray(rate, jnp.float32) * n)
  shift_sym = jax.random.randint(k_class, (n,), 1, num_classes)
  shift = jnp.where(pair_flip, 1, shift_sym)
  noisy = (labels + shift) % num_classes
  return jnp.where(flip, noisy, labels).astype(labels.dtype)


def transition_matrix(clean: np.ndarray, noisy: np.ndarray,
                      num_classes: int) -> np.ndarray:
  """Empirical ``T[i, j] = P(noisy = j | clean = i)`` (rows of absent classes 0)."""
  counts = np.zeros((num_classes, num_classes))
  np.add.at(counts, (np.asarray(clean), np.asarray(noisy)), 1.0)
  totals = counts.sum(1, keepdims=True)
  return np.divide(counts, totals, out=np.zeros_like(counts),
                   where=totals > 0)
