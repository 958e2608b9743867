"""Config validation: every error names the field and the valid choices.

Validation only validates: :func:`validate_config` runs once per run, before
any data is loaded or anything is compiled (the driver of a study calls it);
:func:`validate_domains` checks the held-out domains against the loaded
dataset, still before anything is compiled. Nothing here builds what a run
uses (see ``experiments.studies.dg.build_recipe``).
"""

from __future__ import annotations

import numbers
from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from diversity_jax.data import _datasets
from experiments import algorithms
from experiments import losses
from experiments import models
from experiments import penalties

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
STREAMING = _datasets.STREAMING
# Datasets built by diversity_jax.data (the '*_mnist_full' ones need MNIST
# prepared in data_dir, or config.download=True), then the in-memory mock.
OFFLINE_DATASETS = _datasets.BUILT + ("mock",)
SELECTIONS = ("training_domain", "test_domain", "leave_one_domain_out")
EVERY_K_BETWEEN = ("looksam", "gradient")

_F32_MAX = float(jnp.finfo(jnp.float32).max)


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


def fail(field: str, message: str):
  """Raises ``ConfigError('config.<field>: <message>')``."""
  raise ConfigError(f"config.{field}: {message}")


def check_int(config, field: str, low: int, prefix: str = "") -> None:
  """``config[field]`` is an integer ``>= low`` (``prefix`` names its dict)."""
  value = config[field]
  field = prefix + field
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    fail(field, f"must be an integer, got {value!r}")
  if value < low:
    fail(field, f"must be >= {low}, got {value}")


def check_float(config, field: str, *, positive: bool,
                prefix: str = "") -> None:
  """``config[field]`` is a finite f32 number, ``> 0`` or ``>= 0``."""
  value = config[field]
  field = prefix + field
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    fail(field, f"must be a number, got {value!r}")
  if not abs(value) <= _F32_MAX:  # also NaN
    fail(field, f"must be a finite float32 number, got {value}")
  if positive and not value > 0:
    fail(field, f"must be > 0, got {value}")
  if not positive and not value >= 0:
    fail(field, f"must be >= 0, got {value}")


def dataset_choices() -> Sequence[str]:
  return OFFLINE_DATASETS + ("tfds:<any tfds dataset name>",)


def selections(config) -> list:
  """``config.selection`` as a list of method names (validated)."""
  value = config.get("selection", "training_domain")
  names = [s.strip() for s in value.split(",")] if isinstance(value, str) \
      else None
  if not names or not all(names) or any(n not in SELECTIONS for n in names):
    fail("selection", f"must be one or more of {list(SELECTIONS)} separated "
         f"by commas, got {value!r}")
  return names


def sweep_grid(config) -> tuple:
  """``(algorithms, n_hparams, seeds)`` of ``config.sweep`` (validated)."""
  sweep = config.sweep
  names = [a.strip() for a in str(sweep.algorithms).split(",") if a.strip()]
  unknown = [a for a in names if a not in algorithms.ALGORITHM_NAMES]
  if not names or unknown:
    fail("sweep.algorithms", f"unknown algorithms {unknown}; valid choices: "
         f"{list(algorithms.ALGORITHM_NAMES)}")
  check_int(sweep, "n_hparams", 1, "sweep.")
  try:
    seeds = [int(s) for s in str(sweep.seeds).split(",") if s.strip()]
  except ValueError:
    fail("sweep.seeds", f"integers separated by commas expected, got "
         f"{sweep.seeds!r}")
  if not seeds or min(seeds) < 0:
    fail("sweep.seeds", f"one or more integers >= 0 expected, got "
         f"{sweep.seeds!r}")
  return names, sweep.n_hparams, seeds


