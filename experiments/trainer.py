"""The training program: one held-out domain per run, DomainBed protocol.

``train_and_evaluate(config, workdir)`` runs leave-one-domain-out (every domain
of ``config.test_domains``, default all, is held out in turn), selects each
run's reported step by training-domain validation accuracy (DomainBed's
``IIDAccuracySelectionMethod``: the step maximising the mean accuracy on the
held-out 20% of every *training* domain; the reported number is the accuracy
on the 80% "in" split of the test domain at that step), and returns the
results table. ``train_one`` is a single held-out domain.

The train step follows the transforms' extra-args protocol::

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
  updates, opt_state = tx.update(grads, opt_state, params, loss_fn=loss_fn,
                                 batch=batch, key=fold_in(base_key, step))
  params = optax.apply_updates(params, updates)

with ``tx = optax.chain(rule, optimizer)``. It is jit-compiled once, data
parallel over a 1-D ``jax.sharding.Mesh`` (axis ``'data'``) of the devices:
params/optimizer state replicated, every batch sharded over its per-domain
batch axis. Batches are a pure function of (seed, step) and the step key is
``fold_in(key(seed), step)``, so a resumed run is bit-identical to an
uninterrupted one.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any, Dict, List, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import algorithms
from experiments import checkpointing
from experiments import config_validation
from experiments import metrics as metrics_lib
from experiments import models
from experiments import penalties


class TrainState(NamedTuple):
  """Everything a step reads and writes (checkpointed as one pytree).

  ``penalty_state``: the DG penalty's state across steps (Fishr's EMA of the
  per-domain gradient variances, ``penalties.FishrEMAState``), ``()`` for
  stateless penalties.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  penalty_state: Any = ()


class NonFiniteLossError(FloatingPointError):
  """The loss or the parameters became NaN / inf (last good checkpoint kept)."""


class TrainingInterrupted(KeyboardInterrupt):
  """Ctrl-C during training; says which checkpoint a rerun resumes from."""


class WorkdirError(OSError):
  """The run directory cannot be created or written (read-only, full, ...)."""


_NORM_NAMES = {"update_norm": "update norm", "grad_norm": "gradient norm"}


# ---------------------------------------------------------------- data ----
def _load_dataset(config):
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  kwargs = {"download": True} if config.get("download", False) else {}
  if config.dataset.startswith("tfds:"):
    kwargs["streaming"] = config.get("streaming", "auto")
    kwargs["image_size"] = config.get("image_size", 0)
  return data.load(config.dataset, data_dir=config.data_dir or None, **kwargs)


def _splits(config, ds, test_domain: Optional[str]):
  """(train_in per train domain, val per train domain, test_in, test_out).

  Each part is an ``(x, y)`` pair, or a lazily read source when ``ds``
  streams (the same examples: the split is made on indices).
  """
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  train_in, val = {}, {}
  test_in = test_out = None
  for i, domain in enumerate(ds.domains):
    if ds.streaming:
      src = ds.source(domain)
      in_idx, out_idx = data.holdout_indices(
          len(src), holdout_fraction=config.holdout_fraction,
          seed=config.seed + i)
      inn, out = src.subset(in_idx), src.subset(out_idx)
    else:
      x, y = ds.arrays(domain)
      inn, out = data.split_holdout(
          x, y, holdout_fraction=config.holdout_fraction, seed=config.seed + i)
    if domain == test_domain:
      test_in, test_out = inn, out
    else:
      train_in[domain], val[domain] = inn, out
  if test_domain is None:  # single-domain dataset: test on its held-out split
    (domain,) = ds.domains
    test_in = test_out = val[domain]
  return train_in, val, test_in, test_out


# --------------------------------------------------------------- model ----
def _base_optimizer(config) -> optax.GradientTransformation:
  lr, wd = config.learning_rate, config.weight_decay
  if config.optimizer == "adam":
    opt = optax.adam(lr)
    return optax.chain(optax.add_decayed_weights(wd), opt) if wd else opt
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  momentum = 0.9 if config.optimizer == "momentum" else None
  opt = optax.sgd(lr, momentum=momentum)
  return optax.chain(optax.add_decayed_weights(wd), opt) if wd else opt


