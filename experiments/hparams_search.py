r"""DomainBed's random hyperparameter search, seeded as DomainBed seeds it.

Trial 0 of a sweep runs the config's hyperparameters (DomainBed's
``hparams_seed = 0``: the defaults). Trial ``t >= 1`` with trial seed ``s``
(the config's ``seed``) draws every hyperparameter from its own
``numpy.random.RandomState(seed_hash(seed_hash(t, s), name))``, where
``name`` is DomainBed's name of it and ``seed_hash`` the md5 hash of the
arguments' ``str`` modulo ``2**31`` (DomainBed ``lib/misc.py``): the same
draws as DomainBed's ``random_hparams(algorithm, dataset, seed_hash(t, s))``.

Distributions (DomainBed ``hparams_registry.py``; small images are its
``SMALL_IMAGES``, here every dataset but ``tfds:<name>``):

=================  =======================  =============================
hyperparameter     small images             other datasets
=================  =======================  =============================
learning_rate      ``10**U(-4.5, -2.5)``    ``10**U(-5, -3.5)``
batch_size         ``int(2**U(3, 9))``      ``int(2**U(3, 5.5))``
weight_decay       ``0``                    ``10**U(-6, -2)``
irm / vrex weight  ``10**U(-1, 5)``
irm / vrex anneal  ``int(10**U(0, 4))``
coral weight       ``10**U(-1, 1)``          (DomainBed's ``mmd_gamma``)
fishr weight       ``10**U(1, 4)``
fishr anneal       ``int(U(0, 5000))``
fishr ema          ``U(0.90, 0.99)``
=================  =======================  =============================

The batch size is rounded up to a multiple of the data-parallel devices.
Rules DomainBed does not define keep their own hyperparameters at the
config's values, except SAM's and GSAM's radius, drawn from the grid
``{0.01, 0.02, 0.05, 0.1, 0.2, 0.5}`` of Foret et al. (2021, App. C).

References:
  Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
  2021, Sec. 4 and App. D (random search, 20 trials); DomainBed
  ``domainbed/hparams_registry.py``, ``domainbed/lib/misc.py``
  (``seed_hash``), ``domainbed/scripts/sweep.py`` (facebookresearch/DomainBed).
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, Mapping, Tuple

import numpy as np

Draw = Callable[[np.random.RandomState], Any]

_SAM_RHOS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)


def _log_uniform(low: float, high: float) -> Draw:
  return lambda r: 10 ** r.uniform(low, high)


def _anneal_log(r):
  return int(10 ** r.uniform(0, 4))


# algorithm -> {key of config.hparams.<algorithm>: (DomainBed name, draw)}.
ALGORITHM_SPACE: Mapping[str, Mapping[str, Tuple[str, Draw]]] = {
    "irm": {"weight": ("irm_lambda", _log_uniform(-1, 5)),
            "anneal_steps": ("irm_penalty_anneal_iters", _anneal_log)},
    "vrex": {"weight": ("vrex_lambda", _log_uniform(-1, 5)),
             "anneal_steps": ("vrex_penalty_anneal_iters", _anneal_log)},
    "coral": {"weight": ("mmd_gamma", _log_uniform(-1, 1))},
    "fishr": {"weight": ("lambda", _log_uniform(1, 4)),
              "anneal_steps": ("penalty_anneal_iters",
                               lambda r: int(r.uniform(0.0, 5000.0))),
              "ema": ("ema", lambda r: r.uniform(0.90, 0.99))},
    "sam": {"rho": ("rho", lambda r: float(r.choice(_SAM_RHOS)))},
    "gsam": {"rho_max": ("rho_max", lambda r: float(r.choice(_SAM_RHOS)))},
}


def seed_hash(*args) -> int:
  """An integer in ``[0, 2**31)`` from the md5 of ``str(args)`` (DomainBed).

  Example:
    >>> seed_hash(1, 0) == seed_hash(1, 0) != seed_hash(0, 1)
    True
  """
  return int(hashlib.md5(str(args).encode("utf-8")).hexdigest(), 16) % 2**31


def _common_space(small_images: bool) -> Dict[str, Tuple[str, Draw]]:
  if small_images:
    return {"learning_rate": ("lr", _log_uniform(-4.5, -2.5)),
            "weight_decay": ("weight_decay", lambda r: 0.0),
            "batch_size": ("batch_size", lambda r: int(2 ** r.uniform(3, 9)))}
  return {"learning_rate": ("lr", _log_uniform(-5, -3.5)),
          "weight_decay": ("weight_decay", _log_uniform(-6, -2)),
          "batch_size": ("batch_size", lambda r: int(2 ** r.uniform(3, 5.5)))}


def sample(algorithm: str, dataset: str, trial: int, seed: int,
           num_devices: int = 1) -> Dict[str, Any]:
  """Trial ``trial``'s hyperparameters (``trial >= 1``) for trial seed ``seed``.

  Args:
    algorithm: a name of ``experiments.algorithms.ALGORITHMS``.
    dataset: ``config.dataset`` (``tfds:<name>``: DomainBed's large-image
      distributions; otherwise its small-image ones).
    trial: DomainBed's ``hparams_seed`` (>= 1).
    seed: DomainBed's ``trial_seed`` (the run's ``config.seed``).
    num_devices: the batch size is rounded up to a multiple of it.

  Returns:
    ``{'learning_rate', 'weight_decay', 'batch_size', 'hparams': {...}}``
    (``hparams``: keys of ``config.hparams.<algorithm>``).

  Example:
    >>> sample('irm', 'rotated_mnist', 1, 0)['hparams']['anneal_steps'] >= 1
    True
  """
  if trial < 1:
    raise ValueError(f"sample: `trial` must be >= 1 (trial 0 is the config's "
                     f"hyperparameters), got {trial}")
  random_seed = seed_hash(trial, seed)
  draw = lambda name, fn: fn(np.random.RandomState(seed_hash(random_seed,
                                                             name)))
  out = {key: draw(name, fn) for key, (name, fn) in _common_space(
      not dataset.startswith("tfds:")).items()}
  out["batch_size"] = -(-out["batch_size"] // num_devices) * num_devices
  out["hparams"] = {key: draw(name, fn) for key, (name, fn) in
                    ALGORITHM_SPACE.get(algorithm, {}).items()}
  return out


def trial_config(config, algorithm: str, trial: int, seed: int):
  """A copy of ``config`` for (algorithm, trial, seed) of a sweep.

  Example:
    >>> c = trial_config(config, 'irm', 2, 0)
  """
  import jax  # pylint: disable=g-import-not-at-top
  c = config.copy_and_resolve_references()
  c.algorithm, c.seed = algorithm, int(seed)
  if trial > 0:
    s = sample(algorithm, c.dataset, trial, seed,
               c.num_devices or jax.device_count())
    c.learning_rate = float(s["learning_rate"])
    c.weight_decay = float(s["weight_decay"])
    c.batch_size = int(s["batch_size"])
    for key, value in s["hparams"].items():
      c.hparams[algorithm][key] = value
  return c