def _check_loss(config) -> None:
  try:
    kwargs = losses.loss_kwargs(config)
    fn = losses.per_example_loss(config.loss, kwargs)
  except losses.LossConfigError as e:
    fail(*e.args)
  logits = jax.ShapeDtypeStruct((4, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((4,), jnp.int32)
  try:
    out = jax.eval_shape(fn, logits, labels)
  except (TypeError, ValueError) as e:
    fail("loss_kwargs/loss_args" if kwargs else "loss",
         f"loss {config.loss!r} with arguments {kwargs} cannot be called as "
         f"loss(logits, labels, **kwargs): {e}")
  if not hasattr(out, "shape") or out.shape != (4,):
    fail("loss", f"loss {config.loss!r} must return one value per example "
         f"(shape (N,)), got {getattr(out, 'shape', type(out))}; it is not a "
         "per-example classification loss")


def _check_hparam_values(name: str, hparams: dict) -> None:
  prefix = f"hparams.{name}."
  for key, value in hparams.items():
    if key == "ema":
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
          not 0 <= value < 1):
        fail(prefix + key, f"must be a number in [0, 1), got {value!r}")
    elif key == "anneal_steps":
      check_int(hparams, key, 0, prefix)
    elif key == "num_probes":
      check_int(hparams, key, 1, prefix)
    elif isinstance(value, numbers.Real) or isinstance(value, bool):
      check_float(hparams, key, positive=key.startswith("rho"), prefix=prefix)


def _check_algorithm(config) -> None:
  """The algorithm's hparams build its rule / penalty (no data, no compile)."""
  name = config.algorithm
  if name not in algorithms.ALGORITHM_NAMES:
    fail("algorithm", f"unknown algorithm {name!r}; valid choices: "
         f"{list(algorithms.ALGORITHM_NAMES)}")
  if name not in config.hparams:
    fail(f"hparams.{name}", f"missing (the hyperparameters of algorithm "
         f"{name!r}); start from configs/common.py:default_hparams()")
  algo, hparams = algorithms.ALGORITHMS[name], algorithms.hparams_of(config)
  _check_hparam_values(name, hparams)
  every_k = config.every_k
  check_int(every_k, "k", 1, "every_k.")
  if every_k.between not in EVERY_K_BETWEEN:
    fail("every_k.between", f"unknown value {every_k.between!r}; valid "
         f"choices: {list(EVERY_K_BETWEEN)}")
  check_float(every_k, "alpha", positive=False, prefix="every_k.")
  if every_k.k > 1 and not algo.every_k:
    fail("every_k.k", f"runs a SAM-family rule every k steps; algorithm "
         f"{name!r} has none (valid: "
         f"{[n for n, a in algorithms.ALGORITHMS.items() if a.every_k]})")
  if algo.rule is not None:
    # The run's context is not known yet: representative values.
    context = {"num_examples": 8, "num_classes": 2, "steps_per_epoch": 1,
               "head": "head", "learning_rate": config.learning_rate}
    try:
      algorithms.build_rule(algo, hparams, context, every_k)
    except (TypeError, ValueError) as e:
      fail(f"hparams.{name}", f"algorithm {name!r} builds "
           f"diversity_jax.transforms.{algo.rule.__name__}(**{hparams}) "
           f"which failed: {e}")
  if algo.penalty is not None:
    missing = [k for k in algorithms.PENALTY_KEYS[:1] if k not in hparams]
    if missing:
      fail(f"hparams.{name}.{missing[0]}", f"missing (needed by algorithm "
           f"{name!r})")
    _, _, kwargs = algorithms.penalty_schedule(algo, hparams)
    e, b, f, k = 2, 4, 5, 3
    head = {"kernel": jnp.zeros((f, k)), "bias": jnp.zeros(k)}
    state = (algo.penalty_init(num_domains=e, head_params=head)
             if algo.penalty_init else ())
    inputs = penalties.Inputs(
        jnp.zeros((e, b, k)), jnp.zeros((e, b), jnp.int32), jnp.zeros(e),
        jnp.zeros((e, b, f)), head,
        optax.softmax_cross_entropy_with_integer_labels)
    try:
      jax.eval_shape(lambda s: algo.penalty(inputs, s, **kwargs), state)
    except TypeError as e:
      fail(f"hparams.{name}", f"algorithm {name!r}: penalty "
           f"{algo.penalty.__name__} does not take {sorted(kwargs)}: {e}")


def check_hparams_used(keys: Sequence[str],
                       algorithm_names: Sequence[str]) -> None:
  """Refuses hparams set for an algorithm that is not run.

  ``keys``: the ``config.hparams`` entries given on the command line
  (``'sam.rho'``); ``algorithm_names``: the algorithms that will run (one for
  ``train``, the swept ones for ``sweep``). A key of an algorithm that is not
  among them is an error naming that algorithm.
  """
  if not set(algorithm_names) <= set(algorithms.ALGORITHM_NAMES):
    return  # validate_config names the unknown algorithm
  for key in keys:
    owner = key.split(".", 1)[0]
    if owner in algorithms.ALGORITHM_NAMES and owner not in algorithm_names:
      runs = (f"algorithm {algorithm_names[0]!r}" if len(algorithm_names) == 1
              else f"any of the algorithms {list(algorithm_names)}")
      fail(f"hparams.{key}", f"not used by {runs}; it is used by "
           f"[{owner!r}]")


def check_field_path(config, path: str) -> None:
  """Raises ConfigError unless ``config.<path>`` names an existing field.

  Example: ``check_field_path(config, 'learning_rat')`` fails with
  ``config.learning_rat: no such field; did you mean 'learning_rate'?``.
  """
  import difflib  # pylint: disable=g-import-not-at-top
  node, done = config, []
  for part in path.split("."):
    keys = list(node.keys()) if hasattr(node, "keys") else []
    if part not in keys:
      parent = ".".join(["config"] + done)
      close = difflib.get_close_matches(part, keys, n=1)
      hint = (f"did you mean {close[0]!r}?" if close else
              f"{parent} has the fields {sorted(keys)}" if keys else
              f"{parent} has no fields")
      if done == ["loss_kwargs"]:
        hint += "; give loss arguments as --config.loss_args='name=value,...'"
      fail(path, f"no such field; {hint}")
    node, done = node[part], done + [part]


REQUIRED = ("name", "dataset", "test_domains", "holdout_fraction", "model",
            "algorithm", "hparams", "loss", "loss_kwargs", "optimizer",
            "learning_rate", "weight_decay", "batch_size", "num_steps",
            "eval_every", "eval_batch_size", "log_every", "checkpoint_every",
            "keep_checkpoints", "seed", "num_devices", "every_k", "selection",
            "sweep")


def check_run_fields(config) -> None:
  """The fields every study's ``trainer.train_one`` reads."""
  for field in ("num_steps", "eval_every", "log_every", "checkpoint_every",
                "keep_checkpoints"):
    check_int(config, field, 1)
  check_int(config, "seed", 0)
  check_int(config, "num_devices", 0)
  n_dev = config.num_devices or jax.device_count()
  if n_dev > jax.device_count():
    fail("num_devices", f"asks for {n_dev} devices but only "
         f"{jax.device_count()} exist")
  for field in ("batch_size", "eval_batch_size"):
    check_int(config, field, 1)
    if config[field] % n_dev:
      fail(field, f"must be a multiple of the number of devices ({n_dev}), "
           f"got {config[field]}")


def validate_config(config) -> None:
  """Checks every field that can be checked without data; raises ConfigError."""
  for field in REQUIRED:
    if field not in config:
      fail(field, "missing; start from configs/common.py:base_config()")
  ds = config.dataset
  if not isinstance(ds, str) or not (
      ds in OFFLINE_DATASETS or (ds.startswith("tfds:") and len(ds) > 5)):
    fail("dataset", f"unknown dataset {ds!r}; valid choices: "
         f"{list(dataset_choices())}")
  if isinstance(config.test_domains, str) or not all(
      isinstance(d, str) for d in config.test_domains):
    fail("test_domains", f"must be a tuple of domain names, got "
         f"{config.test_domains!r}")
  hf = config.holdout_fraction
  if isinstance(hf, bool) or not isinstance(hf, numbers.Real) or not 0 < hf < 1:
    fail("holdout_fraction", f"must lie in (0, 1), got {hf!r}")
  if config.model not in models.MODEL_NAMES:
    fail("model", f"unknown model {config.model!r}; valid choices: "
         f"{list(models.MODEL_NAMES)}")
  if config.optimizer not in OPTIMIZERS:
    fail("optimizer", f"unknown optimizer {config.optimizer!r}; valid "
         f"choices: {list(OPTIMIZERS)}")
  check_float(config, "learning_rate", positive=True)
  check_float(config, "weight_decay", positive=False)
  _check_algorithm(config)
  check_run_fields(config)
  if not isinstance(config.get("reset_optimizer_at_anneal", True), bool):
    fail("reset_optimizer_at_anneal", "must be True or False, got "
         f"{config.reset_optimizer_at_anneal!r}")
  if config.get("streaming", "auto") not in STREAMING:
    fail("streaming", f"unknown value {config.streaming!r}; valid choices: "
         f"{list(STREAMING)}")
  if "image_size" in config:
    check_int(config, "image_size", 0)
  if config.get("image_size", 0) and not config.dataset.startswith("tfds:"):
    fail("image_size", f"resizes 'tfds:<name>' datasets only; dataset "
         f"{config.dataset!r} has a fixed image size (use 0)")
  if config.get("streaming", "auto") == "on" and not config.dataset.startswith(
      "tfds:"):
    fail("streaming", f"'on' is only for 'tfds:<name>' datasets; "
         f"{config.dataset!r} is small and always held in memory")
  if not isinstance(config.loss, str):
    fail("loss", f"must be a loss name, got {config.loss!r}")
  _check_loss(config)
  selections(config)
  sweep_grid(config)


def validate_domains(config, domains: Sequence[str]) -> None:
  """Checks ``config.test_domains`` and the selection against the dataset."""
  unknown = [d for d in config.test_domains if d not in domains]
  if unknown:
    fail("test_domains", f"unknown domains {unknown} for dataset "
         f"{config.dataset!r}; valid choices: {list(domains)}")
  if len(domains) > 1 and len(domains) - len(set(config.test_domains)) < 1:
    fail("test_domains", "leaves no training domain")
  if "leave_one_domain_out" in selections(config) and len(domains) < 3:
    fail("selection", f"'leave_one_domain_out' holds out two domains per "
         f"run and needs at least 3; dataset {config.dataset!r} has "
         f"{len(domains)}")
