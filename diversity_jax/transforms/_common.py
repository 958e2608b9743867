"""Shared internals of the transforms family (the extra-args protocol).

Every rule receives ``loss_fn``, ``batch`` and ``key`` as keyword-only extra
arguments (see the package docstring). The helpers here validate them at trace
time, call ``loss_fn`` the same way everywhere (a scalar or a ``(loss, aux)``
pair), and do the small pytree algebra the rules share with ``optax.tree``
(f32 arithmetic, casting back to each leaf's dtype).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Sequence, Union

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax._src import numerics

HeadSelector = Union[str, Sequence[str], Callable[[Any], Any]]


def require_protocol(fn: str, params, loss_fn, batch, *, need_key=False,
                     key=None) -> None:
  """Trace-time check of the extra arguments; errors name the argument."""
  if params is None:
    checks._fail(fn, "`params` must be passed to update(grads, state, params, "
                 "...)", TypeError)
  if loss_fn is None or not callable(loss_fn):
    checks._fail(fn, "the extra argument `loss_fn` (a callable "
                 "loss_fn(params, batch) -> loss or (loss, aux)) is required: "
                 "call tx.update(grads, state, params, loss_fn=..., "
                 "batch=...)", TypeError)
  if batch is None:
    checks._fail(fn, "the extra argument `batch` is required: call "
                 "tx.update(grads, state, params, loss_fn=..., batch=...)",
                 TypeError)
  if need_key and key is None:
    checks._fail(fn, "the extra argument `key` (a PRNG key) is required",
                 TypeError)


def check_grads_match(fn: str, grads, params) -> None:
  if (jax.tree_util.tree_structure(grads)
      != jax.tree_util.tree_structure(params)):
    checks._fail(fn, "`grads` and `params` must have the same tree structure")
  for g, p in zip(jax.tree_util.tree_leaves(grads),
                  jax.tree_util.tree_leaves(params)):
    if jnp.shape(g) != jnp.shape(p):
      checks._fail(fn, f"`grads` leaf of shape {jnp.shape(g)} does not match "
                   f"`params` leaf of shape {jnp.shape(p)}")


def call_loss(fn: str, loss_fn, params, batch):
  """Calls ``loss_fn(params, batch)``; returns ``(f32 scalar loss, aux)``.

  ``loss_fn`` returns either the scalar loss or a pair ``(loss, aux)``; the
  returned Python structure (a tuple or not) decides which, at trace time.
  ``aux`` is ``None`` for a scalar ``loss_fn``; :func:`get_aux` then raises
  for the rules that need it.
  """
  out = loss_fn(params, batch)
  if isinstance(out, tuple):
    if len(out) != 2:
      checks._fail(fn, f"`loss_fn` must return a scalar loss or a pair "
                   f"(scalar_loss, aux), got a tuple of length {len(out)}",
                   TypeError)
    loss, aux = out
  else:
    loss, aux = out, None
  if jnp.ndim(loss) != 0:
    checks._fail(fn, f"`loss_fn` must return a scalar loss, got shape "
                 f"{jnp.shape(loss)}")
  return jnp.asarray(loss, jnp.float32), aux


def get_aux(fn: str, aux, name: str):
  """``aux[name]``; the error names the rule and the key it needs."""
  if aux is None:
    checks._fail(fn, f"this rule needs aux['{name}']: `loss_fn` must return "
                 f"(loss, aux) with aux a dict holding '{name}', but it "
                 "returned only a scalar loss", TypeError)
  if not isinstance(aux, Mapping) or name not in aux:
    checks._fail(fn, f"`loss_fn` must return aux as a dict holding "
                 f"'{name}'", KeyError)
  return aux[name]


def f32(tree):
  return optax.tree.cast(tree, jnp.float32)


def perturb(params, direction, scale):
  """``params + scale * direction`` computed in f32, cast to params' dtypes."""
  return optax.tree.cast_like(
      optax.tree.add_scale(f32(params), scale, f32(direction)), params)


def orthogonal_part(x, y):
  """The component of ``x`` orthogonal to ``y`` (pytrees, f32).

  ``x - <x, u> u`` with ``u = y / ||y||`` (the overflow-safe
  ``numerics.tree_l2_norm``); ``x`` itself when ``y = 0``.
  """
  norm = numerics.tree_l2_norm(y)
  unit = jax.tree_util.tree_map(lambda l: numerics.safe_divide(l, norm), y)
  return optax.tree.add_scale(x, -optax.tree.vdot(x, unit), unit)


def leaf_mask(fn: str, arg: str, mask, params):
  """Boolean pytree like ``params`` from ``mask`` (``optax.masked`` style).

  ``mask`` is a pytree of bools with the structure of ``params`` or a
  callable ``params -> pytree of bools``; the error names ``arg``.
  """
  if callable(mask):
    mask = mask(params)
  if (jax.tree_util.tree_structure(mask)
      != jax.tree_util.tree_structure(params)):
    checks._fail(fn, f"`{arg}` must be (or return) a pytree of bools with "
                 f"the structure of params")
  return mask


def key_of(entry):
  """The key of one key-path entry (dict key, attribute name or index)."""
  return getattr(entry, "key", getattr(entry, "name",
                                       getattr(entry, "idx", entry)))


# ----------------------------------------------------------------------------
# Classifier-head selection (hessian_alignment, udim).


def head_mask(fn: str, params, head: HeadSelector):
  """Boolean pytree (same structure as params): True on head leaves.

  ``head`` is a top-level key (``'head'``), a key path (``('model',
  'classifier')``), or a callable ``params -> pytree of bools`` (optax mask
  style).
  """
  if callable(head):
    return leaf_mask(fn, "head", head, params)
  path = (head,) if isinstance(head, str) else tuple(head)
  if not path:
    checks._fail(fn, "`head` must name at least one key")

  def keys_of(kp):
    return tuple(key_of(k) for k in kp)

  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  mask = [keys_of(kp)[:len(path)] == path for kp, _ in flat]
  if not any(mask):
    checks._fail(fn, f"`head`={head!r} selects no parameter; top-level keys "
                 f"are {sorted({str(keys_of(kp)[0]) for kp, _ in flat})}",
                 KeyError)
  return jax.tree_util.tree_unflatten(treedef, mask)
