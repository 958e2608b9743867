"""Stacked ensemble members: init, apply and one jitted step for all of them.

The ``M`` members' parameters are one pytree whose leaves have a leading
member axis; ``jax.vmap`` over that axis applies them, and one
``jax.value_and_grad`` of the summed objective (``regularizers``) updates all
of them in one jitted step. The optimizer is element-wise (Adam / SGD), so
running it on the stacked tree equals running it per member.
"""

from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from experiments.ensemble import regularizers


class EnsembleState(NamedTuple):
  """``params`` stacked on axis 0; ``init_params`` the members' start."""
  step: jax.Array
  params: Any
  opt_state: Any
  init_params: Any


def init_members(model, keys: jax.Array, dummy: jax.Array) -> Any:
  """Independently initialized members, stacked: one ``model.init`` per key."""
  return jax.vmap(lambda k: model.init(k, dummy)["params"])(keys)


def share_body(pretrained: Any, members: Any) -> Any:
  """Members starting from ``pretrained`` except their own ``'head'``.

  The model-soup / WiSE-FT setting: every member fine-tunes one pre-trained
  network (so their weights can be averaged); re-drawing each member's
  classifier head breaks the symmetry between members trained on the same
  batches.
  """
  m = jax.tree_util.tree_leaves(members)[0].shape[0]
  tile = lambda leaf: jnp.broadcast_to(leaf, (m,) + leaf.shape)
  shared = jax.tree_util.tree_map(tile, pretrained)
  return {**shared, "head": members["head"]}


def unstack(stacked: Any) -> List[Any]:
  """The list of the members' param trees."""
  m = jax.tree_util.tree_leaves(stacked)[0].shape[0]
  return [jax.tree_util.tree_map(lambda l, i=i: l[i], stacked)
          for i in range(m)]


def apply_members(model, stacked: Any, x: jax.Array):
  """``(logits (M, N, K), features (M, N, D))`` of every member on ``x``."""
  return jax.vmap(lambda p: model.apply({"params": p}, x,
                                        return_features=True))(stacked)


def make_loss_fn(model, regularizer: Optional[Callable], weight: float):
  """``loss_fn(params, batch, step, init_params) -> (loss, aux)`` of all members.

  ``batch['x']`` is ``(E, B, ...)`` and ``batch['y']`` ``(E, B)`` (one batch
  per training domain, shared by every member); the objective is
  ``sum_m CE_m + M * weight * regularizer(ctx)``. ``aux['metrics']``: the
  members' mean cross-entropy, the penalty and the ensemble's accuracy
  (``experiments.recipe.Recipe.loss_fn``, with the members' initial params
  as the extra state).
  """
  apply_fn = lambda p, x: model.apply({"params": p}, x)
  feature_fn = lambda p, x: model.apply({"params": p}, x,
                                        return_features=True)[1]

  def loss_fn(params, batch, step, init_params):
    del step
    x, y = batch["x"], batch["y"]
    x = jnp.reshape(x, (-1,) + x.shape[y.ndim:])
    y = jnp.reshape(y, (-1,))
    logits, features = apply_members(model, params, x)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.broadcast_to(y, logits.shape[:2]))      # (M, N)
    member_ce = jnp.mean(ce, axis=1)
    m = logits.shape[0]
    if weight:
      ctx = regularizers.Context(logits, features, y, x, params, init_params,
                                 apply_fn, feature_fn)
      penalty = regularizer(ctx)
    else:
      penalty = jnp.zeros((), jnp.float32)
    loss = jnp.sum(member_ce) + m * weight * penalty
    ens = jnp.argmax(jax.nn.logsumexp(jax.nn.log_softmax(logits), axis=0), -1)
    metrics = {"member_ce": jnp.mean(member_ce), "penalty": penalty,
               "accuracy": jnp.mean(ens == y)}
    return loss, {"metrics": metrics}

  return loss_fn


def make_train_step(model, tx: optax.GradientTransformation,
                    regularizer: Optional[Callable], weight: float):
  """One step of all members: ``step(state, batch) -> (state, metrics)``.

  The same objective as :func:`make_loss_fn` (``experiments.trainer`` runs
  that one through a recipe, with checkpoints).
  """
  loss_fn = make_loss_fn(model, regularizer, weight)

  def step(state: EnsembleState, batch):
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch, state.step, state.init_params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return EnsembleState(state.step + 1, params, opt_state,
                         state.init_params), {"loss": loss, **aux["metrics"]}

  return step


def init_state(params: Any, tx: optax.GradientTransformation
               ) -> EnsembleState:
  return EnsembleState(jnp.zeros((), jnp.int32), params, tx.init(params),
                       params)
