"""The generic training loop: one :class:`~experiments.recipe.Recipe`, one run.

``train_one(recipe, config, workdir, mesh)`` trains what the recipe
describes and knows nothing about the study that built it (domain
generalization, noisy labels, ensembles): it reads only the run fields of
``config`` (``num_steps``, ``eval_every``, ``log_every``,
``checkpoint_every``, ``keep_checkpoints``, ``seed``, ``progress_bar``).

The train step follows the transforms' extra-args protocol (see
:mod:`experiments.recipe`). It is jit-compiled once, data parallel over a 1-D
``jax.sharding.Mesh`` (axis ``'data'``, :func:`make_mesh`) of the devices:
params / optimizer state / extra state replicated, every batch sharded over
its batch axis (axis 1). Batches are a pure function of the step and the step
key is ``fold_in(key(seed), step)``, so a resumed run is bit-identical to an
uninterrupted one. Checkpoints (``checkpoints/``), ``metrics.jsonl``,
TensorBoard events (``tensorboard/``), ``config.json`` and ``result.json``
go to the run directory.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import checkpointing
from experiments import config_validation
from experiments import metrics as metrics_lib
from experiments.recipe import Recipe


class TrainState(NamedTuple):
  """Everything a step reads and writes (checkpointed as one pytree).

  ``extra``: the recipe's state across steps (Fishr's EMA of the per-domain
  gradient variances, ``penalties.FishrEMAState``), ``()`` for none.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  extra: Any = ()


class NonFiniteLossError(FloatingPointError):
  """The loss or the parameters became NaN / inf (last good checkpoint kept)."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during training; says which checkpoint a rerun resumes from."""


class WorkdirError(OSError):
  """The run directory cannot be created or written (read-only, full, ...)."""


_NORM_NAMES = {"update_norm": "update norm", "grad_norm": "gradient norm"}


def make_mesh(config) -> jax.sharding.Mesh:
  """A 1-D mesh (axis ``'data'``) of ``config.num_devices`` (0: all)."""
  n = config.num_devices or jax.device_count()
  return jax.sharding.Mesh(np.array(jax.devices()[:n]), ("data",))


def _rule_scalars(opt_state) -> Dict[str, jax.Array]:
  """Scalars a rule exposes in its state (sharpness, penalty, inconsistency)."""
  found = {}

  def visit(node):
    if isinstance(node, tuple):
      for name in ("sharpness", "penalty", "inconsistency"):
        value = getattr(node, name, None)
        if value is not None and jnp.ndim(value) == 0:
          found.setdefault(f"rule_{name}", value)
      for child in node:
        visit(child)

  visit(opt_state)
  return found


def make_train_step(recipe: Recipe, base_key):
  """``(TrainState, batch) -> (TrainState, metrics)``, to be jitted."""
  def train_step(state: TrainState, batch):
    step_loss = functools.partial(_loss_at, recipe.loss_fn, state.step,
                                  state.extra)
    (loss, aux), grads = jax.value_and_grad(step_loss, has_aux=True)(
        state.params, batch)
    key = jax.random.fold_in(base_key, state.step)
    updates, opt_state = recipe.tx.update(grads, state.opt_state,
                                          state.params, loss_fn=step_loss,
                                          batch=batch, key=key)
    params = optax.apply_updates(state.params, updates)
    # Logged only (no gradient through them): optax.tree.norm shows a NaN
    # as NaN, where numerics.tree_l2_norm's zero-safe branch maps it to 0.
    norm = optax.tree.norm
    out = {"loss": loss, **aux.get("metrics", {}), "grad_norm": norm(grads),
           "param_norm": norm(params), "update_norm": norm(updates)}
    out.update(_rule_scalars(opt_state))
    extra = aux.get("extra", state.extra)
    return TrainState(state.step + 1, params, opt_state, extra), out
  return train_step


def _loss_at(loss_fn, step, extra, params, batch):
  return loss_fn(params, batch, step, extra)


# ----------------------------------------------------------- run dir ----
# Fields that may change when a run in an existing workdir is resumed.
# ``selection`` and ``sweep`` change how runs are compared, not what they train.
_RESUMABLE_FIELDS = ("num_steps", "progress_bar", "data_dir", "download",
                     "streaming", "selection", "sweep")
_RUN_CONFIG = "config.json"


def check_writable(workdir: str) -> None:
  """Creates ``workdir`` and writes a probe file; WorkdirError if it cannot.

  Runs before any data is loaded, so a read-only or full disk fails at once
  rather than at the first checkpoint.
  """
  probe = os.path.join(workdir, f".write_probe_{os.getpid()}")
  try:
    os.makedirs(workdir, exist_ok=True)
    with open(probe, "wb") as f:
      f.write(b"\0")
      f.flush()
      os.fsync(f.fileno())
    os.remove(probe)
  except OSError as e:
    raise WorkdirError(f"--workdir {workdir} cannot be written: "
                       f"{e.strerror or e}") from None


