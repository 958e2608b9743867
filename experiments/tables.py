"""Results tables (markdown + CSV), DomainBed ``collect_results`` style.

One row per algorithm, one column per held-out domain, then the average:
a cell is ``100 * mean`` of the test accuracies over seeds, ``± 100 *
standard error`` (``std / sqrt(n)``, population std, as DomainBed's
``format_mean``) when there are several; ``avg`` is the mean of the row's
cells (``X`` when a cell is missing), as DomainBed's table.

References:
  DomainBed ``domainbed/scripts/collect_results.py`` (``format_mean``,
  ``print_results_tables``), facebookresearch/DomainBed.
"""

from __future__ import annotations

import csv
import os
from typing import Dict, List, Mapping, Sequence

import numpy as np


def format_mean(values: Sequence[float]):
  """``(mean, standard error, text)`` in %, DomainBed's ``format_mean``.

  Example:
    >>> format_mean([0.9, 0.7])[2]
    '80.0 ± 7.1'
  """
  if len(values) == 0:
    return None, None, "X"
  mean = 100 * float(np.mean(values))
  err = 100 * float(np.std(np.asarray(values) / np.sqrt(len(values))))
  text = f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ± {err:.1f}"
  return mean, err, text


def results_table(accs: Mapping[str, Mapping[str, Sequence[float]]],
                  domains: Sequence[str], title: str = "") -> Dict[str, object]:
  """The table of ``algorithm -> domain -> test accuracy per seed``.

  Args:
    accs: test accuracies in [0, 1], one per seed (trial seed).
    domains: the columns (held-out domains).
    title: a line saying what the table holds (selection method, ...).

  Returns:
    ``{'title', 'markdown', 'rows'}`` (``rows``: CSV rows, means in %).

  Example:
    >>> t = results_table({'erm': {'a': [0.9]}}, ['a'])
    >>> t['markdown'].splitlines()[2]
    '| erm | 90.0 | 90.0 | 1 |'
  """
  header = ["algorithm"] + [str(d) for d in domains] + ["avg", "seeds"]
  md = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  rows: List[list] = [header]
  for algo, per_domain in accs.items():
    cells = [format_mean(per_domain.get(d, ())) for d in domains]
    means = [m for m, _, _ in cells]
    avg = None if None in means else float(np.mean(means))
    seeds = max((len(per_domain.get(d, ())) for d in domains), default=0)
    md.append("| " + " | ".join(
        [algo] + [t for _, _, t in cells] +
        ["X" if avg is None else f"{avg:.1f}", str(seeds)]) + " |")
    rows.append([algo] + ["" if m is None else f"{m:.4f}"
                          for m in means + [avg]] + [seeds])
  return {"title": title, "markdown": "\n".join(md), "rows": rows}


def write_table(table: Mapping[str, object], workdir: str, stem: str) -> None:
  """Writes ``table['markdown']`` to ``<stem>.md`` and its rows to ``<stem>.csv``."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, f"{stem}.md"), "w") as f:
    f.write(table["markdown"] + "\n")
  with open(os.path.join(workdir, f"{stem}.csv"), "w", newline="") as f:
    csv.writer(f).writerows(table["rows"])


def print_tables(out_tables, workdir: str) -> None:
  """Prints each table with its title and the files it was written to."""
  for table in out_tables:
    stem = table["stem"]
    print(f"\n{table['title']}\n{table['markdown']}\n"
          f"written to {os.path.join(workdir, stem + '.md')} and {stem}.csv")
