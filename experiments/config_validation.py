"""Config validation: every error names the field and the valid choices.

``validate_config`` runs before any data is loaded or anything is compiled.
``validate_against_dataset`` runs after the (cheap) dataset load, still before
compilation: it checks the test domains and builds the training rule once so a
bad rule hyperparameter fails with the field that holds it.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

import diversity_jax
from diversity_jax.data import _datasets
from experiments import algorithms
from experiments import models

OPTIMIZERS = ("adam", "adamw", "sgd", "momentum")
STREAMING = _datasets.STREAMING
BUILTIN_LOSSES = ("cross_entropy",)
# Datasets built by diversity_jax.data (the '*_mnist_full' ones need MNIST
# prepared in data_dir, or config.download=True), then the in-memory mock.
OFFLINE_DATASETS = _datasets.BUILT + ("mock",)


_F32_MAX = float(jnp.finfo(jnp.float32).max)


class ConfigError(ValueError):
  """A config field has a bad value; the message names the field."""


def _fail(field: str, message: str):
  raise ConfigError(f"config.{field}: {message}")


def _check_int(config, field: str, low: int, prefix: str = "") -> None:
  value = config[field]
  field = prefix + field
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    _fail(field, f"must be an integer, got {value!r}")
  if value < low:
    _fail(field, f"must be >= {low}, got {value}")


def _check_float(config, field: str, *, positive: bool,
                 prefix: str = "") -> None:
  value = config[field]
  field = prefix + field
  if isinstance(value, bool) or not isinstance(value, numbers.Real):
    _fail(field, f"must be a number, got {value!r}")
  if not abs(value) <= _F32_MAX:  # also NaN
    _fail(field, f"must be a finite float32 number, got {value}")
  if positive and not value > 0:
    _fail(field, f"must be > 0, got {value}")
  if not positive and not value >= 0:
    _fail(field, f"must be >= 0, got {value}")


def dataset_choices() -> Sequence[str]:
  return OFFLINE_DATASETS + ("tfds:<any tfds dataset name>",)


def loss_choices() -> Sequence[str]:
  return BUILTIN_LOSSES + tuple(sorted(diversity_jax.losses.__all__))


def resolve_loss(name: str, kwargs: dict) -> Callable[[Any, Any], Any]:
  """``fn(logits (N, K), labels (N,)) -> per-example loss (N,)``."""
  if name == "cross_entropy":
    if kwargs:
      _fail("loss_kwargs/loss_args", f"'cross_entropy' takes no arguments, got "
            f"{sorted(kwargs)}")
    return optax.softmax_cross_entropy_with_integer_labels
  if name not in diversity_jax.losses.__all__:
    _fail("loss", f"unknown loss {name!r}; valid choices: "
          f"{list(loss_choices())}")
  fn = getattr(diversity_jax.losses, name)
  return lambda logits, labels: fn(logits, labels, **kwargs)


def loss_kwargs(config) -> dict:
  """``config.loss_kwargs`` updated with the parsed ``config.loss_args``."""
  import ast  # pylint: disable=g-import-not-at-top
  kwargs = dict(config.loss_kwargs)
  args = config.get("loss_args", "")
  if not isinstance(args, str):
    _fail("loss_args", f"must be a string 'name=value,...', got {args!r}")
  for item in filter(None, (a.strip() for a in args.split(","))):
    key, sep, value = item.partition("=")
    if not sep or not key.strip().isidentifier():
      _fail("loss_args", f"must look like 'q=0.7,k=1', got {args!r}")
    try:
      kwargs[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      kwargs[key.strip()] = value.strip()
  return kwargs


def _check_loss(name: str, kwargs: dict) -> None:
  fn = resolve_loss(name, kwargs)
  logits = jax.ShapeDtypeStruct((4, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((4,), jnp.int32)
  try:
    out = jax.eval_shape(fn, logits, labels)
  except (TypeError, ValueError) as e:
    _fail("loss_kwargs/loss_args" if kwargs else "loss",
          f"loss {name!r} with arguments {kwargs} cannot be called as "
          f"loss(logits, labels, **kwargs): {e}")
  if not hasattr(out, "shape") or out.shape != (4,):
    _fail("loss", f"loss {name!r} must return one value per example (shape "
          f"(N,)), got {getattr(out, 'shape', type(out))}; it is not a "
          "per-example classification loss")


def _check_hparams(config) -> None:
  for key in algorithms.hparam_keys(config.algorithm):
    if key not in config.hparams:
      _fail(f"hparams.{key}", f"missing (needed by algorithm "
            f"{config.algorithm!r})")
    if key.endswith("_ema"):
      value = config.hparams[key]
      if isinstance(value, bool) or not isinstance(value, numbers.Real) or (
          not 0 <= value < 1):
        _fail(f"hparams.{key}", f"must be a number in [0, 1), got {value!r}")
    elif key.endswith("_steps"):
      _check_int(config.hparams, key, 0, "hparams.")
    elif key.endswith("_probes"):
      _check_int(config.hparams, key, 1, "hparams.")
    else:
      _check_float(config.hparams, key, positive=key.endswith("_rho"),
                   prefix="hparams.")


def check_hparams_used(keys: Sequence[str],
                       algorithm_names: Sequence[str]) -> None:
  """Refuses hparams set for an algorithm that is not run.

  ``keys``: the ``config.hparams`` entries given on the command line;
  ``algorithm_names``: the algorithms that will run (one for ``train``, the
  swept ones for ``sweep``). A key that none of them reads is an error naming
  the algorithms that do read it.
  """
  if not set(algorithm_names) <= set(algorithms.ALGORITHM_NAMES):
    return  # validate_config names the unknown algorithm
  for key in keys:
    users = algorithms.hparam_users(key)
    if not set(users) & set(algorithm_names):
      runs = (f"algorithm {algorithm_names[0]!r}" if len(algorithm_names) == 1
              else f"any of the algorithms {list(algorithm_names)}")
      _fail(f"hparams.{key}", f"not used by {runs}; it is used by "
            f"{users or 'no algorithm'}")


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
      _fail(path, f"no such field; {hint}")
    node, done = node[part], done + [part]


def validate_config(config) -> None:
  """Checks every field that can be checked without data; raises ConfigError."""
  required = ("name", "dataset", "test_domains", "holdout_fraction", "model",
              "algorithm", "hparams", "loss", "loss_kwargs", "optimizer",
              "learning_rate", "weight_decay", "batch_size", "num_steps",
              "eval_every", "eval_batch_size", "log_every", "checkpoint_every",
              "keep_checkpoints", "seed", "num_devices")
  for field in required:
    if field not in config:
      _fail(field, "missing; start from configs/common.py:base_config()")
  ds = config.dataset
  if not isinstance(ds, str) or not (
      ds in OFFLINE_DATASETS or (ds.startswith("tfds:") and len(ds) > 5)):
    _fail("dataset", f"unknown dataset {ds!r}; valid choices: "
          f"{list(dataset_choices())}")
  if isinstance(config.test_domains, str) or not all(
      isinstance(d, str) for d in config.test_domains):
    _fail("test_domains", f"must be a tuple of domain names, got "
          f"{config.test_domains!r}")
  hf = config.holdout_fraction
  if isinstance(hf, bool) or not isinstance(hf, numbers.Real) or not 0 < hf < 1:
    _fail("holdout_fraction", f"must lie in (0, 1), got {hf!r}")
  if config.model not in models.MODEL_NAMES:
    _fail("model", f"unknown model {config.model!r}; valid choices: "
          f"{list(models.MODEL_NAMES)}")
  if config.algorithm not in algorithms.ALGORITHM_NAMES:
    _fail("algorithm", f"unknown algorithm {config.algorithm!r}; valid "
          f"choices: {list(algorithms.ALGORITHM_NAMES)}")
  try:
    algorithms.resolve_transform_factory(config.algorithm)
    algorithms.resolve_penalty(config.algorithm)
  except ValueError as e:
    raise ConfigError(f"config.algorithm: {e}") from None
  _check_hparams(config)
  if config.optimizer not in OPTIMIZERS:
    _fail("optimizer", f"unknown optimizer {config.optimizer!r}; valid "
          f"choices: {list(OPTIMIZERS)}")
  _check_float(config, "learning_rate", positive=True)
  _check_float(config, "weight_decay", positive=False)
  for field in ("batch_size", "num_steps", "eval_every", "eval_batch_size",
                "log_every", "checkpoint_every", "keep_checkpoints"):
    _check_int(config, field, 1)
  _check_int(config, "num_devices", 0)
  if not isinstance(config.get("reset_optimizer_at_anneal", True), bool):
    _fail("reset_optimizer_at_anneal", "must be True or False, got "
          f"{config.reset_optimizer_at_anneal!r}")
  if config.get("streaming", "auto") not in STREAMING:
    _fail("streaming", f"unknown value {config.streaming!r}; valid choices: "
          f"{list(STREAMING)}")
  if "image_size" in config:
    _check_int(config, "image_size", 0)
  if config.get("image_size", 0) and not config.dataset.startswith("tfds:"):
    _fail("image_size", f"resizes 'tfds:<name>' datasets only; dataset "
          f"{config.dataset!r} has a fixed image size (use 0)")
  if config.get("streaming", "auto") == "on" and not config.dataset.startswith(
      "tfds:"):
    _fail("streaming", f"'on' is only for 'tfds:<name>' datasets; "
          f"{config.dataset!r} is small and always held in memory")
  _check_int(config, "seed", 0)
  n_dev = config.num_devices or jax.device_count()
  if n_dev > jax.device_count():
    _fail("num_devices", f"asks for {n_dev} devices but only "
          f"{jax.device_count()} exist")
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % n_dev:
      _fail(field, f"must be a multiple of the number of devices ({n_dev}), "
            f"got {config[field]}")
  if not isinstance(config.loss, str):
    _fail("loss", f"must be a loss name, got {config.loss!r}")
  _check_loss(config.loss, loss_kwargs(config))


def validate_against_dataset(config, domains: Sequence[str]) -> None:
  """Checks ``config.test_domains`` against the dataset's domains."""
  unknown = [d for d in config.test_domains if d not in domains]
  if unknown:
    _fail("test_domains", f"unknown domains {unknown} for dataset "
          f"{config.dataset!r}; valid choices: {list(domains)}")
  if len(domains) > 1 and len(domains) - len(set(config.test_domains)) < 1:
    _fail("test_domains", "leaves no training domain")


def build_rule(config, context: dict):
  """Builds the algorithm's training rule (None for plain training)."""
  factory = algorithms.resolve_transform_factory(config.algorithm)
  if factory is None:
    return None
  kwargs = algorithms.transform_kwargs(config.algorithm, config.hparams,
                                       context)
  try:
    return factory(**kwargs)
  except (TypeError, ValueError) as e:
    raise ConfigError(
        f"config.hparams: algorithm {config.algorithm!r} builds "
        f"diversity_jax.transforms.{factory.__name__}(**{kwargs}) which "
        f"failed: {e}") from None
