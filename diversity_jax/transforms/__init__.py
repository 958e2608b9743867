"""Training rules as optax gradient transformations (`diversity_jax.transforms`).

Every rule is a factory returning ``optax.GradientTransformationExtraArgs``
that turns the trainer's gradient into the rule's update direction; compose
it with an optimizer: ``optax.chain(rule, optax.sgd(...))``. One jitted step
holds everything (the rule's extra forward/backward passes included).

The extra-args protocol (one protocol for every rule)
-----------------------------------------------------
The trainer's step is always::

  loss, grads = jax.value_and_grad(loss_fn)(params, batch)
  # or, for a loss_fn returning (loss, aux):
  # (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params,
  #                                                                 batch)
  updates, opt_state = tx.update(grads, opt_state, params,
                                 loss_fn=loss_fn, batch=batch, key=step_key)
  params = optax.apply_updates(params, updates)

* ``loss_fn(params, batch)`` is pure (no mutable BatchNorm state) and
  returns either the scalar loss or a pair ``(scalar_loss, aux)``; every
  rule tells the two apart at trace time. The rules that need only the loss
  (:func:`sam`, :func:`gsam`, :func:`gradient_norm_penalty`,
  :func:`hessian_alignment`; :func:`every_k_steps` passes everything to its
  rule) accept both and never read ``aux``. The others need ``aux`` as a
  dict and raise a ``TypeError`` naming the key for a scalar ``loss_fn``:
  :func:`saf` and :func:`mesa` need ``aux['logits']`` (``batch_shape +
  (K,)``), :func:`udim` needs ``aux['per_example_loss']``
  (``batch_shape``).
* ``batch`` is any pytree ``loss_fn`` accepts (a dict, a tuple ``(x, y)``,
  an array). Rules that read it need a dict with their keys: :func:`saf`
  ``'index'`` (int ids in the training set, for its per-example buffer),
  :func:`udim` ``'x'`` (floating inputs, which it perturbs).
* ``grads`` is the gradient of ``loss_fn`` at ``params``; rules reuse it as
  their first gradient. (SAF/MESA recompute the gradient fused with their
  KL term in one backward; the trainer's gradient is then unused and XLA
  eliminates it under ``jit``.)
* ``key``: this step's PRNG key, ``jax.random.fold_in(base_key, step)``.
  Only Hutchinson uses it; the others ignore it.
* ``value`` (optional; optax's name for the current loss, as
  ``optax.contrib.reduce_on_plateau`` takes it): the scalar loss at
  ``params``. :func:`sam` and :func:`gsam` use it for ``state.sharpness``
  instead of a forward at ``params`` (which XLA otherwise merges with the
  trainer's forward under ``jit``); :func:`every_k_steps` computes it
  outside its ``lax.cond``, where that merge happens.
* Every rule accepts and ignores extra arguments it does not use
  (``optax.chain`` passes all of them to every member); a missing required
  one raises a ``TypeError`` naming it at trace time.
* Multi-domain rules (:func:`hessian_alignment`): every ``batch`` leaf has a
  leading domain axis ``E`` (``'x'``: ``(E, B, ...)``, ``'y'``: ``(E, B)``).
  ``loss_fn`` must accept both the stacked batch (the trainer's loss, the
  mean of the per-domain risks) and one domain's ``(B, ...)`` batch: the rule
  computes per-domain risks as ``jax.vmap(lambda b: loss_fn(params, b))
  (batch)``.
* Head selection (``head=``, for :func:`hessian_alignment` and :func:`udim`):
  a top-level key of the params dict (``'head'``), a key path tuple, or a
  callable ``params -> pytree of bools``.
* State: a ``NamedTuple`` of arrays (checkpointable by orbax); rules that
  measure something expose it there (``state.sharpness``, ``state.penalty``,
  ``state.inconsistency``). With ``optax.chain`` the rule's state is
  ``opt_state[0]``; optax's tree utilities find a field by name anywhere in
  the chain: ``optax.tree_utils.tree_get(opt_state, 'sharpness')``.
* Data parallelism: under ``jax.jit`` with sharded arrays every rule gives
  the single-device update. :func:`sam` and :func:`gsam` also run inside
  ``shard_map`` with ``batch_axis_name`` (``m_sharpness`` for per-shard
  perturbations).
* Mixed precision (the SAM family: :func:`sam`, :func:`gsam`,
  :func:`every_k_steps`, :func:`gradient_norm_penalty`): params and
  gradients may be bf16 (and ``loss_fn`` may compute in bf16). Norms,
  perturbations ``w + e`` and the combinations of gradients are computed in
  f32, with norms scaled so no gradient magnitude that bf16 holds overflows
  or underflows them; ``loss_fn`` is called with params in their own dtypes
  and every update comes back in the gradients' dtypes.

The domain-generalization penalties (IRM, V-REx, CORAL, Fishr) are pure
functions used inside ``loss_fn``.
"""

from diversity_jax.transforms._dg_penalties import coral_penalty
from diversity_jax.transforms._dg_penalties import fishr_penalty
from diversity_jax.transforms._dg_penalties import fishr_penalty_from_variances
from diversity_jax.transforms._dg_penalties import fishr_variances
from diversity_jax.transforms._dg_penalties import irm_penalty
from diversity_jax.transforms._dg_penalties import vrex_penalty
from diversity_jax.transforms._every_k import EveryKStepsState
from diversity_jax.transforms._every_k import every_k_steps
from diversity_jax.transforms._gradient_norm import GradientNormPenaltyState
from diversity_jax.transforms._gradient_norm import gradient_norm_penalty
from diversity_jax.transforms._gradient_norm import hessian_vector_product
from diversity_jax.transforms._gsam import GSAMState
from diversity_jax.transforms._gsam import gsam
from diversity_jax.transforms._hessian_alignment import HessianAlignmentState
from diversity_jax.transforms._hessian_alignment import hessian_alignment
from diversity_jax.transforms._hessian_alignment import hutchinson_diagonal
from diversity_jax.transforms._saf import MESAState
from diversity_jax.transforms._saf import SAFState
from diversity_jax.transforms._saf import mesa
from diversity_jax.transforms._saf import saf
from diversity_jax.transforms._saf import trajectory_kl
from diversity_jax.transforms._sam import SAMState
from diversity_jax.transforms._sam import sam
from diversity_jax.transforms._udim import UDIMState
from diversity_jax.transforms._udim import udim
from diversity_jax.transforms._udim import udim_inconsistency

__all__ = [
    "EveryKStepsState",
    "GSAMState",
    "GradientNormPenaltyState",
    "HessianAlignmentState",
    "MESAState",
    "SAFState",
    "SAMState",
    "UDIMState",
    "coral_penalty",
    "every_k_steps",
    "fishr_penalty",
    "fishr_penalty_from_variances",
    "fishr_variances",
    "gradient_norm_penalty",
    "gsam",
    "hessian_alignment",
    "hessian_vector_product",
    "hutchinson_diagonal",
    "irm_penalty",
    "mesa",
    "saf",
    "sam",
    "trajectory_kl",
    "udim",
    "udim_inconsistency",
    "vrex_penalty",
]
