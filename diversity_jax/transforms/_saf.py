"""SAF and MESA: sharpness-aware training for free (trajectory KL loss)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax.transforms import _common


class SAFState(NamedTuple):
  """State of :func:`saf` (arrays only, checkpointable by orbax).

  Attributes:
    count: number of updates done (int32).
    logits_buffer: ``(num_examples, lag + 1, num_classes)`` f32 ring of each
      example's outputs, one slot per epoch (slot ``epoch % (lag + 1)``).
    penalty: ``lam * T^2 * KL`` of the last step (0 while inactive).
  """
  count: jax.Array
  logits_buffer: jax.Array
  penalty: jax.Array


class MESAState(NamedTuple):
  """State of :func:`mesa`.

  Attributes:
    count: number of updates done (int32).
    ema_params: exponential moving average of the params (f32).
    penalty: ``lam * T^2 * KL`` of the last step (0 while inactive).
  """
  count: jax.Array
  ema_params: object
  penalty: jax.Array


def trajectory_kl(logits, target_logits, temperature):
  """``T^2 * mean_i KL(softmax(t_i/T) || softmax(z_i/T))`` (targets fixed).

  The SAF/MESA trajectory loss (Du et al. 2022, Eq. 9 for SAF's recorded
  outputs, Eq. 10 for MESA's EMA outputs): the distillation KL of the
  current outputs ``z`` to recorded outputs ``t``, as in the authors'
  ``F.kl_div(F.softmax(z/T).log(), F.softmax(t/T)).sum(-1).mean() * T**2``
  (``SAF_train.py`` and ``MESA_train.py``, ``train_one_epoch``); computed
  here with ``log_softmax`` (same value, finite for large logits).
  ``target_logits`` are treated as constants.

  Args:
    logits: ``(..., K)`` current outputs ``z``.
    target_logits: ``(..., K)`` recorded outputs ``t``.
    temperature: ``T > 0``.

  Returns:
    Scalar f32.

  Example:
    >>> import jax.numpy as jnp
    >>> trajectory_kl(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 5.0)
    Array(0., dtype=float32)

  References:
    Du et al., `Sharpness-Aware Training for Free
    <https://arxiv.org/abs/2205.14083>`_, NeurIPS 2022, Eqs. 9-10 of
    arXiv:2205.14083; the formula was checked against the authors' code
    (AngusDujw/SAF) and by ``tests/transforms/test_exactness.py`` (NumPy
    softmax KL).
  """
  z = jnp.asarray(logits, jnp.float32) / temperature
  t = jax.lax.stop_gradient(jnp.asarray(target_logits, jnp.float32)) / temperature
  logq = jax.nn.log_softmax(t, axis=-1)
  logp = jax.nn.log_softmax(z, axis=-1)
  kl = jnp.sum(jnp.exp(logq) * (logq - logp), axis=-1)
  return jnp.mean(kl) * temperature ** 2


def _kl_update(fn, loss_fn, params, batch, target_fn, weight, temperature):
  """One fused forward + backward of ``loss + weight * KL(target || logits)``.

  ``jax.vjp`` of ``params -> (loss, logits)`` with cotangent
  ``(1, weight * dKL/dlogits)``: one backward gives
  ``grad (loss + weight * KL)``. The trainer's own gradient is then unused and
  XLA removes it under ``jit`` (the forward is shared by CSE).
  """
  def f(p):
    loss, aux = _common.call_loss(fn, loss_fn, p, batch)
    logits = _common.get_aux(fn, aux, "logits")
    return (loss, jnp.asarray(logits, jnp.float32)), aux

  (loss, logits), vjp_fn, aux = jax.vjp(f, params, has_aux=True)
  target = target_fn(logits)
  kl, dkl = jax.value_and_grad(trajectory_kl)(logits, target, temperature)
  (grads,) = vjp_fn((jnp.ones_like(loss), weight * dkl))
  return grads, logits, weight * kl


def _explicit_sharding(x):
  """The explicit-axes ``NamedSharding`` of ``x``'s type, or None."""
  sh = getattr(jax.typeof(x), "sharding", None)
  mesh = getattr(sh, "mesh", None)
  if mesh is None or getattr(mesh, "empty", True):
    return None
  if all(s is None for s in sh.spec):
    return None
  return sh


def _replicated(x):
  """Reshards explicitly sharded ``x`` to replicated (gathers and scatters
  into the example buffer need replicated ids under explicit sharding)."""
  sh = _explicit_sharding(x)
  if sh is None:
    return x
  return jax.sharding.reshard(
      x, jax.sharding.NamedSharding(sh.mesh, jax.sharding.PartitionSpec()))


def _like(x, ref):
  sh = _explicit_sharding(ref)
  return x if sh is None else jax.sharding.reshard(x, sh)


def _check_common(fn, lam, temperature, steps_per_epoch, start_epoch,
                  end_epoch):
  checks.check_nonnegative(lam, "lam", fn)
  checks.check_positive(temperature, "temperature", fn)
  if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
    checks._fail(fn, f"`steps_per_epoch` must be a positive int, got "
                 f"{steps_per_epoch!r}")
  checks.check_nonnegative(start_epoch, "start_epoch", fn)
  if end_epoch is not None and end_epoch <= start_epoch:
    checks._fail(fn, f"`end_epoch` must be > start_epoch={start_epoch}, got "
                 f"{end_epoch}")


def _active(count, steps_per_epoch, start_epoch, end_epoch):
  epoch = count // steps_per_epoch
  on = epoch > start_epoch
  if end_epoch is not None:
    on = jnp.logical_and(on, epoch < end_epoch)
  return epoch, on


def saf(num_examples: int, num_classes: int, *, steps_per_epoch: int,
        lam: float = 0.16, temperature: float = 5.0, lag: int = 3,
        start_epoch: int = 5, end_epoch=None
        ) -> optax.GradientTransformationExtraArgs:
  r"""Sharpness-Aware training for Free (SAF): trajectory-loss gradient.

  Returns the gradient of ``L(w) + lam * L_tra(w)`` with the trajectory loss
  (Du et al. 2022, Eq. 9; the authors' ``SAF_train.py``)::

    L_tra = T^2 * mean_i KL( softmax(z_i^{(e - lag)} / T) || softmax(z_i / T) )

  where ``z_i^{(e - lag)}`` are example ``i``'s outputs recorded ``lag``
  epochs earlier. The per-example ring buffer ``state.logits_buffer`` has one
  slot per epoch: at epoch ``e`` the current outputs are written to slot
  ``e % (lag + 1)`` and the targets read from slot ``(e - lag) % (lag + 1)``
  (exactly the authors' ``train_logits[indices, ...]`` indexing). The KL is
  active for ``start_epoch < e < end_epoch`` (``epoch = count //
  steps_per_epoch``), as in the authors' ``kl_start_epoch``/``kl_end_epoch``.

  Cost: one forward + one backward (the KL gradient rides on the same
  backward as the loss through a ``vjp`` with cotangent ``(1, lam dKL/dz)``);
  the trainer's own gradient is then dead code that XLA removes under
  ``jit``: ~1 pass, the point of SAF.

  Requires ``batch['index']`` (int ids in ``[0, num_examples)``) and
  ``aux['logits']`` of shape ``batch_shape + (num_classes,)``.

  Args:
    num_examples: training-set size (buffer rows).
    num_classes: number of outputs ``K``.
    steps_per_epoch: updates per epoch (defines the epoch counter).
    lam: weight of the trajectory loss (authors' ``reinforce``, 0.16).
    temperature: KL temperature ``T`` (authors' default 5).
    lag: epochs between recorded and current outputs (authors'
      ``minus_epoch``, 3).
    start_epoch: KL starts after this epoch (authors' ``kl_start_epoch``, 5).
    end_epoch: KL stops at this epoch (``None``: never).

  Returns:
    ``optax.GradientTransformationExtraArgs`` with state :class:`SAFState`.

  Example:
    >>> import optax
    >>> from diversity_jax import transforms
    >>> tx = optax.chain(transforms.saf(100, 10, steps_per_epoch=4),
    ...                  optax.sgd(0.1))

  References:
    Du, Zhou, Feng, Tan and Zhou, `Sharpness-Aware Training for Free
    <https://arxiv.org/abs/2205.14083>`_, NeurIPS 2022, Eq. 9 (trajectory
    loss, numbered as in arXiv:2205.14083) and Alg. 1. The step was checked
    line by line against the authors' ``SAF_train.py`` (AngusDujw/SAF, ``train_one_epoch``: write slot
    ``epoch % (minus_epoch + 1)``, read slot ``(epoch - minus_epoch) %
    (minus_epoch + 1)``, KL for ``kl_start_epoch < epoch < kl_end_epoch``,
    ``loss += reinforce * KL``) and its argparse defaults (``reinforce
    0.16``, ``temperature 5``, ``minus_epoch 3``, ``kl_start_epoch 5``,
    ``kl_end_epoch 300`` = the default number of epochs, i.e. never, hence
    ``end_epoch=None``); ``tests/transforms/test_exactness.py`` replays
    the per-step equations.
  """
  fn = "saf"
  _check_common(fn, lam, temperature, steps_per_epoch, start_epoch, end_epoch)
  for name, v in (("num_examples", num_examples), ("num_classes", num_classes),
                  ("lag", lag)):
    if not isinstance(v, int) or v < 1:
      checks._fail(fn, f"`{name}` must be a positive int, got {v!r}")
  slots = lag + 1

  def init_fn(params):
    del params
    return SAFState(
        count=jnp.zeros((), jnp.int32),
        logits_buffer=jnp.zeros((num_examples, slots, num_classes),
                                jnp.float32),
        penalty=jnp.zeros((), jnp.float32))

  def update_fn(updates, state, params=None, *, loss_fn=None, batch=None,
                **extra):
    del extra
    _common.require_protocol(fn, params, loss_fn, batch)
    _common.check_grads_match(fn, updates, params)
    if not isinstance(batch, dict) or "index" not in batch:
      checks._fail(fn, "`batch['index']` (int ids of the examples, for the "
                   "per-example output buffer) is required", KeyError)
    index = batch["index"]
    checks.check_integer(index, "batch['index']", fn)
    checks.check_label_range(index, num_examples, fn, "batch['index']")
    epoch, on = _active(state.count, steps_per_epoch, start_epoch, end_epoch)
    write_slot = epoch % slots
    read_slot = (epoch - lag) % slots
    flat_index = _replicated(jnp.reshape(index, (-1,)))

    def target_fn(logits):
      if jnp.shape(logits)[-1] != num_classes:
        checks._fail(fn, f"aux['logits'] must have {num_classes} classes, got "
                     f"shape {jnp.shape(logits)}")
      checks.check_shape(logits, tuple(jnp.shape(index)) + (num_classes,),
                         "aux['logits']", fn)
      old = state.logits_buffer[flat_index, read_slot]
      return _like(jnp.reshape(old, jnp.shape(logits)), logits)

    weight = jnp.where(on, jnp.float32(lam), 0.0)
    grads, logits, penalty = _kl_update(fn, loss_fn, params, batch, target_fn,
                                        weight, temperature)
    buffer = state.logits_buffer.at[flat_index, write_slot].set(
        _replicated(jax.lax.stop_gradient(
            jnp.reshape(logits, (-1, num_classes)))))
    new_state = SAFState(count=state.count + 1, logits_buffer=buffer,
                         penalty=penalty)
    return optax.tree.cast_like(grads, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def mesa(*, steps_per_epoch: int, decay: float = 0.9998, lam: float = 0.3,
         temperature: float = 5.0, start_epoch: int = 5, end_epoch=None
         ) -> optax.GradientTransformationExtraArgs:
  r"""Memory-Efficient Sharpness-Aware training (MESA): EMA-teacher KL.

  SAF's trajectory loss with the recorded outputs replaced by those of an
  exponential moving average of the weights (Du et al. 2022, Sec. 4.3 and
  Eq. 10; the authors' ``MESA_train.py`` with timm ``ModelEmaV2``)::

    w_ema  <- decay * w_ema + (1 - decay) * w
    update  = grad [ L(w) + lam * T^2 * mean_i KL(softmax(f(w_ema)_i/T) ||
                                                   softmax(f(w)_i/T)) ]

  The EMA lives in ``state.ema_params`` (f32), initialized to the params at
  ``init`` (timm's ``ModelEmaV2`` deep copy). Each ``update`` first folds in
  the params it is given and then runs the teacher with the result: the
  same sequence as the authors' loop, whose ``model_ema.update(model)``
  after step ``t - 1``'s optimizer step already includes the weights step
  ``t`` starts from. timm runs the EMA copy in ``eval()`` mode; a
  ``loss_fn`` with dropout or batch statistics should do the same for the
  teacher. Requires ``aux['logits']`` (``loss_fn`` returning ``(loss,
  aux)``); ``batch`` is any pytree.

  Cost: the EMA model's forward + one fused forward/backward (the
  trainer's own gradient is eliminated as for SAF). The authors run the EMA
  forward on the full batch every step (``MESA_train.py``), so it is part of
  the method; here it is skipped (``lax.cond``) while the KL is inactive
  (``epoch <= start_epoch`` or ``>= end_epoch``), which changes nothing in
  the update. While active, in matmuls of a dense network (``F`` forward
  work, ``d_0 d_1`` the first layer's) a plain step is ``3F - d_0 d_1`` and
  MESA adds ``F``: ``1 + F / (3F - d_0 d_1)``, 1.36x in flops (1.375x in
  matmul count) on the benchmark's 64-256-256-10 MLP and -> 4/3 for deep
  nets, so MESA cannot reach 1.2x a plain step without changing the method
  (e.g. a teacher forward every k steps).

  Args:
    steps_per_epoch: updates per epoch (for ``start_epoch``/``end_epoch``).
    decay: EMA decay in [0, 1) (authors' ``model_ema_decay``, 0.9998).
    lam: KL weight (authors' ``reinforce``, 0.3 for MESA).
    temperature: KL temperature (authors' 5).
    start_epoch: KL active for ``epoch > start_epoch`` (authors' 5).
    end_epoch: KL inactive from this epoch on (``None``: never).

  Returns:
    ``optax.GradientTransformationExtraArgs`` with state :class:`MESAState`.

  Example:
    >>> import optax
    >>> from diversity_jax import transforms
    >>> tx = optax.chain(transforms.mesa(steps_per_epoch=100), optax.sgd(0.1))

  References:
    Du, Zhou, Feng, Tan and Zhou, `Sharpness-Aware Training for Free
    <https://arxiv.org/abs/2205.14083>`_, NeurIPS 2022, Sec. 4.3, Eq. 10
    (MESA), numbered as in arXiv:2205.14083. Checked against the authors'
    ``MESA_train.py`` (AngusDujw/SAF, ``train_one_epoch``: EMA
    forward under ``no_grad``, ``loss += reinforce * KL`` for
    ``kl_start_epoch < epoch < kl_end_epoch``, ``model_ema.update(model)``
    after ``optimizer.step()``) and its defaults (``reinforce 0.3``,
    ``temperature 5``, ``kl_start_epoch 5``, ``kl_end_epoch 360`` > the 300
    default epochs, ``model_ema_decay 0.9998``);
    ``tests/transforms/test_exactness.py`` replays the per-step equations.
  """
  fn = "mesa"
  _check_common(fn, lam, temperature, steps_per_epoch, start_epoch, end_epoch)
  checks.check_scalar_in_range(decay, "decay", fn, low=0.0, high=1.0,
                               high_inclusive=False)

  def init_fn(params):
    return MESAState(count=jnp.zeros((), jnp.int32),
                     ema_params=_common.f32(params),
                     penalty=jnp.zeros((), jnp.float32))

  def update_fn(updates, state, params=None, *, loss_fn=None, batch=None,
                **extra):
    del extra
    _common.require_protocol(fn, params, loss_fn, batch)
    _common.check_grads_match(fn, updates, params)
    _, on = _active(state.count, steps_per_epoch, start_epoch, end_epoch)
    # timm's ModelEmaV2.update(model) runs after each optimizer step, so the
    # teacher of step t already averages in w_t (the params given here).
    ema = jax.tree_util.tree_map(
        lambda e, p: decay * e + (1.0 - decay) * jnp.asarray(p, jnp.float32),
        state.ema_params, params)
    ema_in = optax.tree.cast_like(ema, params)

    def target_fn(logits):
      def teacher():
        _, aux = _common.call_loss(fn, loss_fn, ema_in, batch)
        out = jnp.asarray(_common.get_aux(fn, aux, "logits"), jnp.float32)
        checks.check_same_shape(out, logits, "teacher logits",
                                "aux['logits']", fn)
        return _like(jax.lax.stop_gradient(out), logits)

      # The teacher's forward only runs while the KL is active.
      return jax.lax.cond(on, teacher, lambda: jnp.zeros_like(logits))

    weight = jnp.where(on, jnp.float32(lam), 0.0)
    grads, _, penalty = _kl_update(fn, loss_fn, params, batch, target_fn,
                                   weight, temperature)
    new_state = MESAState(count=state.count + 1, ema_params=ema,
                          penalty=penalty)
    return optax.tree.cast_like(grads, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
