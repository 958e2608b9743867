"""The per-example loss of a classification run, from ``config.loss``.

``config.loss`` names any per-example loss of :mod:`diversity_jax.losses`, or
``'cross_entropy'`` (optax); ``config.loss_kwargs`` (Python API) and
``config.loss_args`` (command line, ``'q=0.7,k=1'``, merged over them) are
its keyword arguments.
"""

from __future__ import annotations

import ast
from typing import Any, Callable, Sequence

import optax

import diversity_jax

BUILTIN_LOSSES = ("cross_entropy",)


class LossConfigError(ValueError):
  """``(field, message)`` of a bad loss setting (config_validation words it)."""


def loss_choices() -> Sequence[str]:
  return BUILTIN_LOSSES + tuple(sorted(diversity_jax.losses.__all__))


def loss_kwargs(config) -> dict:
  """``config.loss_kwargs`` updated with the parsed ``config.loss_args``."""
  kwargs = dict(config.loss_kwargs)
  args = config.get("loss_args", "")
  if not isinstance(args, str):
    raise LossConfigError("loss_args",
                          f"must be a string 'name=value,...', got {args!r}")
  for item in filter(None, (a.strip() for a in args.split(","))):
    key, sep, value = item.partition("=")
    if not sep or not key.strip().isidentifier():
      raise LossConfigError("loss_args", f"must look like 'q=0.7,k=1', got "
                            f"{args!r}")
    try:
      kwargs[key.strip()] = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
      kwargs[key.strip()] = value.strip()
  return kwargs


def per_example_loss(name: str, kwargs: dict) -> Callable[[Any, Any], Any]:
  """``fn(logits (N, K), labels (N,)) -> per-example loss (N,)``.

  Example:
    >>> fn = per_example_loss('comp_sum', {'tau': 1.0})
  """
  if name == "cross_entropy":
    if kwargs:
      raise LossConfigError("loss_kwargs/loss_args", "'cross_entropy' takes "
                            f"no arguments, got {sorted(kwargs)}")
    return optax.softmax_cross_entropy_with_integer_labels
  if name not in diversity_jax.losses.__all__:
    raise LossConfigError("loss", f"unknown loss {name!r}; valid choices: "
                          f"{list(loss_choices())}")
  fn = getattr(diversity_jax.losses, name)
  return lambda logits, labels: fn(logits, labels, **kwargs)


def from_config(config) -> Callable[[Any, Any], Any]:
  """The run's per-example loss (``config.loss`` with its arguments)."""
  return per_example_loss(config.loss, loss_kwargs(config))