def _make_optimizer(config) -> optax.GradientTransformation:
  """The base optimizer; re-created at the end of a penalty warm-up.

  DomainBed's IRM / VREx / Fishr build a fresh Adam at update
  ``penalty_anneal_iters`` (> 0); here ``algorithms.reset_optimizer_at``
  does it inside the jitted step (``config.reset_optimizer_at_anneal``,
  default True).
  """
  opt = _base_optimizer(config)
  _, anneal = algorithms.penalty_hparams(config.algorithm, config.hparams)
  if anneal > 0 and config.get("reset_optimizer_at_anneal", True):
    opt = algorithms.reset_optimizer_at(opt, anneal)
  return opt


def make_loss_fn(model, per_example_loss, config, penalty_fn):
  """``loss_fn(params, batch, step, penalty_state=()) -> (loss, aux)``.

  ``batch['x']`` is (E, B, ...) and ``batch['y']`` (E, B); a rule that vmaps
  over the domain axis calls it with (B, ...) / (B,) and gets a single-domain
  loss. The DG penalty (if any) is added with DomainBed's warm-up::

    loss = mean_e R_e + w(step) * penalty,
    w(step) = warmup_weight if step < anneal_steps else penalty_weight

  A stateful penalty (Fishr's EMA) reads ``penalty_state`` and returns the
  next one in ``aux['penalty_state']`` (the trainer carries it in
  ``TrainState``); a single-domain call uses the stateless penalty.

  Example:
    >>> loss_fn = make_loss_fn(model, optax.softmax_cross_entropy_with_integer_labels,
    ...                        config, None)
    >>> loss, aux = loss_fn(params, {'x': x, 'y': y}, step=0)

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021 (DomainBed ``algorithms.py``: ERM, IRM, VREx, CORAL, Fishr updates).
  """
  algo = algorithms.get_algorithm(config.algorithm)
  weight, anneal = algorithms.penalty_hparams(config.algorithm, config.hparams)
  ema = algorithms.penalty_ema(config.algorithm, config.hparams)

  def loss_fn(params, batch, step, penalty_state=()):
    x, y = batch["x"], batch["y"]
    single = y.ndim == 1
    if single:
      x, y = x[None], y[None]
    e, b = y.shape
    flat = jnp.reshape(x, (e * b,) + x.shape[2:])
    logits, features = model.apply({"params": params}, flat,
                                   return_features=True)
    k = logits.shape[-1]
    pel = per_example_loss(logits, jnp.reshape(y, (e * b,)))
    pel = jnp.reshape(pel, (e, b))
    logits = jnp.reshape(logits, (e, b, k))
    domain_losses = jnp.mean(pel, axis=1)
    loss = jnp.mean(domain_losses)
    aux = {"logits": logits, "per_example_loss": pel,
           "domain_losses": domain_losses}
    if penalty_fn is not None:
      value, new_state = penalties.compute(
          algo.penalty, penalty_fn, logits=logits, labels=y,
          domain_losses=domain_losses,
          features=jnp.reshape(features, (e, b, -1)),
          head_params=params["head"], per_example_loss=per_example_loss,
          state=() if single else penalty_state, ema=ema)
      w = jnp.where(step >= anneal, weight, algo.warmup_weight)
      loss = loss + w * value
      aux["penalty"] = value
      aux["penalty_state"] = penalty_state if single else new_state
    if single:
      aux = {"logits": logits[0], "per_example_loss": pel[0],
             "domain_losses": domain_losses,
             **{k: aux[k] for k in ("penalty", "penalty_state") if k in aux}}
    return loss, aux

  return loss_fn


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


def make_train_step(loss_fn, tx, base_key):
  def train_step(state: TrainState, batch):
    step_loss = functools.partial(_call_with_step, loss_fn, state.step,
                                  state.penalty_state)
    (loss, aux), grads = jax.value_and_grad(step_loss, has_aux=True)(
        state.params, batch)
    key = jax.random.fold_in(base_key, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.params,
                                   loss_fn=step_loss, batch=batch, key=key)
    params = optax.apply_updates(state.params, updates)
    acc = jnp.mean(jnp.argmax(aux["logits"], -1) == batch["y"])
    # Logged only (no gradient through them): optax.tree.norm shows a NaN
    # as NaN, where numerics.tree_l2_norm's zero-safe branch maps it to 0.
    norm = optax.tree.norm
    out = {"loss": loss, "accuracy": acc, "grad_norm": norm(grads),
           "param_norm": norm(params), "update_norm": norm(updates)}
    if "penalty" in aux:
      out["penalty"] = aux["penalty"]
    out.update(_rule_scalars(opt_state))
    penalty_state = aux.get("penalty_state", state.penalty_state)
    return TrainState(state.step + 1, params, opt_state, penalty_state), out
  return train_step


