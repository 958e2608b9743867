"""Small numerics helpers shared across the library (one copy of each idea).

* ``promote_to_f32``: bf16/f16 inputs are computed and accumulated in f32.
* ``apply_where``: the per-example ``where=`` convention of every loss (and
  NaN for out-of-range labels, see ``label_range``).
* ``masked_mean``: mean over kept entries; 0 (not NaN) when nothing is kept.
* ``safe_norm``: L2 norm whose gradient is finite (zero) at the origin.
* ``safe_divide``: x / y with 0 where y == 0 and finite gradients.
* ``tree_l2_norm``: global norm of a pytree, scaled so it neither overflows
  nor underflows.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from diversity_jax._src import label_range


def promote_to_f32(*xs):
  """Casts floating arrays narrower than f32 to f32; leaves others alone."""
  out = []
  for x in xs:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
      x = x.astype(jnp.float32)
    out.append(x)
  return out[0] if len(out) == 1 else tuple(out)


def apply_where(loss: jax.Array, where, invalid=None) -> jax.Array:
  """Zeroes the loss (and its gradient) of masked-out examples.

  Uses ``jnp.where`` on the output, which keeps gradients of dropped entries
  exactly zero as long as the loss itself is finite for every input (the
  library never produces a non-finite per-example loss, masked or not).
  ``invalid`` marks kept examples whose output is undefined (an out-of-range
  label from ``label_range.sanitize``, a NaN that a comparison would drop):
  their loss and gradient become NaN.
  """
  if invalid is not None:
    loss = label_range.nan_where_invalid(loss, invalid, where)
  if where is None:
    return loss
  return jnp.where(where, loss, jnp.zeros_like(loss))


def masked_mean(x: jax.Array, where=None, axis=None) -> jax.Array:
  """Mean of ``x`` over ``where``; returns 0 when no entry is kept (or ``x``
  is empty)."""
  if where is None and jnp.size(x) > 0:
    return jnp.mean(x, axis=axis)
  where = jnp.broadcast_to(True if where is None else where, x.shape)
  total = jnp.sum(jnp.where(where, x, 0), axis=axis)
  count = jnp.sum(where, axis=axis)
  return total / jnp.maximum(count, 1).astype(total.dtype)


def safe_norm(x: jax.Array, axis=None, keepdims: bool = False,
              eps: float = 0.0) -> jax.Array:
  """L2 norm with a finite (zero) gradient at ``x == 0``.

  Returns ``sqrt(sum(x**2) + eps)`` where the sum is positive, else
  ``sqrt(eps)`` (NaN for a NaN sum), and routes the gradient through a safe
  branch so ``grad`` never sees 0/0.
  """
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  positive = sq > 0
  safe_sq = jnp.where(positive, sq, 1.0)
  # + 0 * sq: exactly sqrt(eps) at sq == 0, NaN when sq is NaN (NaN in,
  # NaN out: a NaN row must not pass for a zero row).
  return jnp.where(positive, jnp.sqrt(safe_sq + eps), jnp.sqrt(eps) + 0.0 * sq)


def safe_divide(x, y):
  """``x / y`` with 0 wherever ``y == 0`` (NaN if ``x`` is NaN or inf there);
  gradients stay finite."""
  nonzero = y != 0
  safe_y = jnp.where(nonzero, y, 1)
  quotient = x / safe_y
  return jnp.where(nonzero, quotient, 0.0 * quotient)


def tree_l2_norm(tree) -> jax.Array:
  """Global L2 norm of a pytree in f32, free of overflow and underflow.

  ``m * sqrt(sum((x / m)^2))`` with ``m = max |x|`` (held constant for the
  gradient, which is still exactly ``x / ||x||`` since the norm is
  homogeneous): bf16/f32 leaves anywhere in f32's normal range (about
  1e-38 to 3e38) keep their norm where the plain sum of squares gives
  ``inf`` (above ~1e19) or 0 (below ~1e-19). The gradient is 0 (not NaN)
  at the origin; a NaN leaf gives NaN, an infinite one ``inf``.
  """
  leaves = [promote_to_f32(l).astype(jnp.float32)
            for l in jax.tree_util.tree_leaves(tree) if jnp.size(l)]
  if not leaves:
    return jnp.zeros((), jnp.float32)
  scale = jax.lax.stop_gradient(
      functools.reduce(jnp.maximum, [jnp.max(jnp.abs(l)) for l in leaves]))
  scale = jnp.where((scale > 0) & jnp.isfinite(scale), scale, 1.0)
  sq = sum(jnp.sum(jnp.square(l / scale)) for l in leaves)
  zero = sq == 0
  return jnp.where(zero, 0.0, scale * jnp.sqrt(jnp.where(zero, 1.0, sq)))
