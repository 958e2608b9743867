"""Finite-dimensional feature maps of the Gaussian (RBF) kernel.

``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` is approximated by an inner
product ``phi(x) . phi(y)`` of ``d'``-dimensional features, so that a kernel
spectrum over ``n`` items can be read from the ``d' x d'`` feature
covariance instead of the ``n x n`` kernel matrix:

* random Fourier features (Rahimi & Recht 2007):
  ``phi(x) = [cos(W x), sin(W x)] / sqrt(D)`` with ``W ~ N(0, I / sigma^2)``
  (``D`` frequencies, ``d' = 2 D``); ``phi(x) . phi(x) = 1`` exactly, and
  ``phi(x) . phi(y)`` is an unbiased estimate of ``k(x, y)``;
* Nystrom features (Williams & Seeger 2001): with ``m`` landmarks ``z_j``,
  ``phi(x) = K_mm^{-1/2} k_m(x)`` (pseudo-inverse square root), so that
  ``phi(x) . phi(y) = k_m(x)^T K_mm^+ k_m(y)``, exact on the landmarks.

Also the blocked weighted covariance ``sum_i p_i phi(x_i) phi(x_i)^T``
(``O(n d'^2)`` time, ``O(block d' + d'^2)`` memory besides the inputs), or
the ``n x n`` Gram matrix of the features when that one is smaller.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from diversity_jax.diversity import _vendi


def squared_distances(x: jax.Array, y: jax.Array) -> jax.Array:
  """``(a, b)`` squared Euclidean distances, clamped at 0 (round-off)."""
  sq = (jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :]
        - 2.0 * x @ y.T)
  return jnp.maximum(sq, 0.0)


def rbf_kernel(x: jax.Array, y: jax.Array, bandwidth) -> jax.Array:
  """``exp(-||x_i - y_j||^2 / (2 sigma^2))`` for rows of ``x`` and ``y``."""
  return jnp.exp(-squared_distances(x, y) / (2.0 * bandwidth ** 2))


def random_fourier_map(key: jax.Array, dim: int, num_features: int,
                       bandwidth) -> Callable[[jax.Array], jax.Array]:
  """Random Fourier feature map ``(b, dim) -> (b, 2 num_features)``."""
  w = jax.random.normal(key, (dim, num_features), jnp.float32) / bandwidth

  def phi(x):
    proj = x @ w
    return jnp.concatenate([jnp.cos(proj), jnp.sin(proj)], -1) / jnp.sqrt(
        jnp.float32(num_features))

  return phi


def nystrom_map(landmarks: jax.Array,
                bandwidth) -> Callable[[jax.Array], jax.Array]:
  """Nystrom feature map ``(b, dim) -> (b, m)`` on ``m`` landmarks.

  ``K_mm^{-1/2}`` keeps the eigenvalues above the numerical-rank tolerance
  ``m * eps * max(lambda)`` (the rest are dropped: duplicated landmarks are
  harmless).
  """
  k_mm = rbf_kernel(landmarks, landmarks, bandwidth)
  lam, u = jnp.linalg.eigh(0.5 * (k_mm + k_mm.T))
  tol = landmarks.shape[0] * jnp.finfo(lam.dtype).eps * jnp.max(lam)
  keep = lam > tol
  inv_sqrt = jnp.where(keep, 1.0 / jnp.sqrt(jnp.where(keep, lam, 1.0)), 0.0)
  proj = u * inv_sqrt[None, :]                      # (m, m)

  def phi(x):
    return rbf_kernel(x, landmarks, bandwidth) @ proj

  return phi


def spectrum_matrix(phi: Callable[[jax.Array], jax.Array], x: jax.Array,
                    root_p: jax.Array, block_size: int,
                    normalize: bool = False) -> jax.Array:
  """A matrix whose non-zero eigenvalues are those of ``diag(sqrt p) Phi
  Phi^T diag(sqrt p)``: the smaller of that ``n x n`` Gram matrix and the
  ``d' x d'`` covariance ``sum_i p_i phi(x_i) phi(x_i)^T``, the latter
  accumulated over row blocks of ``x``.

  Rows with ``p_i = 0`` are zeroed before the map (a NaN there reaches
  neither the value nor the gradient). ``normalize`` rescales each
  ``phi(x_i)`` to unit norm (a unit-diagonal approximate kernel).
  """
  n, d = x.shape
  kept = root_p > 0
  x = jnp.where(kept[:, None], x, 0.0)

  def weighted(xb, wb):
    f = phi(xb)
    if normalize:
      f = _vendi._normalize_rows(f)
    return jnp.where(wb[:, None] > 0, f, 0.0) * wb[:, None]

  dim = jax.eval_shape(phi, jax.ShapeDtypeStruct((1, d), x.dtype)).shape[-1]
  if n <= dim and n <= block_size:
    f = weighted(x, root_p)
    return f @ f.T
  b = max(1, min(block_size, n))
  pad = (-n) % b
  xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, b, d)
  ws = jnp.pad(root_p, (0, pad)).reshape(-1, b)

  def body(cov, block):
    f = weighted(*block)
    return cov + f.T @ f, None

  cov, _ = jax.lax.scan(body, jnp.zeros((dim, dim), x.dtype), (xs, ws))
  return cov
