"""Leave-one-domain-out loop and the results table (markdown + CSV).

Each held-out domain is one ``trainer.train_one`` run in
``<workdir>/test_<domain>``; the table reports, per held-out domain, the test
accuracy selected by training-domain validation (DomainBed, Gulrajani &
Lopez-Paz 2021, Sec. 3 "training-domain validation set") and the average.
"""

from __future__ import annotations

import csv
import glob
import os
import time
from typing import Dict, List, Sequence

from experiments import config_validation
from experiments import trainer


def run(config, workdir: str) -> List[Dict]:
  """Trains one model per held-out domain; writes results.md / results.csv.

  Args:
    config: experiment config; ``config.test_domains`` (default: all).
    workdir: directory of the table and of one ``test_<domain>`` run each.

  Returns:
    One ``trainer.train_one`` result per held-out domain.

  Example:
    >>> from configs import mock
    >>> results = run(mock.get_config('smoke'), '/tmp/lodo')

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, Sec. 4 (leave-one-domain-out, training-domain validation) and
    DomainBed's ``model_selection.IIDAccuracySelectionMethod``.
  """
  config_validation.validate_config(config)
  # Before any data is loaded: the workdir must be writable, and runs already
  # in it (test_<domain>/) must have been made with this config, or the table
  # would mix two experiments.
  trainer.check_writable(workdir)
  for run_dir in sorted(glob.glob(os.path.join(workdir, "test_*"))):
    trainer.check_same_run(config, run_dir)
  ds = trainer._load_dataset(config)  # pylint: disable=protected-access
  config_validation.validate_against_dataset(config, ds.domains)
  if len(ds.domains) == 1:
    test_domains = [None]
  else:
    test_domains = list(config.test_domains) or list(ds.domains)
  results = []
  for i, domain in enumerate(test_domains):
    sub = os.path.join(workdir, f"test_{domain or 'iid'}")
    _say(f"[{i + 1}/{len(test_domains)}] {config.name} {config.algorithm}: "
         f"held-out domain {domain}, {config.num_steps} steps -> {sub}")
    start = time.time()
    r = trainer.train_one(config, sub, domain, dataset=ds)
    _say(f"    test accuracy {100 * r['test_acc']:.1f}% at step "
         f"{r['selected_step']} (training-domain validation "
         f"{100 * r['val_acc']:.1f}%), {time.time() - start:.0f} s")
    results.append(r)
  table = format_table({config.algorithm: results}, [
      r["test_domain"] or "iid" for r in results])
  if _primary():
    write_table(table, workdir, "results")
  return results


def _primary() -> bool:
  """True on process 0, which alone writes the shared files."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index() == 0


def _say(message: str) -> None:
  if _primary():
    print(message, flush=True)


def format_table(runs: Dict[str, List[List[Dict]] | List[Dict]],
                 domains: Sequence[str]) -> Dict[str, object]:
  """Builds a DomainBed-style table: one row per algorithm, % accuracy.

  Args:
    runs: algorithm -> results of one LODO run (list of per-domain dicts) or
      of several seeds (list of such lists); seeds give ``mean ± std``.
    domains: held-out domains, the table's columns.

  Returns:
    ``{'markdown': str, 'rows': list of CSV rows}``; cells are
    ``100 * mean_s acc[s, d]`` (``± std_s``, population std, over seeds) and
    ``avg`` is the per-seed mean over domains, then averaged.

  Example:
    >>> t = format_table({'erm': [{'test_domain': 'a', 'test_acc': 0.9}]}, ['a'])
    >>> t['markdown'].splitlines()[2]
    '| erm | 90.0 | 90.0 | 1 |'

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, Sec. 4 (leave-one-domain-out, training-domain validation) and
    DomainBed's ``model_selection.IIDAccuracySelectionMethod``.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  header = ["algorithm"] + [str(d) for d in domains] + ["avg", "seeds"]
  md = ["| " + " | ".join(header) + " |",
        "|" + "---|" * len(header)]
  rows = [header]
  for algo, res in runs.items():
    seeds = res if res and isinstance(res[0], list) else [res]
    acc = np.array([[100 * next(r["test_acc"] for r in s
                                if (r["test_domain"] or "iid") == d)
                     for d in domains] for s in seeds])  # (seeds, domains)
    acc = np.concatenate([acc, acc.mean(axis=1, keepdims=True)], axis=1)
    mean, std = acc.mean(axis=0), acc.std(axis=0)
    if len(seeds) > 1:
      cells = [f"{m:.1f} ± {s:.1f}" for m, s in zip(mean, std)]
    else:
      cells = [f"{m:.1f}" for m in mean]
    md.append("| " + " | ".join([algo] + cells + [str(len(seeds))]) + " |")
    rows.append([algo] + [f"{m:.4f}" for m in mean] + [len(seeds)])
  return {"markdown": "\n".join(md), "rows": rows}


def write_table(table: Dict[str, object], workdir: str, stem: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f"{stem}.md"), "w") as f:
    f.write(table["markdown"] + "\n")
  with open(os.path.join(workdir, f"{stem}.csv"), "w", newline="") as f:
    csv.writer(f).writerows(table["rows"])
