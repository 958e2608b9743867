"""Surrogate-Gap-guided SAM (GSAM): SAM's descent plus an ascent on ``f``
orthogonal to the perturbed gradient, with ``rho`` tied to the learning rate.

Per step ``t`` (``g = grads``, the gradient the trainer computed at ``w``)::

  rho_t  = rho_min + (rho_max - rho_min) (lr_t - lr_min) / (lr_max - lr_min)
  e      = rho_t T^2 g / ||T g||          (SAM's / ASAM's perturbation)
  g_p    = grad L(w + e)                  (one extra forward + backward)
  g_perp = g - <g, g_p / ||g_p||> g_p / ||g_p||
  update = g_p - alpha g_perp
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax.transforms import _ascent
from diversity_jax.transforms import _common


class GSAMState(NamedTuple):
  """State of :func:`gsam` (arrays only, checkpointable).

  Attributes:
    count: number of updates taken; the learning-rate schedule's argument.
    rho: ``rho_t`` of the last step.
    sharpness: the surrogate gap ``h = L(w + e) - L(w)`` of the last step.
    perturbed_loss: ``L(w + e)`` of the last step.
    grad_norm: ``||T g||_2`` of the last step.
  """
  count: jax.Array
  rho: jax.Array
  sharpness: jax.Array
  perturbed_loss: jax.Array
  grad_norm: jax.Array


def gsam(learning_rate: optax.ScalarOrSchedule, *, rho_max: float = 0.6,
         rho_min: float = 0.1, alpha: float = 0.6,
         lr_max: Optional[float] = None, lr_min: Optional[float] = None,
         minimize_fp: bool = True, adaptive: bool = False, eta: float = 0.0,
         adaptive_mask: Any = None, batch_axis_name: Optional[str] = None,
         m_sharpness: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""Surrogate Gap Guided Sharpness-Aware Minimization (GSAM) gradient.

  SAM minimizes the perturbed loss ``f_p(w) = f(w + e(w))``; GSAM also
  minimizes the surrogate gap ``h(w) = f_p(w) - f(w)`` without changing the
  descent on ``f_p``: it removes from the update ``alpha`` times the
  component of ``g = grad f(w)`` orthogonal to ``g_p = grad f_p(w)`` (an
  ascent on ``f`` that ``f_p`` does not see, to first order)::

    rho_t  = rho_min + (rho_max - rho_min) (lr_t - lr_min) / (lr_max - lr_min)
    e      = rho_t g / ||g||            (ASAM's rho_t T^2 g / ||T g|| with
                                         ``adaptive``)
    g_p    = grad f(w + e)
    g_perp = g - <g, g_p> g_p / ||g_p||^2
    update = g_p - alpha g_perp

  ``lr_t = learning_rate(t)``, with ``t = state.count`` counted from 0 as
  optax's optimizers count: pass the optimizer's own schedule and ``rho_t``
  follows the learning rate that the same ``update`` applies (``rho_max`` at
  the peak rate ``lr_max``, ``rho_min`` at the final rate ``lr_min``).
  ``rho_t`` is clipped at 0 (a warmup that starts below ``lr_min`` lowers it
  under ``rho_min``). With a constant ``learning_rate`` (or ``lr_max ==
  lr_min``) ``rho_t = rho_max``. ``rho_max = rho_min`` and ``alpha = 0``
  give SAM.

  ``minimize_fp=False`` is big_vision's other mode, which keeps the clean
  gradient and adds the component of ``g_p`` orthogonal to it: ``update = g
  + alpha (g_p - <g_p, g> g / ||g||^2)``.

  Cost: as :func:`sam` (the trainer's forward+backward plus one at ``w +
  e``; the optional extra argument ``value``, the loss at ``w``, is used
  for ``state.sharpness``); the decomposition adds a norm, an inner product
  and two axpys over the params. Mixed precision: ``e``, ``w + e`` and the
  decomposition are computed in f32 (norms scaled, so bf16 gradients
  neither overflow nor underflow), ``w + e`` is cast to the params' dtypes
  for ``loss_fn``, and the update is returned in the gradients' dtypes.
  Diagnostics:
  ``optax.tree_utils.tree_get(opt_state, 'rho')`` (likewise ``'sharpness'``,
  the surrogate gap, ``'perturbed_loss'``, ``'grad_norm'``).

  Data parallelism: as :func:`sam`. With ``m_sharpness=True`` each shard
  perturbs with its own gradient and decomposes its own ``g`` and ``g_p``;
  the update is the ``pmean`` of the per-shard GSAM gradients, as
  big_vision's trainer does under ``pmap``. Otherwise ``g`` and ``g_p`` are
  the ``pmean``\ s of the per-shard gradients. The decomposition uses
  ``g``'s magnitude, so ``grads`` should be the per-shard (device-varying)
  gradients: already-reduced ``grads`` (``shard_map``'s autodiff ``psum``\ s
  the gradient of replicated params) are recomputed per shard, a backward
  that XLA merges with the trainer's under ``jit`` (the compiled step has
  the same matmul count either way).

  Args:
    learning_rate: the optimizer's learning rate: a float, or an optax
      schedule ``count -> lr`` evaluated at ``state.count``.
    rho_max: radius at ``lr_max`` (>= ``rho_min`` with a schedule; the
      radius throughout with a constant ``learning_rate``).
    rho_min: radius at ``lr_min`` (>= 0).
    alpha: weight of the ascent on the surrogate gap (>= 0).
    lr_max: the schedule's peak learning rate; required with a schedule.
    lr_min: the schedule's final learning rate (``<= lr_max``); required
      with a schedule.
    minimize_fp: ``True`` (the paper's GSAM) decomposes ``g`` against
      ``g_p``; ``False`` decomposes ``g_p`` against ``g`` (see above).
    adaptive: ASAM's ``T_w = |w| + eta`` (as :func:`sam`).
    eta: ASAM's ``eta`` (>= 0); the default 0 is the authors' PyTorch
      ``adaptive=True`` (``T_w = |w|``).
    adaptive_mask: the leaves that get ``T_w`` (as :func:`sam`).
    batch_axis_name: mapped axis name for data parallelism (see above).
    m_sharpness: per-shard perturbation and decomposition.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` needing the extra arguments
    ``loss_fn`` (the scalar loss or ``(loss, aux)``; ``aux`` is not used)
    and ``batch``; its state is :class:`GSAMState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from diversity_jax import transforms
    >>> loss_fn = lambda w, x: jnp.mean(jnp.log1p(jnp.exp(-x @ w)))
    >>> w, x = jnp.array([0.5, -0.3]), jnp.array([[1.0, 2.0], [0.5, -1.0]])
    >>> lr = optax.linear_schedule(0.1, 0.001, transition_steps=100)
    >>> tx = optax.chain(
    ...     transforms.gsam(lr, rho_max=0.05, rho_min=0.01, alpha=0.3,
    ...                     lr_max=0.1, lr_min=0.001),
    ...     optax.sgd(lr))
    >>> state = tx.init(w)
    >>> for _ in range(2):
    ...   u, state = tx.update(jax.grad(loss_fn)(w, x), state, w,
    ...                        loss_fn=loss_fn, batch=x)
    ...   w = optax.apply_updates(w, u)
    >>> rho = optax.tree_utils.tree_get(state, 'rho')   # the 2nd step's rho_1
    >>> print(round(float(rho), 6))   # 0.01 + 0.04 (0.09901 - 0.001) / 0.099
    0.0496

  References:
    Zhuang, Gong, Yuan, Cui, Adam, Dvornek, Tatikonda, Duncan and Liu,
    `Surrogate Gap Minimization Improves Sharpness-Aware Training
    <https://arxiv.org/abs/2203.08065>`_, ICLR 2022: the surrogate gap
    ``h(w) = f_p(w) - f(w)`` (``state.sharpness``) and Algorithm 1 (GSAM:
    the decomposition of ``g`` against ``g_p`` and ``update = g_p - alpha
    g_perp``, with ``rho_t`` following the learning rate).
    Checked against the authors' JAX code, google-research/big_vision
    ``big_vision/trainers/proj/gsam/gsam.py`` (``gsam_gradient``: the
    ``rho_t`` formula, both ``minimize_fp`` modes, the per-worker
    decomposition) and ``big_vision/configs/proj/gsam/vit_i1k_gsam_no_aug.py``
    (the defaults ``rho_max = 0.6``, ``rho_min = 0.1``, ``alpha = 0.6`` of
    its ViT-B/32 ImageNet run, with ``lr_max = lr`` and ``lr_min =
    linear_end * lr``), by ``tests/transforms/test_sam_family.py`` (several
    steps against a NumPy statement of ``gsam_gradient``). big_vision's
    trainer evaluates the schedule at the 1-based step number, i.e. at the
    next update's learning rate; ``gsam(lambda t: schedule(t + 1), ...)``
    reproduces that. Its ``adaptive_perturbation`` (``rho |w| g / ||g||``)
    is not ASAM's; ``adaptive=True, eta=0`` is the perturbation of the
    authors' PyTorch code (juntang-zhuang/GSAM ``gsam/gsam.py``).
  """
  fn = "gsam"
  for name, v in (("rho_max", rho_max), ("rho_min", rho_min),
                  ("alpha", alpha)):
    checks.check_nonnegative(v, name, fn)
  ascent = _ascent.Ascent(fn, adaptive=adaptive, eta=eta,
                          adaptive_mask=adaptive_mask,
                          batch_axis_name=batch_axis_name,
                          m_sharpness=m_sharpness, uses_grad_scale=True)
  if callable(learning_rate):
    for name, v in (("lr_max", lr_max), ("lr_min", lr_min)):
      if v is None:
        checks._fail(fn, f"`{name}` is required when `learning_rate` is a "
                     "schedule (rho_t = rho_min + (rho_max - rho_min) "
                     "(lr_t - lr_min) / (lr_max - lr_min))", TypeError)
    checks.check_nonnegative(lr_min, "lr_min", fn)
    checks.check_scalar_in_range(lr_max, "lr_max", fn, low=lr_min)
    checks.check_scalar_in_range(rho_max, "rho_max", fn, low=rho_min)
  else:
    checks.check_nonnegative(learning_rate, "learning_rate", fn)
  constant = (not callable(learning_rate)) or lr_max == lr_min

  def rho_at(count):
    if constant:
      return jnp.asarray(rho_max, jnp.float32)
    lr = jnp.asarray(learning_rate(count), jnp.float32)
    rho = rho_min + (rho_max - rho_min) * (lr - lr_min) / (lr_max - lr_min)
    return jnp.maximum(rho, 0.0)

  def combine(g, g_p):
    if minimize_fp:
      return optax.tree.add_scale(g_p, -alpha,
                                  _common.orthogonal_part(g, g_p))
    return optax.tree.add_scale(g, alpha, _common.orthogonal_part(g_p, g))

  def init_fn(params):
    ascent.check_params(params)
    z = jnp.zeros((), jnp.float32)
    return GSAMState(count=jnp.zeros((), jnp.int32), rho=z, sharpness=z,
                     perturbed_loss=z, grad_norm=z)

  def update_fn(updates, state, params=None, *, loss_fn=None, batch=None,
                value=None, **extra):
    del extra
    rho = rho_at(state.count)
    a = ascent(updates, params, loss_fn, batch, rho, value)
    if m_sharpness:
      out = ascent.mean(combine(a.g, a.perturbed_grads))
    else:
      out = combine(a.g, ascent.mean(a.perturbed_grads))
    sharpness, adv_loss = ascent.mean(
        (a.perturbed_loss - a.loss, a.perturbed_loss))
    new_state = GSAMState(count=optax.safe_increment(state.count), rho=rho,
                          sharpness=sharpness, perturbed_loss=adv_loss,
                          grad_norm=ascent.reduced_norm(a.norm))
    return optax.tree.cast_like(out, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
