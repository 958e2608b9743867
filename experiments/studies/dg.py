"""The domain-generalization study (``config.task = 'dg'``), DomainBed protocol.

Driver: every domain of ``config.test_domains`` (default: all) is held out
in turn, one run each (``<workdir>/test_<domain>``, a
:func:`~experiments.studies.dg_recipe.build_recipe` trained by
``trainer.train_one``); with ``leave_one_domain_out`` selection, one more
run per other domain ``v`` holds out both (``<workdir>/cv_<domain>_<v>``).
Each selection method of ``config.selection`` gives one results table
(:mod:`experiments.selection`, :mod:`experiments.tables`).

The sweep (``python -m experiments.sweep``) runs this driver for every
algorithm x hyperparameter trial x seed of ``config.sweep`` (trial 0: the
config's hyperparameters; others: :func:`experiments.hparams_search.sample`)
in ``<workdir>/<algorithm>/trial_<t>/seed_<s>`` and collects one table per
selection method: per (algorithm, held-out domain, seed) the trial with the
best validation accuracy, then mean ± standard error over seeds.

References:
  Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
  2021, Sec. 3-4; DomainBed ``scripts/sweep.py``, ``model_selection.py``,
  ``scripts/collect_results.py`` (facebookresearch/DomainBed).
"""

from __future__ import annotations

import glob
import os
import time
from typing import Any, Dict, List, Optional, Sequence

import jax

from experiments import config_validation
from experiments import hparams_search
from experiments import selection
from experiments import tables
from experiments import trainer
from experiments.studies import dg_recipe

validate = config_validation.validate_config


def algorithm_names(config) -> List[str]:
  """The algorithm a train run uses (``--config.hparams`` override checks)."""
  return [config.algorithm]


def sweep_algorithm_names(config) -> List[str]:
  """The algorithms a sweep runs."""
  return config_validation.sweep_grid(config)[0]


def train_one(config, workdir: str, test_domain: Optional[str], *,
              dataset=None, mesh=None,
              exclude: Sequence[str] = ()) -> Dict[str, Any]:
  """One run with ``test_domain`` held out; resumes from ``workdir``.

  Called alone (``dataset=None``) it validates the config and loads the
  data first; the driver passes both (validated once per run).

  Returns:
    ``{'test_domain', 'val_acc', 'test_acc', 'last_test_acc',
    'selected_step', 'final_loss', 'num_steps', 'compiles', 'evals'}``:
    ``test_acc`` is the test domain's "in" accuracy at the step of best
    training-domain validation accuracy ``val_acc`` (see
    ``trainer.train_one``).

  Example:
    >>> from configs import mock
    >>> result = train_one(mock.get_config('smoke'), '/tmp/run', 'd0')
  """
  if dataset is None:
    validate(config)
    trainer.check_writable(workdir)
    trainer.check_same_run(config, workdir)
    dataset = dg_recipe.load_dataset(config)
    config_validation.validate_domains(config, dataset.domains)
  mesh = mesh or trainer.make_mesh(config)
  recipe = dg_recipe.build_recipe(config, dataset, test_domain, mesh,
                                  exclude=exclude)
  return {"test_domain": test_domain,
          **trainer.train_one(recipe, config, workdir, mesh)}


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def _held_out(config, ds) -> List[Optional[str]]:
  if len(ds.domains) == 1:
    return [None]
  return list(config.test_domains) or list(ds.domains)


def train_domains(config, workdir: str, ds, mesh) -> Dict[str, Dict]:
  """Every held-out domain's run (and cross-validation runs if selected).

  Returns:
    ``domain name -> {'test': result, 'cv': [result per other domain]}``
    (``'iid'`` for a one-domain dataset).
  """
  methods = config_validation.selections(config)
  held_out = _held_out(config, ds)
  out = {}
  for i, domain in enumerate(held_out):
    sub = os.path.join(workdir, f"test_{domain or 'iid'}")
    _say(f"[{i + 1}/{len(held_out)}] {config.name} {config.algorithm}: "
         f"held-out domain {domain}, {config.num_steps} steps -> {sub}")
    start = time.time()
    r = train_one(config, sub, domain, dataset=ds, mesh=mesh)
    _say(f"    test accuracy {100 * r['test_acc']:.1f}% at step "
         f"{r['selected_step']} (training-domain validation "
         f"{100 * r['val_acc']:.1f}%), {time.time() - start:.0f} s")
    cv = []
    if "leave_one_domain_out" in methods and domain is not None:
      for other in ds.domains:
        if other != domain:
          cv.append(train_one(
              config, os.path.join(workdir, f"cv_{domain}_{other}"), other,
              dataset=ds, mesh=mesh, exclude=(domain,)))
    out[domain or "iid"] = {"test": r, "cv": cv}
  return out


