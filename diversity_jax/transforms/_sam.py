"""Sharpness-Aware Minimization (SAM) and Adaptive SAM (ASAM) as one rule.

Per step (``g = grads``, the gradient the trainer already computed at ``w``)::

  T      = |w| + eta            (ASAM; T = 1 for SAM)
  e      = rho * T^2 g / ||T g||_2
  update = grad L(w + e)        (one extra forward + backward)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.transforms import _common


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


def _vma(x) -> frozenset:
  """Mesh axes over which ``x`` is device-varying inside ``shard_map``."""
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  if mat is not None:
    return frozenset(getattr(mat, "varying", ()))
  return frozenset(getattr(aval, "vma", ()))


def _varies(tree, axis_name) -> bool:
  """True when the leaves are device-varying over ``axis_name`` (shard_map)."""
  leaves = jax.tree_util.tree_leaves(tree)
  return bool(leaves) and all(axis_name in _vma(l) for l in leaves)


def _varying(tree, axis_name):
  """Marks leaves device-varying so their gradients stay per-shard."""
  def one(x):
    if axis_name in _vma(x):
      return x
    try:
      return jax.lax.pcast(x, axis_name, to="varying")
    except (ValueError, NameError, TypeError):  # check_vma=False / pmap
      return x
  return jax.tree_util.tree_map(one, tree)


def sam(rho: float = 0.05, *, adaptive: bool = False, eta: float = 0.01,
        batch_axis_name: Optional[str] = None,
        m_sharpness: bool = False) -> optax.GradientTransformationExtraArgs:
  r"""Sharpness-Aware Minimization (SAM) / Adaptive SAM (ASAM) gradient.

  Replaces the gradient ``g = grad L(w)`` by the gradient at the worst-case
  point of a ``rho``-ball (first-order solution of the inner max)::

    e(w)  = rho * T_w^2 g / ||T_w g||_2          (SAM: T_w = I; Foret Eq. 2)
    g_SAM = grad L(w + e(w))                     (Foret Eq. 3)

  ASAM (``adaptive=True``, Kwon et al. 2021, Eq. 9 and Sec. 3.3) uses the
  element-wise normalization operator ``T_w = |w| + eta``. The authors' code
  (SamsungLabs/ASAM) applies ``T_w`` to weight matrices only and uses 1 for
  biases; here it applies to every leaf (pass the biases through
  ``optax.masked`` if that matters). ``eta=0`` gives the davda54/sam variant.

  Compose with an optimizer: ``optax.chain(sam(0.05), optax.sgd(0.1))``.
  Cost: the trainer's forward+backward plus one forward+backward at
  ``w + e`` plus one forward at ``w`` (for ``state.sharpness``; identical to
  the trainer's forward, so XLA's CSE removes it under ``jit``): 2 passes.

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
  per-shard gradient (one extra backward). Without ``batch_axis_name`` (plain ``jit`` with sharded
  arrays) the gradient is global and ``m_sharpness`` must be False.

  Args:
    rho: radius of the neighbourhood (>= 0; 0 gives plain gradients).
    adaptive: use ASAM's scale-invariant ``T_w = |w| + eta``.
    eta: ASAM's ``eta`` (>= 0), ignored unless ``adaptive``.
    batch_axis_name: mapped axis name for data parallelism (see above).
    m_sharpness: per-shard perturbation (requires ``batch_axis_name``).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` whose ``update`` needs the
    extra arguments ``loss_fn`` and ``batch`` (protocol in
    ``diversity_jax.transforms``) and whose state is :class:`SAMState`.

  Example:
    >>> import jax, jax.numpy as jnp, optax
    >>> from diversity_jax import transforms
    >>> def loss_fn(p, b):
    ...   logits = b['x'] @ p['w']
    ...   per = optax.softmax_cross_entropy_with_integer_labels(logits, b['y'])
    ...   return per.mean(), {'logits': logits, 'per_example_loss': per}
    >>> params = {'w': jnp.ones((3, 2))}
    >>> batch = {'x': jnp.ones((4, 3)), 'y': jnp.array([0, 1, 0, 1])}
    >>> tx = optax.chain(transforms.sam(0.05), optax.sgd(0.1))
    >>> state = tx.init(params)
    >>> (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
    >>> u, state = tx.update(g, state, params, loss_fn=loss_fn, batch=batch)

  References:
    Foret, Kleiner, Mobahi and Neyshabur, `Sharpness-Aware Minimization for
    Efficiently Improving Generalization <https://arxiv.org/abs/2010.01412>`_,
    ICLR 2021: Eq. 1 (the SAM objective, whose ``max_e L(w + e) - L(w)`` is
    ``state.sharpness``), Eq. 2 (``e(w)``; ``p = 2`` gives
    ``rho g / ||g||``), Eq. 3 (gradient at ``w + e(w)``, second-order terms
    dropped), Sec. 4.1 (m-sharpness).
    Kwon, Kim, Park and Choi, `ASAM: Adaptive Sharpness-Aware Minimization
    for Scale-Invariant Learning <https://arxiv.org/abs/2102.11600>`_, ICML
    2021, Eq. 9 (the ``p = 2`` adaptive perturbation ``rho T_w^2 g /
    ||T_w g||``) with ``T_w = |w| + eta`` (Sec. 3.3).
    The equation numbers are those of the arXiv versions and could not be
    re-read here (the stored copies hold only the abstracts); the
    perturbations and defaults were checked against the authors' code:
    SamsungLabs/ASAM ``asam.py`` (``SAM.ascent_step``: ``rho g / (||g|| +
    1e-16)``; ``ASAM.ascent_step``: ``T_w`` on ``'weight'`` tensors only,
    ``rho = 0.5``, ``eta = 0.01``).
  """
  fn = "sam"
  checks.check_nonnegative(rho, "rho", fn)
  checks.check_nonnegative(eta, "eta", fn)
  if m_sharpness and batch_axis_name is None:
    checks._fail(fn, "`m_sharpness=True` requires `batch_axis_name` (the "
                 "perturbation is computed per shard of that axis)")

  def init_fn(params):
    del params
    z = jnp.zeros((), jnp.float32)
    return SAMState(sharpness=z, perturbed_loss=z, grad_norm=z)

  def update_fn(updates, state, params=None, *, loss_fn=None, batch=None,
                **extra):
    del state, extra
    _common.require_protocol(fn, params, loss_fn, batch)
    _common.check_grads_match(fn, updates, params)
    g = _common.f32(updates)
    if batch_axis_name is not None:
      if _varies(g, batch_axis_name):
        if not m_sharpness:
          g = jax.lax.pmean(g, batch_axis_name)
      elif m_sharpness:
        # Already-reduced gradients (shard_map's check_vma autodiff psums the
        # gradient of replicated params): recompute the per-shard gradient.
        g = _common.f32(jax.grad(
            lambda p: _common.call_loss(fn, loss_fn, p, batch)[0])(
                _varying(params, batch_axis_name)))
    if adaptive:
      t = jax.tree_util.tree_map(
          lambda w: jnp.abs(jnp.asarray(w, jnp.float32)) + eta, params)
      tg = jax.tree_util.tree_map(jnp.multiply, t, g)
      norm = numerics.tree_l2_norm(tg)
      direction = jax.tree_util.tree_map(jnp.multiply, t, tg)
    else:
      norm = numerics.tree_l2_norm(g)
      direction = g
    scale = numerics.safe_divide(jnp.asarray(rho, jnp.float32), norm)
    adv_params = _common.perturb(params, direction, scale)

    def value(p):
      return _common.call_loss(fn, loss_fn, p, batch)

    if batch_axis_name is not None:
      # Per-shard gradient at w + e (varying params: no implicit psum).
      adv_params = _varying(adv_params, batch_axis_name)
    (adv_loss, _), adv_grads = jax.value_and_grad(value, has_aux=True)(
        adv_params)
    loss, _ = value(params)
    sharpness = adv_loss - loss
    adv_grads = _common.f32(adv_grads)
    if batch_axis_name is not None:
      adv_grads = jax.lax.pmean(adv_grads, batch_axis_name)
      sharpness = jax.lax.pmean(sharpness, batch_axis_name)
      adv_loss = jax.lax.pmean(adv_loss, batch_axis_name)
      if _varies(norm, batch_axis_name):
        norm = jax.lax.pmean(norm, batch_axis_name)
    new_state = SAMState(sharpness=sharpness, perturbed_loss=adv_loss,
                         grad_norm=norm)
    return _common.cast_like(adv_grads, updates), new_state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
