"""Out-of-range integer labels under ``jax.jit``: one behaviour everywhere.

Concrete labels (eager calls, closed-over constants) outside ``[0, K)`` raise
at trace time through ``checks.check_label_range``. Traced labels have no
value to check without a host sync, so every function taking class labels
instead makes an out-of-range label *visible*: that example's loss is NaN
and so is the gradient flowing into its inputs; the other examples are
computed as usual (their values and gradients stay finite). A label equal to
an explicit ``ignore_index`` (where a function has one) is not out of range.
Examples dropped by ``where=`` are not marked, so padded rows may carry any
label.

Usage, two lines per function::

  labels, invalid = label_range.sanitize(labels, num_classes)
  ...                                   # compute with in-range `labels`
  return numerics.apply_where(loss, where, invalid)

(``apply_where`` calls ``nan_where_invalid``; batch-level losses call it
directly on their scalar.)
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp


def sanitize(labels: jax.Array, num_classes: int, *,
             ignore_index: Optional[int] = None):
  """Returns ``(safe_labels, invalid)``.

  ``invalid`` is True where a label lies outside ``[0, num_classes)`` (and is
  not ``ignore_index``); ``safe_labels`` replaces those labels by class 0 so
  that gathers, one-hots and comparisons downstream stay in bounds (negative
  labels would otherwise wrap to the last class).
  """
  labels = jnp.asarray(labels)
  invalid = (labels < 0) | (labels >= num_classes)
  if ignore_index is not None:
    invalid = invalid & (labels != ignore_index)
  return jnp.where(invalid, jnp.zeros_like(labels), labels), invalid


def nan_where_invalid(values: jax.Array, invalid: jax.Array,
                      where: Optional[jax.Array] = None) -> jax.Array:
  """``values`` with NaN (value and gradient) at the invalid, kept examples.

  Multiplies by 1 or NaN, so the cotangent of an invalid example is NaN and
  its inputs receive a NaN gradient, while valid examples are unchanged
  bit for bit. ``where`` (the per-example mask of the losses) exempts dropped
  examples. A scalar ``values`` (a batch-level loss) becomes NaN when any
  kept example is invalid.
  """
  if where is not None:
    invalid = invalid & jnp.broadcast_to(where, jnp.shape(invalid))
  if jnp.ndim(values) == 0 and jnp.ndim(invalid) > 0:
    invalid = jnp.any(invalid)
  factor = jnp.where(invalid, jnp.nan, 1.0).astype(jnp.result_type(values))
  return values * factor
