"""Sharpness-Aware Minimization (SAM) and Adaptive SAM (ASAM) as one rule.

Per step (``g = grads``, the gradient the trainer already computed at ``w``)::

  T      = |w| + eta            (ASAM, on the leaves adaptive_mask selects;
                                 T = 1 elsewhere and for SAM)
  e      = rho * T^2 g / ||T g||_2
  update = grad L(w + e)        (one extra forward + backward)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax.transforms import _ascent


class SAMState(NamedTuple):
  """State of :func:`sam` (arrays only, checkpointable).

  Attributes:
    sharpness: ``L(w + e) - L(w)`` of the last step (the SAM sharpness,
      Foret et al. 2021, Eq. 1).
    perturbed_loss: ``L(w + e)`` of the last step.
    grad_norm: ``||T g||_2`` of the last step.
  """
  sharpness: jax.Array
  perturbed_loss: jax.Array
  grad_norm: jax.Array


def sam(rho: float = 0.05, *, adaptive: bool = False, eta: float = 0.01,
        adaptive_mask: Any = None,
        batch_axis_name: Optional[str] = None,
        m_sharpness: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""Sharpness-Aware Minimization (SAM) / Adaptive SAM (ASAM) gradient.

  Replaces the gradient ``g = grad L(w)`` by the gradient at the worst-case
  point of a ``rho``-ball (first-order solution of the inner max)::

    e(w)  = rho * T_w^2 g / ||T_w g||_2          (SAM: T_w = I; Foret Eq. 2)
    g_SAM = grad L(w + e(w))                     (Foret Eq. 3)

  ASAM (``adaptive=True``, Kwon et al. 2021, Eq. 9 and Sec. 3.3) uses the
  element-wise normalization operator ``T_w = |w| + eta`` on the leaves that
  ``adaptive_mask`` selects and ``T = 1`` on the others: ``None`` (default)
  selects every leaf (with ``eta=0`` this is the davda54/sam variant);
  ``'weights'`` selects every leaf but the biases, as the authors' code does
  (``T_w`` on parameters named ``weight``, i.e. weight matrices,
  convolution kernels and normalization scales; ``T = 1`` on biases); a
  pytree of bools with the structure of the params, or a callable ``params
  -> pytree of bools`` (as ``optax.masked`` takes), selects any other set.
  A leaf outside the mask is still perturbed, by ``rho g / ||T_w g||``.

  ``loss_fn(params, batch)`` may return the scalar loss alone (then
  ``batch`` is any pytree ``loss_fn`` accepts) or ``(loss, aux)``; ``aux``
  is not used. Compose with an optimizer: ``optax.chain(sam(0.05),
  optax.sgd(0.1))``. Cost: the trainer's forward+backward plus one
  forward+backward at ``w + e`` plus one forward at ``w`` (for
  ``state.sharpness``; identical to the trainer's forward, so XLA's CSE
  removes it under ``jit``; none when the extra argument ``value``, the
  loss at ``w``, is passed): 2 passes. The diagnostics are readable from a
  chain's state with ``optax.tree_utils.tree_get(opt_state, 'sharpness')``
  (likewise ``'perturbed_loss'``, ``'grad_norm'``). :func:`every_k_steps`
  runs it every ``k`` steps (LookSAM); :func:`gsam` adds the surrogate-gap
  ascent.

  Relation to ``optax.contrib.sam``: both compute ``w - lr * grad L(w +
  e(w))`` with ``e = rho g / ||g||``. ``optax.contrib.sam(optimizer,
  adv_optimizer)`` wraps an outer optimizer and an adversarial one and,
  by default, takes ``sync_period = 2`` calls to ``update`` per SAM step:
  the first moves the params to ``w + e`` (the training loop then sees and
  evaluates the perturbed params), the second takes the gradient there and
  steps from the cached ``w``; its ``opaque_mode`` runs the adversarial
  step inside one ``update`` from a ``grad_fn(params, i)`` extra argument.
  :func:`sam` is a gradient transformation placed in front of any optimizer
  in ``optax.chain``: one ``update`` per step, the perturbed gradient
  computed inside it from ``loss_fn`` and ``batch``, the params always the
  unperturbed ``w``. It adds ASAM (``adaptive``), m-sharpness, a zero-safe
  ``e`` (``g = 0`` gives ``e = 0``, where ``optax.contrib.normalize`` divides
  by zero) and ``state.sharpness`` ``L(w + e) - L(w)``.

  m-sharpness (Foret Sec. 4.1): with ``batch_axis_name`` set, the rule runs
  inside ``shard_map``/``pmap`` over that axis and ``grads`` are the
  per-shard (local) gradients. With ``m_sharpness=True`` each shard builds its
  own ``e`` from its local gradient (m = per-device batch size); otherwise
  ``e`` uses the ``pmean`` of the local gradients (plain SAM, data-parallel).
  The returned update is the ``pmean`` of the per-shard perturbed gradients
  in both cases. ``grads`` may be per-shard (device-varying) or already
  reduced (``shard_map``'s default ``check_vma=True`` autodiff ``psum``\ s the
  gradient of replicated params); only its direction is used, and with
  ``m_sharpness`` an already-reduced ``grads`` makes the rule recompute the
  per-shard gradient (one extra backward). Without ``batch_axis_name``
  (plain ``jit`` with sharded arrays) the gradient is global and
  ``m_sharpness`` must be False.

  Args:
    rho: radius of the neighbourhood (>= 0; 0 gives plain gradients).
    adaptive: use ASAM's scale-invariant ``T_w = |w| + eta``.
    eta: ASAM's ``eta`` (>= 0), ignored unless ``adaptive``.
    adaptive_mask: the leaves that get ``T_w`` (requires ``adaptive``):
      ``None`` (all), ``'weights'`` (all but biases, the authors' choice), a
      pytree of bools like the params, or a callable returning one.
    batch_axis_name: mapped axis name for data parallelism (see above).
    m_sharpness: per-shard perturbation (requires ``batch_axis_name``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs the
    extra arguments ``loss_fn`` and ``batch`` (protocol in
    ``diversity_jax.transforms``) and whose state is :class:`SAMState`.

  Example:
    One SAM step with a scalar ``loss_fn``, then the same step with
    ``optax.contrib.sam`` (two ``update`` calls, ascent then descent):

    >>> import jax, jax.numpy as jnp, optax
    >>> from diversity_jax import transforms
    >>> def loss_fn(w, batch):
    ...   x, y = batch
    ...   return jnp.mean((x @ w - y) ** 2)
    >>> w = jnp.array([0.5, -0.3])
    >>> batch = (jnp.array([[1.0, 2.0], [0.5, -1.0]]), jnp.array([1.0, 0.0]))
    >>> tx = optax.chain(transforms.sam(0.05), optax.sgd(0.1))
    >>> state = tx.init(w)
    >>> g = jax.grad(loss_fn)(w, batch)
    >>> u, state = tx.update(g, state, w, loss_fn=loss_fn, batch=batch)
    >>> w_sam = optax.apply_updates(w, u)
    >>> print(optax.tree_utils.tree_get(state, 'sharpness') > 0)
    True
    >>> opt = optax.contrib.sam(
    ...     optax.sgd(0.1),
    ...     optax.chain(optax.contrib.normalize(), optax.sgd(0.05)))
    >>> s, p = opt.init(w), w
    >>> for _ in range(2):   # p is w + e after the first call
    ...   u, s = opt.update(jax.grad(loss_fn)(p, batch), s, p)
    ...   p = optax.apply_updates(p, u)
    >>> print(jnp.allclose(w_sam, p, atol=1e-6))
    True

  References:
    Foret, Kleiner, Mobahi and Neyshabur, `Sharpness-Aware Minimization for
    Efficiently Improving Generalization <https://arxiv.org/abs/2010.01412>`_,
    ICLR 2021: Eq. 1 (the SAM objective, whose ``max_e L(w + e) - L(w)`` is
    ``state.sharpness``), Eq. 2 (``e(w)``; ``p = 2`` gives
    ``rho g / ||g||``), Eq. 3 (gradient at ``w + e(w)``, second-order terms
    dropped), Sec. 4.1 (m-sharpness); equation numbers of arXiv:2010.01412.
    Kwon, Kim, Park and Choi, `ASAM: Adaptive Sharpness-Aware Minimization
    for Scale-Invariant Learning of Deep Neural Networks
    <https://arxiv.org/abs/2102.11600>`_, ICML 2021, Eq. 9 (the ``p = 2``
    adaptive perturbation ``rho T_w^2 g / ||T_w g||``) with ``T_w = |w| +
    eta`` (Sec. 3.3); equation numbers of arXiv:2102.11600.
    Checked against the authors' code, SamsungLabs/ASAM ``asam.py``
    (``SAM.ascent_step``: ``rho g / (||g|| + 1e-16)``; ``ASAM.ascent_step``:
    ``T_w`` on parameters whose name contains ``'weight'``, ``T = 1`` on the
    others; ``rho = 0.5``, ``eta = 0.01``), by
    ``tests/transforms/test_exactness.py`` (the step against a NumPy
    statement of it, ``adaptive_mask='weights'`` against the authors' rule
    on a model with biases, and against ``optax.contrib.sam``).
  """
  fn = "sam"
  checks.check_nonnegative(rho, "rho", fn)
  ascent = _ascent.Ascent(fn, adaptive=adaptive, eta=eta,
                          adaptive_mask=adaptive_mask,
                          batch_axis_name=batch_axis_name,
                          m_sharpness=m_sharpness)

  def init_fn(params):
    ascent.check_params(params)
    z = jnp.zeros((), jnp.float32)
    return SAMState(sharpness=z, perturbed_loss=z, grad_norm=z)

  def update_fn(updates, state, params=None, *, loss_fn=None, batch=None,
                value=None, **extra):
    del state, extra
    a = ascent(updates, params, loss_fn, batch, rho, value)
    adv_grads, sharpness, adv_loss = ascent.mean(
        (a.perturbed_grads, a.perturbed_loss - a.loss, a.perturbed_loss))
    new_state = SAMState(sharpness=sharpness, perturbed_loss=adv_loss,
                         grad_norm=ascent.reduced_norm(a.norm))
    return optax.tree.cast_like(adv_grads, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
