"""Smooth adversarial comp-sum loss (Mao, Mohri & Zhong, ICML 2023).

A comp-sum loss on the clean input plus ``nu`` times the largest change of the
score *differences* ``h(x, k) - h(x, y)`` in an input ball, found by projected
gradient ascent (PGD) as in the paper's ADV-COMP-SUM algorithm.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics
from diversity_jax.losses._comp_sum import _comp_sum_from_log_prob
from diversity_jax.losses._comp_sum import _target_log_prob

_NORMS = ("linf", "l2")


def _batch_norm(x, axes):
  return numerics.safe_norm(x, axis=axes)


def _project(delta, radius, norm, axes):
  if norm == "linf":
    return jnp.clip(delta, -radius, radius)
  nrm = _batch_norm(delta, axes)
  scale = jnp.minimum(1.0, numerics.safe_divide(radius, nrm))
  scale = jnp.where(nrm > 0, scale, 1.0)
  return delta * jnp.expand_dims(scale, axes)


def _ascent_direction(grad, norm, axes):
  if norm == "linf":
    return jnp.sign(grad)
  nrm = _batch_norm(grad, axes)
  return grad * jnp.expand_dims(numerics.safe_divide(1.0, nrm), axes)


def _difference_shift(logits_adv, logits, labels):
  """``Delta(x') - Delta(x)`` with ``Delta(x)_k = h(x, k) - h(x, y)``."""
  d = logits_adv - logits
  d_y = jnp.take_along_axis(d, labels[..., None], axis=-1)
  return d - d_y


def smooth_adversarial_comp_sum(
    apply_fn: Callable[[jax.Array], jax.Array], inputs: jax.Array,
    labels: jax.Array, key: jax.Array, *, tau: float = 1.0, nu: float = 1.0,
    radius: float = 8.0 / 255.0, steps: int = 10, step_size=None,
    norm: str = "linf", where=None) -> jax.Array:
  r"""Regularized smooth adversarial comp-sum loss with a PGD inner maximization.

  .. math::
    \bar\Delta_h(x, y) = \left(h(x, k) - h(x, y)\right)_{k=1}^{K}, \qquad
    \tilde\ell_\tau(h, x, y) = \ell_\tau(h, x, y) + \nu
      \sup_{\lVert x' - x \rVert_p \le \gamma}
      \lVert \bar\Delta_h(x', y) - \bar\Delta_h(x, y) \rVert_2

  with :math:`\ell_\tau` the comp-sum loss (:func:`comp_sum`). The supremum
  is approximated per example by ``steps`` of projected gradient ascent from
  a uniformly random start in the ball (sign steps for ``linf``, normalized
  steps for ``l2``). The maximizer is treated as a constant
  (``x' = x + stop_gradient(delta)``, Danskin), so gradients flow into the
  model through both :math:`h(x)` and :math:`h(x')`, as in TRADES-style
  training.

  ``apply_fn`` maps a batch of inputs ``(n, ...)`` to logits ``(n, K)`` and
  must treat examples independently (no batch statistics), since the ascent
  differentiates the sum over the batch. Close it over the parameters:
  ``lambda x: model.apply(params, x)``.

  Args:
    apply_fn: ``inputs -> logits`` (close over params to differentiate them).
    inputs: ``(n, ...)`` floating inputs.
    labels: ``(n,)`` integer labels in ``[0, K)``.
    key: PRNG key for the random start.
    tau: comp-sum parameter ``tau >= 0`` (1 = cross-entropy).
    nu: regularization weight ``nu >= 0``.
    radius: perturbation radius ``gamma >= 0``.
    steps: number of PGD steps, a Python int ``>= 0`` (0 = random start only).
    step_size: PGD step; default ``2.5 * radius / max(steps, 1)``.
    norm: ``"linf"`` or ``"l2"``, the norm of the input ball.
    where: optional ``(n,)`` boolean mask (masked: loss 0, gradient 0).

  Returns:
    The per-example loss, shape ``(n,)``, float32.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> w = jnp.ones((3, 4))
    >>> x, y = jnp.zeros((2, 3)), jnp.array([0, 2])
    >>> losses.smooth_adversarial_comp_sum(lambda z: z @ w, x, y,
    ...     jax.random.key(0), radius=0.1, steps=3).shape
    (2,)

  References:
    Mao, Mohri & Zhong, "Cross-Entropy Loss Functions: Theoretical Analysis
    and Applications", ICML 2023 (arXiv:2304.07288), Sec. 6: smooth
    adversarial comp-sum losses and the ADV-COMP-SUM algorithm (regularized
    objective): the comp-sum loss plus "a related smooth term" minimized as
    a regularized objective. The smooth term here is the supremum of the L2
    change of the score differences over the input ball; it is tested by
    brute force (top
    singular value for ``l2``, best vertex for ``linf``) and by finite
    differences.
  """
  fn = "smooth_adversarial_comp_sum"
  if not callable(apply_fn):
    raise TypeError(f"{fn}: `apply_fn` must be callable, got {type(apply_fn)}")
  checks.check_floating(inputs, "inputs", fn)
  checks.check_min_rank(inputs, 1, "inputs", fn)
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, jnp.shape(inputs)[:1], "labels", fn)
  checks.check_nonnegative(tau, "tau", fn)
  checks.check_nonnegative(nu, "nu", fn)
  checks.check_nonnegative(radius, "radius", fn)
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
    raise ValueError(f"{fn}: `steps` must be a Python int >= 0, got {steps!r}")
  if step_size is not None:
    checks.check_nonnegative(step_size, "step_size", fn)
  checks.check_choice(norm, _NORMS, "norm", fn)
  checks.check_where(where, jnp.shape(labels), fn)
  inputs = numerics.promote_to_f32(inputs)
  if step_size is None:
    step_size = 2.5 * radius / max(steps, 1)

  logits = numerics.promote_to_f32(apply_fn(inputs))
  checks.check_rank(logits, 2, "apply_fn(inputs)", fn)
  checks.check_logits_and_labels(logits, labels, fn,
                                 logits_name="apply_fn(inputs)")
  labels, invalid = label_range.sanitize(labels, logits.shape[-1])
  axes = tuple(range(1, inputs.ndim))

  clean = jax.lax.stop_gradient(logits)
  x0 = jax.lax.stop_gradient(inputs)

  def shift_norm(delta):
    adv = numerics.promote_to_f32(apply_fn(x0 + delta)).astype(clean.dtype)
    return numerics.safe_norm(_difference_shift(adv, clean, labels), axis=-1)

  if norm == "linf":
    delta = jax.random.uniform(key, inputs.shape, inputs.dtype, -1.0, 1.0)
    delta = delta * radius
  else:
    direction = jax.random.normal(key, inputs.shape, inputs.dtype)
    u = jax.random.uniform(jax.random.fold_in(key, 1), inputs.shape[:1],
                           inputs.dtype)
    r = radius * u ** (1.0 / max(int(jnp.size(inputs[0])), 1))
    direction = direction * jnp.expand_dims(
        numerics.safe_divide(1.0, _batch_norm(direction, axes)), axes)
    delta = direction * jnp.expand_dims(r, axes)

  grad_fn = jax.grad(lambda d: jnp.sum(shift_norm(d)))

  def body(_, delta):
    g = grad_fn(delta)
    return _project(delta + step_size * _ascent_direction(g, norm, axes),
                    radius, norm, axes)

  delta = jax.lax.fori_loop(0, steps, body, delta)
  delta = jax.lax.stop_gradient(delta)

  logits_adv = numerics.promote_to_f32(apply_fn(inputs + delta)).astype(
      logits.dtype)
  reg = numerics.safe_norm(_difference_shift(logits_adv, logits, labels),
                           axis=-1)
  base = _comp_sum_from_log_prob(_target_log_prob(logits, labels), tau)
  return numerics.apply_where(base + nu * reg, where, invalid)