def _call_with_step(loss_fn, step, penalty_state, params, batch):
  return loss_fn(params, batch, step, penalty_state)


def _make_mesh(config):
  n = config.num_devices or jax.device_count()
  return jax.sharding.Mesh(np.array(jax.devices()[:n]), ("data",))


# ---------------------------------------------------------------- eval ----
class _EvalSet(NamedTuple):
  x: jax.Array   # (chunks, eval_batch, ...)
  y: jax.Array
  mask: jax.Array


class _StreamedEvalSet(NamedTuple):
  """An eval split read chunk by chunk from a source (streaming datasets)."""
  source: Any
  eval_batch: int
  mesh: Any


def _eval_set(part, eval_batch: int, mesh):
  """An eval split: device arrays, or a lazily read one when streaming."""
  if isinstance(part, tuple):
    return _eval_arrays(*part, eval_batch, mesh)
  return _StreamedEvalSet(part, eval_batch, mesh)


def _eval_chunks(s):
  """Yields ``(x, y, mask)`` chunks of ``eval_batch`` examples (zero-padded)."""
  if isinstance(s, _EvalSet):
    for i in range(s.x.shape[0]):
      yield s.x[i], s.y[i], s.mask[i]
    return
  n, b = len(s.source), s.eval_batch
  for start in range(0, max(n, 1), b):
    x, y = s.source.read(np.arange(start, min(n, start + b)))
    chunk = _eval_arrays(x, y, b, s.mesh)
    yield chunk.x[0], chunk.y[0], chunk.mask[0]


def _eval_arrays(x, y, eval_batch: int, mesh) -> _EvalSet:
  n = len(y)
  chunks = max(1, -(-n // eval_batch))
  pad = chunks * eval_batch - n
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)])
  y = np.concatenate([y, np.zeros(pad, y.dtype)])
  shape = lambda a: a.reshape((chunks, eval_batch) + a.shape[1:])
  sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, "data"))
  return _EvalSet(*(jax.device_put(shape(a), sharding) for a in (x, y, mask)))


def make_eval_fn(model):
  """``(params, x, y, mask) -> (correct, count)`` over the unmasked examples.

  Both are reduced on device: a chunk sharded over several processes is
  never read back whole.
  """
  def count_correct(params, x, y, mask):
    logits = model.apply({"params": params}, x)
    return jnp.sum((jnp.argmax(logits, -1) == y) & mask), jnp.sum(mask)
  return count_correct


def _accuracy(eval_fn, params, s) -> float:
  correct, count = 0, 0
  for x, y, mask in _eval_chunks(s):
    c, n = eval_fn(params, x, y, mask)
    correct, count = correct + int(c), count + int(n)
  return correct / max(count, 1)


# ----------------------------------------------------------- run dir ----
# Fields that may change when a run in an existing workdir is resumed.
_RESUMABLE_FIELDS = ("num_steps", "progress_bar", "data_dir", "download",
                     "streaming")
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