def _run_config(config) -> Dict[str, Any]:
  now = json.loads(config.to_json_best_effort())
  for field in _RESUMABLE_FIELDS:
    now.pop(field, None)
  return now


def check_same_run(config, workdir: str) -> None:
  """Refuses a config that differs from the run saved in ``workdir``.

  Compares with ``workdir/config.json`` (written when the run started
  training) every field except ``_RESUMABLE_FIELDS``; the ConfigError names
  the fields that differ, with both values. No file: nothing to compare.
  """
  path = os.path.join(workdir, _RUN_CONFIG)
  if not os.path.exists(path):
    return
  with open(path) as f:
    before = json.load(f)
  now = _run_config(config)
  diff = [k for k in sorted(set(before) | set(now))
          if before.get(k) != now.get(k)]
  if diff:
    shown = "; ".join(f"config.{k}: {now.get(k)!r} here, {before.get(k)!r} "
                      "there" for k in diff[:3])
    more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
    raise config_validation.ConfigError(
        f"{shown}{more}: the config differs from the run in {workdir}; use a "
        "new --workdir or the same config")


def save_run_config(config, workdir: str) -> None:
  """Writes ``workdir/config.json`` once (atomically, process 0 only)."""
  path = os.path.join(workdir, _RUN_CONFIG)
  if jax.process_index() != 0 or os.path.exists(path):
    return
  with open(path + ".tmp", "w") as f:
    json.dump(_run_config(config), f, indent=1, sort_keys=True)
  os.replace(path + ".tmp", path)


def _non_finite_message(row: Dict[str, float], step: int, recipe: Recipe,
                        good: Optional[int], directory: str) -> str:
  """One line: which quantity became non-finite, and what is kept."""
  if not np.isfinite(row["loss"]):
    what = f"the training loss is {row['loss']} at step {step}"
  else:  # the loss is of the params before the step, param_norm after it
    norms = ", ".join(f"{text} {row[name]:.4g}" for name, text in
                      _NORM_NAMES.items())
    what = (f"the parameters diverged at step {step}: parameter norm "
            f"{row['param_norm']:.4g} after the update ({norms}), from a "
            f"finite loss of {row['loss']:.4g} before it")
  kept = ("no checkpoint yet" if good is None else
          f"the last good checkpoint (step {good}) is kept in {directory}")
  return f"{what} ({recipe.describe}); stopped, {kept}. {recipe.hint}"


def train_one(recipe: Recipe, config, workdir: str,
              mesh: jax.sharding.Mesh) -> Dict[str, Any]:
  """Trains ``recipe`` in ``workdir``; resumes from its latest checkpoint.

  Args:
    recipe: the run, built once by a study (``experiments.studies``).
    config: the run's validated config (its run fields; saved as
      ``config.json`` and compared on resume).
    workdir: run directory (checkpoints, metrics.jsonl, tensorboard/).
    mesh: the data-parallel mesh (:func:`make_mesh`).

  Returns:
    ``{**recipe.report(best, last), 'selected_step', 'final_loss',
    'num_steps', 'compiles', 'evals'}``: ``best`` the eval record that
    maximises ``recipe.select`` (the last one if None), ``evals`` every eval
    record (``{'step', **recipe.evaluate(params)}``) and ``compiles`` the
    number of train-step compilations in this call (1, or 0 when nothing was
    left to run).

  Raises:
    ConfigError: a config that differs from the run already in ``workdir``,
      or fewer ``num_steps`` than it has trained.
    WorkdirError: ``workdir`` cannot be written.
    NonFiniteLossError: the loss or the parameters became NaN/inf (last good
      checkpoint kept).
    TrainingInterrupted: Ctrl-C (a ``KeyboardInterrupt``; the last
      checkpoint is whole, and a rerun resumes from it).

  Example:
    >>> result = train_one(recipe, config, '/tmp/run', make_mesh(config))
  """
  check_writable(workdir)
  check_same_run(config, workdir)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, "data"))
  init_key, base_key = jax.random.split(jax.random.key(config.seed))
  params, extra = recipe.init(init_key)
  state = jax.device_put(TrainState(jnp.zeros((), jnp.int32), params,
                                    recipe.tx.init(params), extra), replicated)
  step_fn = jax.jit(make_train_step(recipe, base_key),
                    in_shardings=(replicated, batch_sharding),
                    out_shardings=(replicated, replicated))
  # No buffer donation: some rule states alias params at init (MESA's EMA
  # starts as a copy of params), and donating one buffer twice is an error.

  save_run_config(config, workdir)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    config.keep_checkpoints)
  start, state, meta = _restore(ckpt, state, config, workdir)
  log = _TrainLog(workdir, start, recipe, ckpt)
  progress = _progress_bar(config, recipe, start)
  done = start
  try:
    for step in range(start, config.num_steps):
      batch = _shard(recipe.batches(step), mesh)
      state, step_metrics = step_fn(state, batch)
      log.pending.append((step + 1, step_metrics))
      done = step + 1
      last = done == config.num_steps
      if done % config.log_every == 0 or last:
        log.flush(meta, progress)
      if done % config.eval_every == 0 or last:
        log.flush(meta, progress)
        record = {"step": done, **recipe.evaluate(state.params)}
        log.writer.write(done, "eval", {k: v for k, v in record.items()
                                        if k != "step"})
        meta["evals"].append(record)
      if done % config.checkpoint_every == 0 or last:
        log.flush(meta, progress)
        meta["step"] = done
        ckpt.save(done, state, meta)
      if progress is not None:
        progress.update(1)
  except KeyboardInterrupt:
    raise _interrupted(ckpt, done, config, workdir) from None
  finally:
    if progress is not None:
      progress.close()
    log.writer.close()
    ckpt.close()

  evals = meta["evals"]
  best = evals[-1] if recipe.select is None else max(
      evals, key=lambda r: r[recipe.select])  # max: the first of equals
  result = {**recipe.report(best, evals[-1]), "selected_step": best["step"],
            "final_loss": meta.get("last_loss"),
            "num_steps": config.num_steps,
            "compiles": step_fn._cache_size(),  # pylint: disable=protected-access
            "evals": evals}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=1)
  return result


