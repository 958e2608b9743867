"""The SAM family's shared ascent: the perturbation ``e(w)`` and ``grad L(w+e)``.

:func:`~diversity_jax.transforms.sam` and
:func:`~diversity_jax.transforms.gsam` perturb the weights the same way and
differ only in the radius and in how they combine the two gradients::

  T   = |w| + eta                 (ASAM, on the leaves adaptive_mask selects;
                                   T = 1 elsewhere and for SAM)
  e   = rho * T^2 g / ||T g||_2   (g = the trainer's gradient)
  g_p = grad L(w + e)

Mixed precision: ``g``, ``T``, the norm, ``e`` and ``w + e`` are computed in
f32 (the norm scaled so bf16 gradients of any magnitude neither overflow nor
underflow); ``w + e`` is cast to the params' dtypes before ``loss_fn`` sees
it, so ``loss_fn`` runs in its own precision; ``g_p`` comes back as f32.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.transforms import _common


def _vma(x) -> frozenset:
  """Mesh axes over which ``x`` is device-varying inside ``shard_map``."""
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  if mat is not None:
    return frozenset(getattr(mat, "varying", ()))
  return frozenset(getattr(aval, "vma", ()))


def varies(tree, axis_name) -> bool:
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


def _weights_only(params):
  """ASAM's authors' selection: every leaf but the biases gets ``T_w``.

  A leaf is a bias when its own key contains ``'bias'`` (Flax, Equinox,
  PyTorch-style names) or is ``'b'`` (Haiku).
  """
  def is_weight(path):
    name = str(_common.key_of(path[-1])) if path else ""
    return not ("bias" in name.lower() or name == "b")

  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  return jax.tree_util.tree_unflatten(treedef,
                                      [is_weight(kp) for kp, _ in flat])


class AscentResult(NamedTuple):
  """One ascent. Under ``batch_axis_name`` every field is per shard except
  ``g`` and ``norm`` without ``m_sharpness`` (built from the global gradient).

  Attributes:
    g: f32 gradient that built ``e``.
    perturbed_grads: f32 ``grad L(w + e)``.
    loss: ``L(w)``.
    perturbed_loss: ``L(w + e)``.
    norm: ``||T g||_2``.
  """
  g: Any
  perturbed_grads: Any
  loss: jax.Array
  perturbed_loss: jax.Array
  norm: jax.Array


@dataclasses.dataclass(frozen=True)
class Ascent:
  """The perturbation options of a SAM-family rule, validated once.

  ``Ascent(fn, adaptive=..., ...)(grads, params, loss_fn, batch, rho,
  value)`` computes one :class:`AscentResult` (``value``: the loss at
  ``params`` if the caller has it, else one forward); ``fn`` names the rule
  in errors.
  ``uses_grad_scale``: the rule uses ``g``'s magnitude, not only its
  direction (GSAM); under ``batch_axis_name`` an already-reduced ``grads``
  is then recomputed per shard, so ``g`` is the mean of the per-shard
  gradients whatever the trainer's reduction.
  """
  fn: str
  adaptive: bool = False
  eta: float = 0.01
  adaptive_mask: Any = None
  batch_axis_name: Optional[str] = None
  m_sharpness: bool = False
  uses_grad_scale: bool = False

  def __post_init__(self):
    fn = self.fn
    checks.check_nonnegative(self.eta, "eta", fn)
    if self.m_sharpness and self.batch_axis_name is None:
      checks._fail(fn, "`m_sharpness=True` requires `batch_axis_name` (the "
                   "perturbation is computed per shard of that axis)")
    if self.adaptive_mask is not None and not self.adaptive:
      checks._fail(fn, "`adaptive_mask` selects the leaves that get ASAM's "
                   "T_w and requires `adaptive=True`")
    if isinstance(self.adaptive_mask, str):
      checks.check_choice(self.adaptive_mask, ("weights",), "adaptive_mask",
                          fn)
      object.__setattr__(self, "adaptive_mask", _weights_only)

  def _t_mask(self, params):
    if self.adaptive_mask is None:
      return jax.tree_util.tree_map(lambda _: True, params)
    return _common.leaf_mask(self.fn, "adaptive_mask", self.adaptive_mask,
                             params)

  def check_params(self, params) -> None:
    """Init-time check of ``adaptive_mask`` against the params."""
    if self.adaptive:
      self._t_mask(params)

  def mean(self, tree):
    """``pmean`` over ``batch_axis_name`` (identity without it)."""
    if self.batch_axis_name is None:
      return tree
    return jax.lax.pmean(tree, self.batch_axis_name)

  def __call__(self, updates, params, loss_fn, batch, rho,
               value=None) -> AscentResult:
    fn, axis = self.fn, self.batch_axis_name
    _common.require_protocol(fn, params, loss_fn, batch)
    _common.check_grads_match(fn, updates, params)

    def loss_at(p):
      return _common.call_loss(fn, loss_fn, p, batch)

    g = _common.f32(updates)
    if axis is not None:
      if not varies(g, axis) and (self.m_sharpness or self.uses_grad_scale):
        # Already-reduced gradients (shard_map's check_vma autodiff psums the
        # gradient of replicated params, so their scale is the trainer's):
        # recompute the per-shard gradient.
        g = _common.f32(jax.grad(lambda p: loss_at(p)[0])(
            _varying(params, axis)))
      if varies(g, axis) and not self.m_sharpness:
        g = jax.lax.pmean(g, axis)
    if self.adaptive:
      t = jax.tree_util.tree_map(
          lambda w, m: jnp.where(m, jnp.abs(jnp.asarray(w, jnp.float32))
                                 + self.eta, 1.0), params,
          self._t_mask(params))
      tg = jax.tree_util.tree_map(jnp.multiply, t, g)
      norm = numerics.tree_l2_norm(tg)
      direction = jax.tree_util.tree_map(jnp.multiply, t, tg)
    else:
      norm = numerics.tree_l2_norm(g)
      direction = g
    scale = numerics.safe_divide(jnp.asarray(rho, jnp.float32), norm)
    adv_params = _common.perturb(params, direction, scale)
    if axis is not None:
      # Per-shard gradient at w + e (varying params: no implicit psum).
      adv_params = _varying(adv_params, axis)
    (adv_loss, _), adv_grads = jax.value_and_grad(loss_at, has_aux=True)(
        adv_params)
    if value is None:            # XLA merges it with the trainer's forward
      value, _ = loss_at(params)
    elif jnp.ndim(value) != 0:
      checks._fail(fn, f"the extra argument `value` must be the scalar loss "
                   f"at params, got shape {jnp.shape(value)}")
    return AscentResult(g=g, perturbed_grads=_common.f32(adv_grads),
                        loss=jnp.asarray(value, jnp.float32),
                        perturbed_loss=adv_loss, norm=norm)

  def reduced_norm(self, norm):
    """``norm`` averaged over shards when it is per shard."""
    if self.batch_axis_name is not None and varies(norm,
                                                   self.batch_axis_name):
      return jax.lax.pmean(norm, self.batch_axis_name)
    return norm
