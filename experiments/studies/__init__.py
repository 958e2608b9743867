"""Studies: one module per ``config.task``, found by name.

A study is a module ``experiments/studies/<task>.py`` (the config says
``config.task = '<task>'``) with:

* ``validate(config)``: raises ``config_validation.ConfigError`` naming the
  field; no data loaded, nothing compiled. Called once per run.
* ``run(config, workdir) -> list of tables``: the driver of
  ``python -m experiments.train``: validates, loads the data, builds one
  :class:`~experiments.recipe.Recipe` per run (held-out domain, noise rate,
  seed, ...) and trains it with ``experiments.trainer.train_one``; returns
  its results tables (``experiments.tables.results_table``), which the
  command prints.
* ``sweep(config, workdir) -> list of tables`` (optional): the driver of
  ``python -m experiments.sweep`` over the study's grid (``config.sweep``).
* ``algorithm_names(config) -> list`` (optional): the algorithms a run
  uses, for ``--config.hparams.<algorithm>.*`` override checks.

The language model (``task = 'lm'``) is its own program, ``experiments/lm``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from types import ModuleType
from typing import List

from experiments import config_validation


def names() -> List[str]:
  """The available studies (modules of this package not starting with _)."""
  here = os.path.dirname(__file__)
  return sorted(m.name for m in pkgutil.iter_modules([here])
                if not m.name.startswith("_") and hasattr(
                    importlib.import_module(f"{__name__}.{m.name}"), "run"))


def get(task: str) -> ModuleType:
  """The study module of ``config.task``; ConfigError naming the choices.

  Example:
    >>> get('dg').run
    <function run ...>
  """
  if not isinstance(task, str) or not task.isidentifier() or (
      task not in names()):
    config_validation.fail("task", f"unknown task {task!r}; valid choices: "
                           f"{names() + ['lm']}")
  return importlib.import_module(f"{__name__}.{task}")
