"""One jitted LM train step over a ``(data, model)`` mesh, and the eval sums.

The loss runs inside ``jax.shard_map`` over the mesh: the batch of token rows
is split over ``'data'``; the vocabulary (the input embedding ``(V, D)`` and
an untied head ``(D, V)``) is split over ``'model'``; every other parameter
is replicated. Each device embeds its rows with its vocab shard
(``DecoderLM``'s parallel lookup, ``psum`` over ``'model'``), runs the
transformer body, and calls the head with ``vocab_axis_name='model'``; the
summed loss and the target count are ``psum`` ed over ``'data'``, so the
mean loss is the same number as on one device. ``jax.value_and_grad`` of
the mapped function gives the gradients in the parameters' own shardings
(the transpose of the map sums the replicated parameters' cotangents over
the axes where they were replicated); the optimizer update runs on those
sharded arrays under the same ``jax.jit``.

Every step is a pure function of ``(state, batch)``, and batches a pure
function of ``(seed, step)``: a resumed run is bit-identical.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from diversity_jax._src import numerics
from experiments.lm import head as head_lib
from experiments.models.transformer import DecoderLM

DATA, MODEL = "data", "model"


class TrainState(NamedTuple):
  """Everything a step reads and writes (one checkpointed pytree);
  ``selection``: the online batch selection's state (``UDSMemory``), None
  without selection."""
  step: jax.Array
  params: Any
  opt_state: Any
  selection: Any = None


def make_mesh(data: int, model: int) -> jax.sharding.Mesh:
  """``Mesh`` of the first ``data * model`` devices, axes ``('data', 'model')``."""
  devices = np.asarray(jax.devices()[:data * model]).reshape(data, model)
  return jax.sharding.Mesh(devices, (DATA, MODEL))


def _keys(path):
  return [getattr(k, "key", getattr(k, "name", None)) for k in path]


def spec_for(path, leaf) -> P:
  """Partition spec of a parameter (or of its optimizer-state copy) by name:
  ``embedding`` rows and the ``head`` kernel's columns over ``'model'``."""
  keys = _keys(path)
  if jnp.ndim(leaf) == 2 and "embedding" in keys:
    return P(MODEL, None)
  if jnp.ndim(leaf) == 2 and "head" in keys and "kernel" in keys:
    return P(None, MODEL)
  return P()


def tree_specs(tree, mesh):
  """``spec_for`` of every leaf of ``tree`` (params, or a whole TrainState);
  all ``P()`` when ``mesh`` has one ``'model'`` device (nothing to split)."""
  if mesh.shape[MODEL] == 1:
    return jax.tree.map(lambda _: P(), tree)
  return jax.tree_util.tree_map_with_path(spec_for, tree)


def tree_shardings(tree, mesh):
  return jax.tree.map(lambda s: NamedSharding(mesh, s), tree_specs(tree, mesh))


def split_rows(tokens, pad_id: int, ignore_padding: bool):
  """Inputs ``(B, L)``, next-token targets ``(B, L)`` and the loss mask
  (False at padding targets when ``ignore_padding``)."""
  inputs, targets = tokens[:, :-1], tokens[:, 1:]
  mask = targets != pad_id if ignore_padding else jnp.ones(targets.shape, bool)
  return inputs, targets, mask


def local_sums(model, params, tokens, *, opts, pad_id, vocab_axis_name=None,
               eval_only=False):
  """``(loss summed over this device's target tokens, their count)``;
  ``eval_only``: the plain cross-entropy over the non-padding targets."""
  inputs, targets, mask = split_rows(tokens, pad_id,
                                     opts.ignore_padding or eval_only)
  h, w = model.apply({"params": params}, inputs)
  d = h.shape[-1]
  total = head_lib.loss_sum(
      h.reshape(-1, d), w, targets.reshape(-1), mask.reshape(-1),
      layout=model.head_layout, opts=opts, vocab_axis_name=vocab_axis_name,
      eval_only=eval_only)
  return total, jnp.sum(mask).astype(jnp.float32)


