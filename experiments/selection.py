"""DomainBed's model selection methods over the eval records of DG runs.

A run's records are its eval rows ``{'step', 'val/<domain>', 'val_acc',
'test_in', 'test_out'}`` (``trainer.train_one(...)['evals']``): accuracy on
the training domains' held-out ("out") splits and their mean, and on the test
domain's "in" and "out" splits. Each method maps the records of one held-out
domain to ``{'step', 'val_acc', 'test_acc'}``:

* ``training_domain`` (``IIDAccuracySelectionMethod``): the step maximising
  ``val_acc``; ``test_acc`` is ``test_in`` there.
* ``test_domain`` (``OracleSelectionMethod``): the last step (no early
  stopping); ``val_acc = test_out``, ``test_acc = test_in``.
* ``leave_one_domain_out`` (``LeaveOneOutSelectionMethod``): the runs that
  also hold out one other domain ``v`` (trained on the rest, ``test_in`` of
  ``v`` measured): per step, ``val_acc = sum_v test_in_v / (n_domains - 1)``
  over every other domain (a step missing one of them is skipped); the step
  maximising it, ``test_acc`` from the test run at that step.

Across hyperparameter trials (:func:`sweep_acc`) the trial with the highest
``val_acc`` is kept (DomainBed sorts by ``val_acc`` and reverses, so of equal
values the later trial).

References:
  Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
  2021, Sec. 3 (the three model selection methods); DomainBed
  ``domainbed/model_selection.py`` (facebookresearch/DomainBed).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

METHODS = ("training_domain", "test_domain", "leave_one_domain_out")
TITLES = {"training_domain": "training-domain validation",
          "test_domain": "test-domain validation (oracle)",
          "leave_one_domain_out": "leave-one-domain-out cross-validation"}


def training_domain(records: Sequence[dict]) -> Optional[dict]:
  """The step of best training-domain validation accuracy (first of equals).

  Example:
    >>> training_domain([{'step': 1, 'val_acc': .5, 'test_in': .4},
    ...                  {'step': 2, 'val_acc': .7, 'test_in': .3}])
    {'step': 2, 'val_acc': 0.7, 'test_acc': 0.3}
  """
  if not records:
    return None
  best = max(records, key=lambda r: r["val_acc"])
  return {"step": best["step"], "val_acc": best["val_acc"],
          "test_acc": best["test_in"]}


def test_domain(records: Sequence[dict]) -> Optional[dict]:
  """The last step; validation on the test domain's "out" split (oracle).

  Example:
    >>> test_domain([{'step': 1, 'test_out': .5, 'test_in': .4},
    ...              {'step': 2, 'test_out': .6, 'test_in': .3}])
    {'step': 2, 'val_acc': 0.6, 'test_acc': 0.3}
  """
  if not records:
    return None
  last = max(records, key=lambda r: r["step"])
  return {"step": last["step"], "val_acc": last["test_out"],
          "test_acc": last["test_in"]}


def leave_one_domain_out(records: Sequence[dict],
                         cv_runs: Sequence[Sequence[dict]],
                         num_domains: int) -> Optional[dict]:
  """Leave-one-domain-out cross-validation of one held-out domain.

  Args:
    records: the test run's records (test domain held out).
    cv_runs: one list of records per other domain ``v``: the run that holds
      out the test domain and ``v`` (its ``test_in`` is ``v``'s accuracy).
    num_domains: the dataset's number of domains.

  Returns:
    ``{'step', 'val_acc', 'test_acc'}`` of the best step, or None when no
    step has every other domain's record.

  Example:
    >>> leave_one_domain_out([{'step': 1, 'test_in': .9}],
    ...                      [[{'step': 1, 'test_in': .5}],
    ...                       [{'step': 1, 'test_in': .7}]], 3)
    {'step': 1, 'val_acc': 0.6, 'test_acc': 0.9}
  """
  if len(cv_runs) != num_domains - 1:
    return None
  by_step = [{r["step"]: r["test_in"] for r in run} for run in cv_runs]
  best = None
  for r in records:
    if all(r["step"] in run for run in by_step):
      val = sum(run[r["step"]] for run in by_step) / (num_domains - 1)
      if best is None or val > best["val_acc"]:
        best = {"step": r["step"], "val_acc": val, "test_acc": r["test_in"]}
  return best


def select(method: str, records: Sequence[dict],
           cv_runs: Sequence[Sequence[dict]] = (),
           num_domains: int = 0) -> Optional[dict]:
  """``method`` (one of :data:`METHODS`) applied to one run's records."""
  if method == "training_domain":
    return training_domain(records)
  if method == "test_domain":
    return test_domain(records)
  if method == "leave_one_domain_out":
    return leave_one_domain_out(records, cv_runs, num_domains)
  raise ValueError(f"unknown selection method {method!r}; valid: "
                   f"{list(METHODS)}")


def sweep_acc(selected: Sequence[Optional[dict]]) -> Optional[float]:
  """Test accuracy of the hyperparameter trial with the best ``val_acc``.

  ``selected``: one :func:`select` result per trial (None: no result). Of
  equal ``val_acc`` the later trial wins, as DomainBed's
  ``SelectionMethod.sweep_acc`` (a stable sort by ``val_acc``, reversed).

  Example:
    >>> sweep_acc([{'val_acc': .5, 'test_acc': .9},
    ...            {'val_acc': .6, 'test_acc': .4}])
    0.4
  """
  best: Optional[dict] = None
  for s in selected:
    if s is not None and (best is None or s["val_acc"] >= best["val_acc"]):
      best = s
  return None if best is None else best["test_acc"]


def collect(accs: Dict[str, Dict[str, List[Optional[float]]]]):
  """Drops the missing entries: ``algorithm -> domain -> [acc per seed]``."""
  return {a: {d: [x for x in v if x is not None] for d, v in per.items()}
          for a, per in accs.items()}