def _non_finite_message(row: Dict[str, float], step: int, config,
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
  return (f"{what} (algorithm {config.algorithm!r}, "
          f"learning_rate {config.learning_rate}); stopped, {kept}. Lower "
          "config.learning_rate or the algorithm's hparams.")


# ------------------------------------------------------------ training ----


def train_one(config, workdir: str, test_domain: Optional[str], *,
              dataset=None) -> Dict[str, Any]:
  """Trains with ``test_domain`` held out; resumes from ``workdir`` if any.

  Args:
    config: a validated-on-entry ``ml_collections.ConfigDict`` (see
      ``configs/common.py``).
    workdir: run directory (checkpoints, metrics.jsonl, tensorboard/).
    test_domain: held-out domain, or None for a one-domain dataset (then its
      held-out split is the test set).
    dataset: an already loaded ``diversity_jax.data.Dataset`` (optional).

  Returns:
    ``{'test_domain', 'selected_step', 'val_acc', 'test_acc', 'last_test_acc',
    'final_loss', 'num_steps', 'compiles'}`` where ``test_acc`` is the
    test-domain "in" accuracy at the step of best training-domain validation
    accuracy (``val_acc``) and ``compiles`` the number of train-step
    compilations in this call (1, or 0 when nothing was left to run).

  Raises:
    ConfigError: a bad config field (before anything is compiled), a config
      that differs from the run already in ``workdir``, or fewer
      ``num_steps`` than it has trained.
    WorkdirError: ``workdir`` cannot be written (before data is loaded).
    NonFiniteLossError: the loss or the parameters became NaN/inf (last good
      checkpoint kept).
    TrainingInterrupted: Ctrl-C (a ``KeyboardInterrupt``; the last
      checkpoint is whole, and a rerun resumes from it).

  Example:
    >>> from configs import mock
    >>> result = train_one(mock.get_config('smoke'), '/tmp/run', 'd0')

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, Sec. 4 (leave-one-domain-out, training-domain validation) and
    DomainBed's ``model_selection.IIDAccuracySelectionMethod``.
  """
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  config_validation.validate_config(config)
  check_writable(workdir)
  check_same_run(config, workdir)
  ds = dataset if dataset is not None else _load_dataset(config)
  config_validation.validate_against_dataset(config, ds.domains)
  train_in, val, test_in, test_out = _splits(config, ds, test_domain)
  train_domains = list(train_in)
  num_examples = sum(len(part if ds.streaming else part[1])
                     for part in train_in.values())
  steps_per_epoch = max(1, num_examples // (config.batch_size * len(train_in)))
  context = {"num_examples": num_examples, "num_classes": ds.num_classes,
             "steps_per_epoch": steps_per_epoch, "head": "head"}
  rule = config_validation.build_rule(config, context)
  optimizer = _make_optimizer(config)
  tx = optax.chain(rule, optimizer) if rule is not None else optimizer
  tx = optax.with_extra_args_support(tx)

  model = models.get_model(config.model, ds.num_classes)
  per_example_loss = config_validation.resolve_loss(
      config.loss, config_validation.loss_kwargs(config))
  penalty_fn = algorithms.resolve_penalty(config.algorithm)
  loss_fn = make_loss_fn(model, per_example_loss, config, penalty_fn)

  mesh = _make_mesh(config)
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, "data"))
  init_key, base_key = jax.random.split(jax.random.key(config.seed))
  dummy = jnp.zeros((1,) + tuple(ds.input_shape), jnp.float32)
  params = model.init(init_key, dummy)["params"]
  algo = algorithms.get_algorithm(config.algorithm)
  penalty_state = penalties.init_state(
      algo.penalty, num_domains=len(train_domains),
      head_params=params["head"]) if algo.penalty_ema else ()
  state = TrainState(jnp.zeros((), jnp.int32), params, tx.init(params),
                     penalty_state)
  state = jax.device_put(state, replicated)

  batches = data.MultiDomainBatches([train_in[d] for d in train_domains],
                                    config.batch_size, config.seed)
  step_fn = jax.jit(make_train_step(loss_fn, tx, base_key),
                    in_shardings=(replicated, batch_sharding),
                    out_shardings=(replicated, replicated))
  # No buffer donation: some rule states alias params at init (MESA's EMA
  # starts as a copy of params), and donating one buffer twice is an error.
  eval_fn = jax.jit(make_eval_fn(model))
  eval_sets = {f"val/{d}": _eval_set(val[d], config.eval_batch_size, mesh)
               for d in train_domains}
  eval_sets["test_in"] = _eval_set(test_in, config.eval_batch_size, mesh)
  eval_sets["test_out"] = _eval_set(test_out, config.eval_batch_size, mesh)

  save_run_config(config, workdir)
  primary = jax.process_index() == 0
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    config.keep_checkpoints)
  meta = {"step": 0, "evals": [], "best": None}
  restored = ckpt.restore_latest(state)
  if restored is not None:
    start, state, meta = restored
    if start > config.num_steps:
      ckpt.close()
      raise config_validation.ConfigError(
          f"config.num_steps: {config.num_steps} is below the {start} steps "
          f"already trained in {workdir}; use --config.num_steps={start} or "
          "more, or a new --workdir")
    if primary:
      print(f"    resumed from step {start} ({ckpt.directory})", flush=True)
  else:
    start = 0
  writer = (metrics_lib.MetricWriter(workdir, resume_step=start) if primary
            else metrics_lib.NullWriter())
  pending: List = []
  last_train: Dict[str, float] = {}

  def flush():
    nonlocal last_train
    for s, m in pending:
      row = {k: float(v) for k, v in jax.device_get(m).items()}
      # param_norm is of the params *after* the step's update: checking it
      # too keeps a non-finite update out of every saved checkpoint.
      if not (np.isfinite(row["loss"]) and np.isfinite(row["param_norm"])):
        writer.write(s, "train", row)
        writer.flush()
        raise NonFiniteLossError(_non_finite_message(
            row, s, config, ckpt.latest_step(), ckpt.directory))
      writer.write(s, "train", row)
      last_train = row
      meta["last_loss"] = row["loss"]
    pending.clear()
    writer.flush()

  progress = None
  if config.get("progress_bar", False) and primary:
    import tqdm  # pylint: disable=g-import-not-at-top
    progress = tqdm.tqdm(total=config.num_steps, initial=start,
                         desc=f"{config.algorithm} test={test_domain}",
                         leave=False)
  done = start
  try:
    for step in range(start, config.num_steps):
      batch = data.shard_batch(batches.batch(step), mesh, axis="data")
      state, step_metrics = step_fn(state, batch)
      pending.append((step + 1, step_metrics))
      done = step + 1
      last = done == config.num_steps
      if done % config.log_every == 0 or last:
        flush()
        if progress is not None:
          progress.set_postfix(loss=f"{last_train['loss']:.4f}",
                               acc=f"{last_train['accuracy']:.3f}")
      if done % config.eval_every == 0 or last:
        flush()
        accs = {k: _accuracy(eval_fn, state.params, s)
                for k, s in eval_sets.items()}
        accs["val_acc"] = float(np.mean([accs[f"val/{d}"]
                                         for d in train_domains]))
        writer.write(done, "eval", accs)
        record = {"step": done, **accs}
        meta["evals"].append(record)
        if meta["best"] is None or accs["val_acc"] > meta["best"]["val_acc"]:
          meta["best"] = record
      if done % config.checkpoint_every == 0 or last:
        flush()
        meta["step"] = done
        ckpt.save(done, state, meta)
      if progress is not None:
        progress.update(1)
  except KeyboardInterrupt:
    good = ckpt.latest_step()
    kept = ("no checkpoint yet" if good is None else
            f"a rerun of the same command resumes from step {good} "
            f"({ckpt.directory})")
    raise TrainingInterrupted(
        f"stopped by Ctrl-C after {done} of {config.num_steps} steps in "
        f"{workdir}; {kept}") from None
  finally:
    if progress is not None:
      progress.close()
    writer.close()
    ckpt.close()

  best, final = meta["best"], meta["evals"][-1]
  result = {"test_domain": test_domain, "selected_step": best["step"],
            "val_acc": best["val_acc"], "test_acc": best["test_in"],
            "last_test_acc": final["test_in"],
            "final_loss": meta.get("last_loss"),
            "num_steps": config.num_steps,
            "compiles": step_fn._cache_size()}  # pylint: disable=protected-access
  if primary:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=1)
  return result


def train_and_evaluate(config, workdir: str) -> List[Dict[str, Any]]:
  """Leave-one-domain-out over ``config.test_domains`` (default: all).

  Validates the whole config before loading data or compiling, then trains
  one model per held-out domain in ``workdir/test_<domain>`` and writes the
  results table (``results.md``, ``results.csv``) into ``workdir``.

  Returns:
    One result dict per held-out domain (see ``train_one``).

  Example:
    >>> from configs import rotated_mnist
    >>> results = train_and_evaluate(rotated_mnist.get_config(), 'runs/rm')

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, Sec. 4 (leave-one-domain-out, training-domain validation) and
    DomainBed's ``model_selection.IIDAccuracySelectionMethod``.
  """
  from experiments import lodo  # pylint: disable=g-import-not-at-top
  return lodo.run(config, workdir)