def local_model(model: DecoderLM, mesh) -> DecoderLM:
  """``model`` as each device of ``mesh`` runs it: its vocab shard only."""
  shards = mesh.shape[MODEL]
  if model.vocab_size % shards:
    raise ValueError(f"vocab_size {model.vocab_size} is not divisible by the "
                     f"{shards} devices of mesh axis {MODEL!r}")
  if shards == 1:
    return model.clone(vocab_axis_name=None)
  return model.clone(vocab_size=model.vocab_size // shards,
                     vocab_axis_name=MODEL)


def map_rows(local_fn, model: DecoderLM, mesh, out_specs):
  """``f(params, tokens)``: ``local_fn(model, params, tokens,
  vocab_axis_name)`` on each device's rows inside ``jax.shard_map`` over
  ``mesh`` (tokens split over ``'data'``, vocabulary over ``'model'``);
  ``mesh=None`` or a one-device mesh: called directly, ``vocab_axis_name``
  None."""
  if mesh is None or mesh.size == 1:
    return functools.partial(local_fn, model, vocab_axis_name=None)
  inner = local_model(model, mesh)
  body = functools.partial(local_fn, inner,
                           vocab_axis_name=inner.vocab_axis_name)

  def f(params, tokens):
    return jax.shard_map(body, mesh=mesh,
                         in_specs=(tree_specs(params, mesh), P(DATA)),
                         out_specs=out_specs)(params, tokens)

  return f


def make_sums_fn(model: DecoderLM, mesh, opts, pad_id: int, *,
                 eval_only: bool = False):
  """``sums(params, tokens) -> (loss sum, target count)`` over the whole
  batch, computed inside ``jax.shard_map`` over ``mesh`` (see module doc);
  ``mesh=None`` or a one-device mesh: the same without a map."""
  mapped = mesh is not None and mesh.size > 1

  def body(model, params, tokens, vocab_axis_name):
    sums = local_sums(model, params, tokens, opts=opts, pad_id=pad_id,
                      vocab_axis_name=vocab_axis_name, eval_only=eval_only)
    return jax.lax.psum(sums, DATA) if mapped else sums

  return map_rows(body, model, mesh, (P(), P()))


def make_loss_fn(model, mesh, opts, pad_id: int):
  """``loss(params, tokens) -> mean loss per target token`` (f32 scalar)."""
  sums = make_sums_fn(model, mesh, opts, pad_id)

  def loss_fn(params, tokens):
    total, count = sums(params, tokens)
    return total / jnp.maximum(count, 1.0)

  return loss_fn


def make_train_step(loss_fn, tx: optax.GradientTransformation, select=None):
  """``step(state, tokens) -> (state, metrics)``: loss, gradient and update.

  ``select`` (online batch selection, ``experiments.lm.selection``):
  ``select(params, selection_state, tokens) -> (indices, new state,
  metrics)``; the step then trains on ``tokens[indices]`` only, and its
  metrics hold the ``(k,)`` int32 ``'selected'`` indices (a NaN loss when
  the selection found a NaN score: no index is -1 otherwise).
  """
  def train_step(state: TrainState, tokens):
    selection, extra = state.selection, {}
    if select is not None:
      idx, selection, extra = select(state.params, state.selection, tokens)
      tokens = jnp.take(tokens, jnp.maximum(idx, 0), axis=0)
    loss, grads = jax.value_and_grad(loss_fn)(state.params, tokens)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    if select is not None:
      loss = jnp.where(jnp.all(idx >= 0), loss, jnp.nan)
      extra = {**extra, "selected": idx}
    norm = numerics.tree_l2_norm
    metrics = {"loss": loss, "grad_norm": norm(grads),
               "param_norm": norm(params), "update_norm": norm(updates),
               **extra}
    return TrainState(state.step + 1, params, opt_state, selection), metrics
  return train_step


def init_state(model: DecoderLM, tx, seed: int, seq_len: int, mesh,
               selection_init=None):
  """The initial ``TrainState``, placed with its shardings on ``mesh``;
  ``selection_init()`` gives its ``selection`` state (None: none)."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)

  def init():
    params = model.init(jax.random.key(seed), tokens)["params"]
    return TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                      None if selection_init is None else selection_init())

  abstract = jax.eval_shape(init)
  return jax.jit(init, out_shardings=tree_shardings(abstract, mesh))()
