"""DVERGE building blocks (Yang et al., NeurIPS 2020) as pure functions.

The model is any JAX-transformable function: ``feature_fn(params, x)`` returns
the layer-``l`` features used for distillation (pre-activation in the
paper), and ``apply_fn(params, x)`` returns logits. Both work with flax
(``lambda p, x: model.apply(p, x)`` for linen, or a split nnx graph).

Typical round-robin step for an ensemble stacked on a leading axis ``M``::

  distilled = jax.vmap(
      lambda p: feature_distillation(feature_fn, p, x, x_source))(params)
  loss = dverge_cross_entropy(apply_fn, params, distilled, y).mean(1).sum()
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def feature_distillation(feature_fn: Callable[[Any, jax.Array], jax.Array],
                         params: Any, inputs: jax.Array,
                         source_inputs: jax.Array, *,
                         epsilon: float = 0.07, step_size: float = 0.007,
                         num_steps: int = 10, momentum: float = 1.0,
                         clip_min: Optional[float] = 0.0,
                         clip_max: Optional[float] = 1.0) -> jax.Array:
  r"""Feature-distilled inputs: look like ``inputs``, carry source features.

  Approximately solves

  .. math::

    x' = \arg\min_{\lVert z - x \rVert_\infty \le \epsilon}
      \lVert f^{(l)}(z) - f^{(l)}(x_s) \rVert_2^2

  with momentum sign steps (MI-FGSM, no random start): per example,
  :math:`g \leftarrow \mu g + \nabla / \lVert \nabla \rVert_1`,
  :math:`z \leftarrow \Pi_{[x-\epsilon, x+\epsilon] \cap [c_{min}, c_{max}]}
  (z - \alpha\,\mathrm{sign}(g))`, where :math:`\nabla` is the gradient of the
  mean squared feature error.

  Args:
    feature_fn: ``feature_fn(params, x) -> features`` (layer-``l`` features).
    params: parameters of the member whose features are distilled.
    inputs: ``(B, ...)`` floating inputs ``x`` (targets of the look-alike).
    source_inputs: inputs ``x_s`` of the same shape (feature sources).
    epsilon: L-inf radius (paper: 0.07 for images in [0, 1]).
    step_size: sign-step size alpha (paper: 0.007).
    num_steps: number of steps, a static int >= 0 (paper: 10).
    momentum: momentum factor mu (paper: 1.0; 0 gives plain sign steps).
    clip_min: lower input bound, or None.
    clip_max: upper input bound, or None.

  Returns:
    Distilled inputs of the same shape and dtype as ``inputs``, with the
    gradient stopped (they are data for the cross-training objective).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.diversity import feature_distillation
    >>> w = jnp.ones((4, 3))
    >>> feature_fn = lambda p, x: x @ p
    >>> x, xs = jnp.full((2, 4), 0.5), jnp.zeros((2, 4))
    >>> xd = feature_distillation(feature_fn, w, x, xs)
    >>> bool(jnp.all(jnp.abs(xd - x) <= 0.07 + 1e-6))
    True

  References:
    Yang et al., "DVERGE: Diversifying Vulnerabilities for Enhanced Robust
    Generation of Ensembles", NeurIPS 2020 (arXiv 2009.14720), Sec. 3.1
    (feature distillation; the procedure was checked against the authors'
    code). Code: https://github.com/zjysteven/DVERGE
    (``distillation.py``, ``Linf_distillation``).
  """
  fn = "feature_distillation"
  if not callable(feature_fn):
    checks._fail(fn, "`feature_fn` must be callable", TypeError)
  checks.check_floating(inputs, "inputs", fn)
  checks.check_min_rank(inputs, 1, "inputs", fn)
  checks.check_floating(source_inputs, "source_inputs", fn)
  checks.check_same_shape(inputs, source_inputs, "inputs", "source_inputs", fn)
  checks.check_nonnegative(epsilon, "epsilon", fn)
  checks.check_nonnegative(step_size, "step_size", fn)
  checks.check_nonnegative(momentum, "momentum", fn)
  if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
    checks._fail(fn, f"`num_steps` must be a Python int >= 0, got {num_steps!r}")
  if clip_min is not None and clip_max is not None and clip_min > clip_max:
    checks._fail(fn, f"`clip_min` ({clip_min}) must be <= `clip_max` "
                 f"({clip_max})")
  dtype = jnp.result_type(inputs)
  x_nat = jax.lax.stop_gradient(numerics.promote_to_f32(jnp.asarray(inputs)))
  x_src = jax.lax.stop_gradient(
      numerics.promote_to_f32(jnp.asarray(source_inputs)))
  target = jax.lax.stop_gradient(feature_fn(params, x_src.astype(dtype)))
  params = jax.lax.stop_gradient(params)

  def clip(z):
    if clip_min is not None or clip_max is not None:
      z = jnp.clip(z, clip_min, clip_max)
    return z

  def feature_loss(z):
    out = feature_fn(params, z.astype(dtype))
    diff = numerics.promote_to_f32(out) - numerics.promote_to_f32(target)
    return jnp.mean(jnp.square(diff))

  def step(_, carry):
    z, g = carry
    grad = jax.grad(feature_loss)(z)
    l1 = jnp.sum(jnp.abs(grad.reshape(grad.shape[0], -1)), axis=1)
    grad = grad / jnp.maximum(l1, 1e-12).reshape((-1,) + (1,) * (z.ndim - 1))
    g = momentum * g + grad
    z = z - step_size * jnp.sign(g)
    z = jnp.clip(z, x_nat - epsilon, x_nat + epsilon)
    return clip(z), g

  z0 = clip(x_nat)
  z, _ = jax.lax.fori_loop(0, num_steps, step, (z0, jnp.zeros_like(z0)))
  return jax.lax.stop_gradient(z).astype(dtype)


def dverge_cross_entropy(apply_fn: Callable[[Any, jax.Array], jax.Array],
                         stacked_params: Any, distilled_inputs: jax.Array,
                         labels: jax.Array, *,
                         where: Optional[jax.Array] = None) -> jax.Array:
  r"""DVERGE cross-training objective, per member and per example.

  Member ``i`` must classify every input distilled against another member
  ``j`` with the original label:

  .. math::

    L_i(x, y) = \sum_{j \ne i} \mathrm{CE}\big(f_i(x'_j), y\big),

  where :math:`x'_j` = ``distilled_inputs[j]`` (from
  :func:`feature_distillation` with member ``j``'s parameters; treated as
  data, no gradient). Members are vmapped over the leading axis of
  ``stacked_params``.

  Args:
    apply_fn: ``apply_fn(params, x) -> logits`` of shape ``(B, K)``.
    stacked_params: pytree whose leaves have a leading member axis ``M``.
    distilled_inputs: ``(M, B, ...)`` distilled inputs, one set per member.
    labels: ``(B,)`` integer labels of the original inputs.
    where: optional ``(B,)`` boolean mask of kept examples.

  Returns:
    f32 array of shape ``(M, B)``: ``L_i`` per member and example (all zero
    when ``M = 1``). Reduce with e.g. ``.mean(axis=1).sum()``.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax.diversity import dverge_cross_entropy
    >>> apply_fn = lambda w, x: x @ w
    >>> params = jnp.zeros((3, 4, 2))  # 3 linear members
    >>> xd = jnp.ones((3, 5, 4))
    >>> loss = dverge_cross_entropy(apply_fn, params, xd, jnp.zeros(5, int))
    >>> loss.shape, round(float(loss[0, 0]), 4)  # 2 * log 2
    ((3, 5), 1.3863)

  References:
    Yang et al., DVERGE, NeurIPS 2020 (arXiv 2009.14720), Sec. 3.2
    (cross-training objective; checked against the authors' code). Code:
    https://github.com/zjysteven/DVERGE (``train/train_dverge.py``).
  """
  fn = "dverge_cross_entropy"
  if not callable(apply_fn):
    checks._fail(fn, "`apply_fn` must be callable", TypeError)
  leaves = jax.tree_util.tree_leaves(stacked_params)
  if not leaves:
    checks._fail(fn, "`stacked_params` has no leaves")
  m = jnp.shape(leaves[0])[0] if jnp.ndim(leaves[0]) else None
  if m is None or any(jnp.ndim(l) == 0 or jnp.shape(l)[0] != m for l in leaves):
    checks._fail(fn, "every leaf of `stacked_params` needs the same leading "
                 "member axis")
  checks.check_floating(distilled_inputs, "distilled_inputs", fn)
  checks.check_min_rank(distilled_inputs, 2, "distilled_inputs", fn)
  if jnp.shape(distilled_inputs)[0] != m:
    checks._fail(fn, f"`distilled_inputs` must have {m} members on axis 0 "
                 f"(like `stacked_params`), got shape "
                 f"{jnp.shape(distilled_inputs)}")
  b = jnp.shape(distilled_inputs)[1]
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, (b,), "labels", fn)
  checks.check_where(where, (b,), fn)
  xd = jax.lax.stop_gradient(distilled_inputs)

  def member_loss(p):
    logits = jax.vmap(lambda x: apply_fn(p, x))(xd)           # (M, B, K)
    logits = numerics.promote_to_f32(logits)
    if logits.ndim != 3 or logits.shape[1] != b:
      checks._fail(fn, f"`apply_fn` must return (B, K) logits, got shape "
                   f"{logits.shape[1:]}")
    checks.check_label_range(labels, logits.shape[-1], fn)
    safe, invalid = label_range.sanitize(labels, logits.shape[-1])
    log_p = jax.nn.log_softmax(logits, axis=-1)
    ce = -jnp.take_along_axis(
        log_p, jnp.broadcast_to(safe[None, :, None], (m, b, 1)).astype(
            jnp.int32), axis=-1)[..., 0]                      # (M_j, B)
    return label_range.nan_where_invalid(ce, invalid, where)

  ce = jax.vmap(member_loss)(stacked_params)                  # (M_i, M_j, B)
  off = (1.0 - jnp.eye(m, dtype=ce.dtype))[:, :, None]
  out = jnp.sum(ce * off, axis=1)
  return numerics.apply_where(out, where)
