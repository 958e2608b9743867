"""Validation of an ensemble config (``configs/ensemble.py``).

Runs before any data is loaded or anything is compiled; every error is a
``experiments.config_validation.ConfigError`` naming the field (one line,
exit code 2 from ``python -m experiments.train``).
"""

from __future__ import annotations

import numbers
from typing import Sequence

from experiments import config_validation as cv
from experiments import models
from experiments.ensemble import regularizers

_fail = cv.fail
_check_int = cv.check_int
_check_float = cv.check_float

MEMBER_INITS = ("shared", "independent")
OPTIMIZERS = ("adam", "sgd")


def _check_names(config, field: str, choices: Sequence[str]) -> None:
  value = config[field]
  if isinstance(value, str) or not isinstance(value, (tuple, list)) or (
      not value):
    _fail(field, f"must be a non-empty tuple of names, got {value!r}")
  for name in value:
    if name not in choices:
      _fail(field, f"unknown name {name!r}; valid choices: {list(choices)}")


def validate(config) -> None:
  """Raises ConfigError naming the first bad field of an ensemble config."""
  cv.check_run_fields(config)
  _check_int(config, "num_members", 1)
  _check_int(config, "pretrain_steps", 0)
  _check_float(config, "learning_rate", positive=True)
  _check_float(config, "holdout_fraction", positive=True)
  if not config.holdout_fraction < 1:
    _fail("holdout_fraction", f"must be < 1, got {config.holdout_fraction}")
  wise = config.wise_alpha
  if isinstance(wise, bool) or not isinstance(wise, numbers.Real) or not (
      0 <= wise <= 1):
    _fail("wise_alpha", f"must be a number in [0, 1], got {wise!r}")
  if config.optimizer not in OPTIMIZERS:
    _fail("optimizer", f"unknown optimizer {config.optimizer!r}; valid "
          f"choices (element-wise, so stacked = per member): "
          f"{list(OPTIMIZERS)}")
  if config.model not in models.MODEL_NAMES:
    _fail("model", f"unknown model {config.model!r}; valid choices: "
          f"{list(models.MODEL_NAMES)}")
  _check_names(config, "member_inits", MEMBER_INITS)
  _check_names(config, "regularizers", regularizers.NAMES)
  for name in config.regularizers:
    if name not in config.diversity:
      _fail(f"diversity.{name}", "missing (hyperparameters of regularizer "
            f"{name!r})")
  for name, given in config.diversity.items():
    if name not in regularizers.REGULARIZERS:
      _fail(f"diversity.{name}", f"unknown regularizer; valid choices: "
            f"{list(regularizers.NAMES)}")
    row = regularizers.REGULARIZERS[name].hparams
    for key in given:
      if key not in row:
        _fail(f"diversity.{name}.{key}", f"unknown hyperparameter; "
              f"{name!r} takes {sorted(row)}")
    for key, default in row.items():
      if key not in given:
        _fail(f"diversity.{name}.{key}", "missing")
      if isinstance(default, int) and not isinstance(default, bool):
        _check_int(given, key, 0, f"diversity.{name}.")
      else:
        _check_float(given, key, positive=False, prefix=f"diversity.{name}.")
  if "shared" in config.member_inits and config.pretrain_steps == 0:
    _fail("pretrain_steps", "must be >= 1 with member_inits 'shared' (the "
          "members fine-tune the pre-trained network)")
  for field in ("train_domains", "test_domains"):
    value = config[field]
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
      _fail(field, f"must be a tuple of domain names, got {value!r}")
  if not config.train_domains:
    _fail("train_domains", "must name at least one domain")
  both = set(config.train_domains) & set(config.test_domains)
  if both:
    _fail("test_domains", f"{sorted(both)} also in config.train_domains")


def validate_against_dataset(config, domains: Sequence[str]) -> None:
  for field in ("train_domains", "test_domains"):
    for d in config[field]:
      if d not in domains:
        _fail(field, f"unknown domain {d!r} of {config.dataset!r}; its "
              f"domains: {list(domains)}")
