"""Trace-time input validation shared by every public function.

Every check runs on static information (shapes, dtypes, Python hyperparameters)
so it fires once at trace time under ``jax.jit`` and costs nothing at run time.
Each error names the offending argument, so a user sees e.g.
``ValueError: comp_sum: `labels` must have shape (8,), got (8, 3)``.

Value checks on array *contents* (for example out-of-range labels) only run when
the array is concrete (not a tracer); inside ``jit`` they are skipped, because a
host sync inside a step is never acceptable (traced out-of-range labels give
NaN instead, see ``label_range``).
"""

from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _fail(fn: str, message: str, error=ValueError):
  raise error(f"{fn}: {message}")


def is_concrete(x: Any) -> bool:
  """True when ``x`` holds values (not a tracer), so content checks may run."""
  return not isinstance(x, jax.core.Tracer)


def check_floating(x, name: str, fn: str) -> None:
  """Raises TypeError unless ``x`` has a floating dtype."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.floating):
    _fail(fn, f"`{name}` must have a floating dtype, got {dtype}", TypeError)


def check_integer(x, name: str, fn: str) -> None:
  """Raises TypeError unless ``x`` has an integer dtype."""
  dtype = jnp.result_type(x)
  if not jnp.issubdtype(dtype, jnp.integer):
    _fail(fn, f"`{name}` must have an integer dtype, got {dtype}", TypeError)


def check_rank(x, rank, name: str, fn: str) -> None:
  """Raises ValueError unless ``ndim(x)`` is ``rank`` (an int or a set of ints)."""
  ranks = (rank,) if isinstance(rank, int) else tuple(rank)
  if jnp.ndim(x) not in ranks:
    want = ranks[0] if len(ranks) == 1 else f"one of {ranks}"
    _fail(fn, f"`{name}` must have rank {want}, got shape {jnp.shape(x)}")


def check_min_rank(x, rank: int, name: str, fn: str) -> None:
  if jnp.ndim(x) < rank:
    _fail(fn, f"`{name}` must have rank >= {rank}, got shape {jnp.shape(x)}")


def check_shape(x, shape: Sequence[int], name: str, fn: str) -> None:
  """Raises ValueError unless ``x.shape == shape`` (``None`` entries are free)."""
  got = tuple(jnp.shape(x))
  want = tuple(shape)
  if len(got) != len(want) or any(
      w is not None and g != w for g, w in zip(got, want)):
    _fail(fn, f"`{name}` must have shape {want}, got {got}")


def check_same_shape(a, b, name_a: str, name_b: str, fn: str) -> None:
  if jnp.shape(a) != jnp.shape(b):
    _fail(fn, f"`{name_a}` and `{name_b}` must have the same shape, got "
          f"{jnp.shape(a)} and {jnp.shape(b)}")


def check_has_classes(x, name: str, fn: str) -> None:
  """Raises ValueError when the class (last) axis of ``x`` is empty."""
  if jnp.shape(x)[-1] < 1:
    _fail(fn, f"`{name}` must have at least one class (last axis), got shape "
          f"{jnp.shape(x)}")


def check_label_range(labels, num_classes: int, fn: str,
                      name: str = "labels",
                      ignore_index: Optional[int] = None) -> None:
  """Raises ValueError for labels outside [0, num_classes) when concrete.

  Traced labels are not checked here: see ``label_range`` for their
  behaviour (NaN for the examples with an out-of-range label).
  """
  if not is_concrete(labels):
    return
  values = np.asarray(labels)
  if ignore_index is not None:
    values = values[values != ignore_index]
  if values.size and (values.min() < 0 or values.max() >= num_classes):
    _fail(fn, f"`{name}` must lie in [0, {num_classes}), got values in "
          f"[{values.min()}, {values.max()}]")


def check_logits_and_labels(logits, labels, fn: str, *,
                            logits_name: str = "logits",
                            labels_name: str = "labels") -> None:
  """Checks ``logits`` (..., K) floating and integer ``labels`` of shape (...)."""
  check_floating(logits, logits_name, fn)
  check_min_rank(logits, 1, logits_name, fn)
  check_has_classes(logits, logits_name, fn)
  check_integer(labels, labels_name, fn)
  check_shape(labels, jnp.shape(logits)[:-1], labels_name, fn)
  check_label_range(labels, jnp.shape(logits)[-1], fn, labels_name)


def check_where(where, shape: Sequence[int], fn: str, name: str = "where"):
  """Checks an optional boolean per-example mask broadcastable to ``shape``."""
  if where is None:
    return
  if jnp.result_type(where) != jnp.bool_:
    _fail(fn, f"`{name}` must be a boolean mask, got {jnp.result_type(where)}",
          TypeError)
  try:
    out = jnp.broadcast_shapes(jnp.shape(where), tuple(shape))
  except ValueError:
    out = None
  if out != tuple(shape):
    _fail(fn, f"`{name}` of shape {jnp.shape(where)} does not broadcast to "
          f"{tuple(shape)}")


def _is_number(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_scalar_in_range(value, name: str, fn: str, *,
                          low=None, high=None, low_inclusive: bool = True,
                          high_inclusive: bool = True) -> None:
  """Checks a Python (static) hyperparameter lies in an interval.

  Traced hyperparameters (e.g. under ``optax.inject_hyperparams``) are not
  checked: they have no value at trace time.
  """
  if isinstance(value, jax.core.Tracer):
    return
  if jnp.ndim(value) != 0:
    _fail(fn, f"`{name}` must be a scalar, got shape {jnp.shape(value)}")
  value = float(value) if not _is_number(value) else value
  bad = ((low is not None and (value < low or (value == low and not low_inclusive)))
         or (high is not None and
             (value > high or (value == high and not high_inclusive))))
  if bad:
    lo = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low}"
    hi = "inf)" if high is None else f"{high}" + ("]" if high_inclusive else ")")
    _fail(fn, f"`{name}` must lie in {lo}, {hi}, got {value}")


def check_positive(value, name: str, fn: str) -> None:
  check_scalar_in_range(value, name, fn, low=0, low_inclusive=False)


def check_nonnegative(value, name: str, fn: str) -> None:
  check_scalar_in_range(value, name, fn, low=0)


def check_choice(value, choices: Sequence[Any], name: str, fn: str) -> None:
  if value not in choices:
    _fail(fn, f"`{name}` must be one of {list(choices)}, got {value!r}")


def check_finite_scalar(value, name: str, fn: str) -> None:
  """Checks a static hyperparameter is a finite real scalar (any sign).

  Traced values are not checked (no value at trace time).
  """
  if isinstance(value, jax.core.Tracer):
    return
  if jnp.ndim(value) != 0:
    _fail(fn, f"`{name}` must be a scalar, got shape {jnp.shape(value)}")
  if not np.isfinite(float(value)):
    _fail(fn, f"`{name}` must be finite, got {float(value)}")