def selected(runs: Dict[str, Dict], method: str,
             num_domains: int) -> Dict[str, Optional[dict]]:
  """``domain -> {'step', 'val_acc', 'test_acc'}`` by ``method``."""
  return {d: selection.select(method, r["test"]["evals"],
                              [c["evals"] for c in r["cv"]], num_domains)
          for d, r in runs.items()}


def _check_workdirs(config, workdir: str) -> None:
  """Before any data is loaded: writable, and runs already in it made with
  this config (or the table would mix two experiments)."""
  trainer.check_writable(workdir)
  for run_dir in sorted(glob.glob(os.path.join(workdir, "test_*")) +
                        glob.glob(os.path.join(workdir, "cv_*"))):
    trainer.check_same_run(config, run_dir)


def run(config, workdir: str) -> List[Dict[str, object]]:
  """The train command: every held-out domain; one table per selection.

  Validates the whole config before loading data or compiling, trains one
  model per held-out domain in ``workdir/test_<domain>`` and writes the
  tables (``results.md`` / ``results.csv`` for the first selection method,
  ``results_<method>.*`` for the others) into ``workdir``.

  Returns:
    The tables (``{'title', 'markdown', 'rows', 'stem', 'results'}``;
    ``stem``: the file name, ``results``: the per-domain run results).

  Example:
    >>> from configs import rotated_mnist
    >>> tables = run(rotated_mnist.get_config(), 'runs/rm')
  """
  validate(config)
  _check_workdirs(config, workdir)
  ds = dg_recipe.load_dataset(config)
  config_validation.validate_domains(config, ds.domains)
  return _run_loaded(config, workdir, ds, trainer.make_mesh(config))[1]


def _run_loaded(config, workdir: str, ds, mesh):
  """``(runs, tables)`` of :func:`run` once validated and loaded."""
  runs = train_domains(config, workdir, ds, mesh)
  out = []
  for i, method in enumerate(config_validation.selections(config)):
    accs = {config.algorithm: {
        d: [s["test_acc"]] if s else []
        for d, s in selected(runs, method, len(ds.domains)).items()}}
    table = tables.results_table(
        accs, list(runs),
        f"{config.name}: {config.algorithm}, test accuracy (%) per held-out "
        f"domain, {selection.TITLES[method]} selection")
    table["results"] = [r["test"] for r in runs.values()]
    table["stem"] = "results" if i == 0 else f"results_{method}"
    if jax.process_index() == 0:
      tables.write_table(table, workdir, table["stem"])
    out.append(table)
  return runs, out


def sweep(config, workdir: str) -> List[Dict[str, object]]:
  """Algorithms x hyperparameter trials x seeds of ``config.sweep``.

  Every config is validated before the first run starts. Writes
  ``sweep.md`` / ``sweep.csv`` (first selection method) and
  ``sweep_<method>.*`` into ``workdir``.

  Returns:
    One table per selection method (``{'title', 'markdown', 'rows', 'stem',
    'accs'}``; ``accs``: algorithm -> domain -> test accuracy per seed).

  Example:
    >>> from configs import mock
    >>> tables = sweep(mock.get_config('smoke'), '/tmp/sw')
  """
  validate(config)
  names, n_hparams, seeds = config_validation.sweep_grid(config)
  configs = {}
  for name in names:
    for trial in range(n_hparams):
      for seed in seeds:
        c = hparams_search.trial_config(config, name, trial, seed)
        validate(c)
        configs[(name, trial, seed)] = c
  for (name, trial, seed), c in configs.items():
    _check_workdirs(c, _trial_dir(workdir, name, trial, seed))
  ds = dg_recipe.load_dataset(config)
  config_validation.validate_domains(config, ds.domains)
  mesh = trainer.make_mesh(config)
  runs = {key: _run_loaded(c, _trial_dir(workdir, *key), ds, mesh)[0]
          for key, c in configs.items()}
  domains = list(next(iter(runs.values())))
  out = []
  for i, method in enumerate(config_validation.selections(config)):
    accs = {}
    for name in names:
      per = {s: [selected(runs[(name, t, s)], method, len(ds.domains))
                 for t in range(n_hparams)] for s in seeds}
      accs[name] = {d: [selection.sweep_acc([trial[d] for trial in per[s]])
                        for s in seeds] for d in domains}
    accs = selection.collect(accs)
    table = tables.results_table(
        accs, domains,
        f"{config.name}: test accuracy (%), {selection.TITLES[method]} "
        f"selection, {n_hparams} hyperparameter trial(s), seeds "
        f"{','.join(map(str, seeds))} (mean ± standard error over seeds)")
    table["accs"] = accs
    table["stem"] = "sweep" if i == 0 else f"sweep_{method}"
    if jax.process_index() == 0:
      tables.write_table(table, workdir, table["stem"])
    out.append(table)
  return out


def _trial_dir(workdir: str, name: str, trial: int, seed: int) -> str:
  return os.path.join(workdir, name, f"trial_{trial}", f"seed_{seed}")
