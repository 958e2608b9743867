"""Run a SAM-family rule every ``k`` steps; reuse its direction in between.

Per step ``t`` (``g = grads``, ``u`` = the rule's update)::

  t % k == 0:  u   = rule(g)            (the rule's extra passes)
               v   = u - <u, g> g / ||g||^2      (v / ||v|| stored)
  otherwise:   u   = g + alpha ||g|| / ||v|| v   (between='looksam')
               u   = g                          (between='gradient')
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.transforms import _common


class EveryKStepsState(NamedTuple):
  """State of :func:`every_k_steps` (arrays only, checkpointable).

  Attributes:
    step: number of updates taken (the rule runs when ``step % k == 0``).
    direction: ``v / ||v||``, the unit component of the rule's last update
      orthogonal to its gradient (params' dtypes; 0 when ``v = 0``); ``()``
      with ``between='gradient'`` or ``k = 1``.
    inner: the rule's state, as of its last computed step (its ``count``
      fields advance every step).
  """
  step: jax.Array
  direction: Any
  inner: Any


def _advance_counts(state):
  """Adds one to every ``count`` field of the (nested) NamedTuple states."""
  def has_count(x):
    return isinstance(x, tuple) and "count" in getattr(x, "_fields", ())

  return jax.tree_util.tree_map(
      lambda x: (x._replace(count=optax.safe_increment(x.count))
                 if has_count(x) else x), state, is_leaf=has_count)


def every_k_steps(rule: optax.GradientTransformationExtraArgs, k: int, *,
                  between: str = "looksam", alpha: float = 0.7
                  ) -> optax.GradientTransformationExtraArgs:
  r"""Runs a SAM-family ``rule`` every ``k`` steps (LookSAM / Composer).

  On steps ``t = 0, k, 2k, ...`` (``t = state.step``) the rule runs as
  usual and its update ``u`` is returned; the component of ``u`` orthogonal
  to the gradient ``g`` is stored. On the ``k - 1`` steps in between the
  rule is skipped (``jax.lax.cond``: its extra forward/backward passes are
  not run) and::

    v = u - <u, g> g / ||g||^2                  (at the last rule step)
    update = g + alpha ||g|| / ||v|| v          (between='looksam')
    update = g                                  (between='gradient')

  ``'looksam'`` is LookSAM (Liu et al. 2022, Algorithm 1, whose rule is
  :func:`sam`): the direction toward flatter regions changes slowly, so the
  stored ``v``, rescaled to the current gradient's norm, stands in for the
  rule's correction. ``'gradient'`` takes the plain gradient in between, as
  Composer's SAM ``interval`` does (Composer runs SAM on steps ``k - 1,
  2k - 1, ...``; here the rule runs on the first step of each period, so
  ``v`` exists before it is reused). With ``k = 1`` this is ``rule``.

  ``rule`` is :func:`sam` (or ASAM), :func:`gsam`, or
  :func:`gradient_norm_penalty` (any rule whose update replaces the
  gradient); compose the optimizer outside: ``optax.chain(every_k_steps(
  sam(0.05), 5), optax.sgd(0.1))``. The rule's state (its diagnostics) is
  kept from its last computed step, except fields named ``count``
  (:func:`gsam`'s schedule counter), which advance every step. ``v`` is
  computed in f32 (scaled norms: bf16 gradients neither overflow nor
  underflow; the rule receives the gradient in f32 and so returns its
  update in f32) and stored, as ``v / ||v||``, in the params' dtypes; the
  update is returned in the gradients' dtypes. With bf16 gradients ``v`` is the difference of
  two nearly parallel bf16 vectors, each rounded to ~0.4%: when ``||v||``
  is ~1% of ``||u||`` (small ``rho``) bf16 rounding is a large part of it,
  and the reuse step rescales it to ``alpha ||g||``; keep the gradients in
  f32 for LookSAM with a small ``rho``.

  Cost per step on average: ``1 + (c - 1) / k`` plain steps for a rule
  costing ``c`` (``c = 2`` for SAM), plus a few elementwise passes: the
  loss at ``w`` is computed outside the ``cond`` (where XLA merges it with
  the trainer's forward) and given to the rule as the extra argument
  ``value``. Under ``shard_map`` with the rule's ``batch_axis_name``, pass
  the reduced (replicated) gradients: the steps in between return ``g``
  itself.

  Args:
    rule: the SAM-family rule (an ``optax.GradientTransformationExtraArgs``
      taking ``loss_fn`` and ``batch``).
    k: run the rule every ``k`` steps (an int >= 1).
    between: ``'looksam'`` (reuse ``v``) or ``'gradient'`` (plain gradient).
    alpha: LookSAM's weight of the reused direction (>= 0), ignored for
      ``'gradient'``.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with the rule's extra
    arguments; its state is :class:`EveryKStepsState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from diversity_jax import transforms
    >>> loss_fn = lambda w, target: jnp.sum(jnp.cosh(w - target))
    >>> target = jnp.array([1.0, -2.0])
    >>> tx = optax.chain(
    ...     transforms.every_k_steps(transforms.sam(0.05), 5), optax.sgd(0.1))
    >>> w = jnp.zeros(2)
    >>> state = tx.init(w)
    >>> step = jax.jit(lambda w, s: tx.update(
    ...     jax.grad(loss_fn)(w, target), s, w, loss_fn=loss_fn, batch=target))
    >>> for _ in range(10):   # SAM on steps 0 and 5, LookSAM's reuse between
    ...   u, state = step(w, state)
    ...   w = optax.apply_updates(w, u)
    >>> print(int(optax.tree_utils.tree_get(state, 'step')))
    10

  References:
    Liu, Mai, Chen, Hsieh and You, `Towards Efficient and Scalable
    Sharpness-Aware Minimization <https://arxiv.org/abs/2203.02714>`_, CVPR
    2022, Algorithm 1 (LookSAM: ``g_v = g_s - ||g_s|| cos(theta) g /
    ||g||`` every ``k`` steps, ``g_s = g + alpha ||g|| / ||g_v|| g_v`` in
    between). MosaicML Composer, ``composer/algorithms/sam/sam.py``
    (``SAMOptimizer``'s ``interval``: plain optimizer steps between SAM
    steps). Checked by ``tests/transforms/test_sam_family.py`` against a
    NumPy statement of both modes over several steps.
  """
  fn = "every_k_steps"
  if (isinstance(k, bool) or not isinstance(k, int)) or k < 1:
    checks._fail(fn, f"`k` must be an int >= 1, got {k!r}")
  checks.check_choice(between, ("looksam", "gradient"), "between", fn)
  checks.check_nonnegative(alpha, "alpha", fn)
  if not callable(getattr(rule, "update", None)):
    checks._fail(fn, "`rule` must be an optax gradient transformation "
                 "(e.g. transforms.sam(0.05))", TypeError)
  store = between == "looksam" and k > 1

  def init_fn(params):
    direction = optax.tree.zeros_like(params) if store else ()
    return EveryKStepsState(step=jnp.zeros((), jnp.int32),
                            direction=direction, inner=rule.init(params))

  def update_fn(updates, state, params=None, **extra):
    if k > 1 and extra.get("value") is None:
      # L(w) outside the cond, where XLA merges it with the trainer's
      # forward; the rule (sam, gsam: state.sharpness) reads it as `value`.
      _common.require_protocol(fn, params, extra.get("loss_fn"),
                               extra.get("batch"))
      extra["value"] = _common.call_loss(fn, extra["loss_fn"], params,
                                         extra["batch"])[0]

    def run_rule(state):
      g = _common.f32(updates)            # the rule then returns f32
      u, inner = rule.update(g, state.inner, params, **extra)
      if store:
        v = _common.orthogonal_part(_common.f32(u), g)
        norm = numerics.tree_l2_norm(v)
        direction = optax.tree.cast_like(
            jax.tree_util.tree_map(lambda l: numerics.safe_divide(l, norm),
                                   v), state.direction)
      else:
        direction = state.direction
      return optax.tree.cast_like(u, updates), inner, direction

    def reuse(state):
      inner = _advance_counts(state.inner)
      if not store:
        return updates, inner, state.direction
      g = _common.f32(updates)
      u = optax.tree.add_scale(g, alpha * numerics.tree_l2_norm(g),
                               _common.f32(state.direction))
      return optax.tree.cast_like(u, updates), inner, state.direction

    if k == 1:
      u, inner, direction = run_rule(state)
    else:
      u, inner, direction = jax.lax.cond(state.step % k == 0, run_rule,
                                         reuse, state)
    return u, EveryKStepsState(step=optax.safe_increment(state.step),
                               direction=direction, inner=inner)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