def _shard(batch, mesh):
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  return data.shard_batch(batch, mesh, axis="data")


def _restore(ckpt, state, config, workdir: str):
  """``(start_step, state, meta)`` from the latest checkpoint, or fresh."""
  restored = ckpt.restore_latest(state)
  if restored is None:
    return 0, state, {"step": 0, "evals": []}
  start, state, meta = restored
  if start > config.num_steps:
    ckpt.close()
    raise config_validation.ConfigError(
        f"config.num_steps: {config.num_steps} is below the {start} steps "
        f"already trained in {workdir}; use --config.num_steps={start} or "
        "more, or a new --workdir")
  if jax.process_index() == 0:
    print(f"    resumed from step {start} ({ckpt.directory})", flush=True)
  return start, state, meta


class _TrainLog:
  """Train metrics fetched from the device every ``log_every`` steps.

  ``flush`` writes them to ``metrics.jsonl`` / TensorBoard (process 0) and
  raises :class:`NonFiniteLossError` at the first non-finite loss or
  parameter norm, before that step can be checkpointed.
  """

  def __init__(self, workdir: str, start: int, recipe: Recipe, ckpt):
    self.writer = (metrics_lib.MetricWriter(workdir, resume_step=start)
                   if jax.process_index() == 0 else metrics_lib.NullWriter())
    self.recipe, self.ckpt = recipe, ckpt
    self.pending: List = []
    self.last: Dict[str, float] = {}

  def flush(self, meta, progress) -> None:
    for s, m in self.pending:
      row = {k: float(v) for k, v in jax.device_get(m).items()}
      self.writer.write(s, "train", row)
      # param_norm is of the params *after* the step's update: checking it
      # too keeps a non-finite update out of every saved checkpoint.
      if not (np.isfinite(row["loss"]) and np.isfinite(row["param_norm"])):
        self.writer.flush()
        raise NonFiniteLossError(_non_finite_message(
            row, s, self.recipe, self.ckpt.latest_step(),
            self.ckpt.directory))
      self.last = row
      meta["last_loss"] = row["loss"]
    self.pending.clear()
    self.writer.flush()
    if progress is not None and self.last:
      progress.set_postfix(loss=f"{self.last['loss']:.4f}",
                           **({"acc": f"{self.last['accuracy']:.3f}"}
                              if "accuracy" in self.last else {}))


def _progress_bar(config, recipe: Recipe, start: int):
  if not config.get("progress_bar", False) or jax.process_index() != 0:
    return None
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=config.num_steps, initial=start, desc=recipe.name,
                   leave=False)


def _interrupted(ckpt, done: int, config, workdir: str) -> TrainingInterrupted:
  good = ckpt.latest_step()
  kept = ("no checkpoint yet" if good is None else
          f"a rerun of the same command resumes from step {good} "
          f"({ckpt.directory})")
  return TrainingInterrupted(
      f"stopped by Ctrl-C after {done} of {config.num_steps} steps in "
      f"{workdir}; {kept}")
