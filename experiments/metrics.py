"""Metric logging: a JSONL log, TensorBoard event files, and PNG curves.

Rows of ``metrics.jsonl`` are ``{"step": int, "split": "train"|"eval", ...}``.
On resume, rows after the restored step are dropped (they belong to the part
of the killed run that is re-run), so the log of a resumed run equals the log
of an uninterrupted run. A last line cut short (the run was killed, or the disk
filled up, in the middle of a write) is dropped too. Non-finite values are
written to ``metrics.jsonl`` (as ``"nan"`` / ``"inf"``) but not to
TensorBoard, which cannot plot them.
"""

from __future__ import annotations

import json
import math
import os
from typing import Dict, Iterable, List, Optional


class MetricWriter:
  """Writes scalars to ``<workdir>/metrics.jsonl`` and TensorBoard events.

  Args:
    workdir: run directory.
    resume_step: when resuming, rows with ``step > resume_step`` are removed
      from the JSONL log (and TensorBoard purges them).
    tensorboard: write TensorBoard event files (via tensorboardX) too.
  """

  def __init__(self, workdir: str, resume_step: int = 0,
               tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self.path = os.path.join(workdir, "metrics.jsonl")
    if os.path.exists(self.path):
      rows = [r for r in read_jsonl(self.path) if r["step"] <= resume_step]
      # Rewritten atomically: a kill during the rewrite keeps the old log.
      tmp = self.path + ".tmp"
      with open(tmp, "w") as f:
        for r in rows:
          f.write(json.dumps(r) + "\n")
      os.replace(tmp, self.path)
    self._file = open(self.path, "a")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"),
                               purge_step=resume_step + 1 if resume_step else None)

  def write(self, step: int, split: str, scalars: Dict[str, float]) -> None:
    row = {"step": int(step), "split": split}
    row.update({k: _jsonable(v) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")
    if self._tb is not None:
      for k, v in scalars.items():
        if math.isfinite(float(v)):
          self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def flush(self) -> None:
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    self.flush()
    self._file.close()
    if self._tb is not None:
      self._tb.close()


class NullWriter:
  """A :class:`MetricWriter` that writes nothing (processes other than 0)."""

  def write(self, step: int, split: str, scalars: Dict[str, float]) -> None:
    del step, split, scalars

  def flush(self) -> None:
    pass

  def close(self) -> None:
    pass


def _jsonable(v):
  v = float(v)
  return v if math.isfinite(v) else str(v)


def read_jsonl(path: str) -> List[dict]:
  """The rows of a JSONL log, without a last line that was cut short.

  Rows are appended one ``write`` at a time, so only the last line can be
  incomplete (a kill or a full disk during the write); it is dropped. Any
  other line that is not JSON is an error naming the file and line.
  """
  with open(path) as f:
    lines = f.read().split("\n")
  rows = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:  # no newline after it: a partial last write
        break
      raise ValueError(f"{path}, line {i + 1}: not a JSON row ({e})") from None
  return rows


def plot_curves(workdirs: Iterable[str], out_path: str,
                keys: Optional[List[str]] = None) -> str:
  """Saves training curves (train loss/accuracy, eval accuracies) as a PNG.

  Args:
    workdirs: run directories holding ``metrics.jsonl`` (one line per run).
    out_path: PNG path.
    keys: metric names to plot; default loss, accuracy, val_acc, test_in.

  Returns:
    ``out_path``.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  keys = keys or ["loss", "accuracy", "val_acc", "test_in"]
  fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
  for workdir in workdirs:
    rows = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    label = os.path.basename(os.path.normpath(workdir))
    for ax, key in zip(axes, keys):
      pts = [(r["step"], r[key]) for r in rows
             if key in r and isinstance(r[key], float)]
      if pts:
        ax.plot(*zip(*pts), label=label)
  for ax, key in zip(axes, keys):
    ax.set_title(key)
    ax.set_xlabel("step")
  if axes[-1].get_legend_handles_labels()[0]:
    axes[-1].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(out_path, dpi=100)
  plt.close(fig)
  return out_path
