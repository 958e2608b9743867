"""Text corpora for language modelling: documents of a train / validation split.

* ``'stdlib'``: the Python standard library's own source files (code and
  docstrings), found through ``sysconfig.get_paths()['stdlib']``: on every
  machine that runs Python, nothing to download.
* ``'tfds:<name>'``: the string feature ``text_key`` of a TFDS dataset's
  splits (prepared in ``data_dir``, or downloaded with ``download=True``).

Selection rule of ``'stdlib'`` (fixed, independent of the Python version, so
the corpus of one Python version is reproducible and another version's is
the same recipe): every ``*.py`` file below the stdlib directory, except the
directories named in ``STDLIB_SKIP_DIRS`` (test suites, installed packages,
generated codec tables, bytecode) or starting with ``config-`` (build files),
and files named ``_sysconfigdata*`` (build-specific). Files are taken in the
order of their relative POSIX paths and read as UTF-8. A file belongs to the
validation split iff ``crc32(relative path) / 2**32 < validation_fraction``,
so a file's split never depends on which other files exist.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import zlib
from typing import List, Optional

STDLIB = "stdlib"
SPLITS = ("train", "validation")
STDLIB_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "site-packages",
                              "dist-packages", "__pycache__", "encodings"})


def stdlib_root() -> str:
  """The directory of this interpreter's standard library."""
  return sysconfig.get_paths()["stdlib"]


def stdlib_id() -> str:
  """``'stdlib-py<major>.<minor>'``: the corpus differs between versions."""
  return f"{STDLIB}-py{sys.version_info.major}.{sys.version_info.minor}"


def stdlib_files(root: Optional[str] = None) -> List[str]:
  """Relative POSIX paths of the selected ``*.py`` files, sorted."""
  root = root or stdlib_root()
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames
                   if d not in STDLIB_SKIP_DIRS and not d.startswith("config-")]
    rel = os.path.relpath(dirpath, root)
    for f in filenames:
      if f.endswith(".py") and not f.startswith("_sysconfigdata"):
        path = f if rel == os.curdir else os.path.join(rel, f)
        out.append(path.replace(os.sep, "/"))
  return sorted(out)


def split_of(relpath: str, validation_fraction: float) -> str:
  """``'validation'`` iff ``crc32(relpath) / 2**32 < validation_fraction``."""
  h = zlib.crc32(relpath.encode("utf-8")) / 2.0**32
  return "validation" if h < validation_fraction else "train"


def _truncate(texts, max_chars: int) -> List[str]:
  """The leading documents holding ``max_chars`` characters (the last one
  cut); all of them when ``max_chars`` is 0."""
  if not max_chars:
    return list(texts)
  out, left = [], max_chars
  for t in texts:
    if left <= 0:
      break
    out.append(t[:left])
    left -= len(out[-1])
  return out


def split_budget(split: str, max_chars: int,
                 validation_fraction: float) -> int:
  """Characters of ``split`` when the corpus is cut to ``max_chars`` (0: all)."""
  if not max_chars:
    return 0
  share = validation_fraction if split == "validation" else (
      1.0 - validation_fraction)
  return max(1, int(round(max_chars * share)))


def stdlib_documents(split: str, *, max_chars: int = 0,
                     validation_fraction: float = 0.05,
                     root: Optional[str] = None) -> List[str]:
  """The documents (file contents) of ``split`` of the ``'stdlib'`` corpus.

  Args:
    split: ``'train'`` or ``'validation'``.
    max_chars: keep the leading files (in path order) up to this split's
      share of ``max_chars`` characters (``split_budget``); 0 keeps all.
    validation_fraction: expected share of files in the validation split.
    root: the stdlib directory (default ``stdlib_root()``).

  Returns:
    A list of strings, one per file, in path order.

  Example:
    >>> docs = stdlib_documents('validation', max_chars=10_000)
    >>> sum(map(len, docs)) <= 500
    True
  """
  root = root or stdlib_root()
  budget = split_budget(split, max_chars, validation_fraction)
  texts, total = [], 0
  for rel in stdlib_files(root):
    if split_of(rel, validation_fraction) != split:
      continue
    with open(os.path.join(root, rel), encoding="utf-8",
              errors="replace") as f:
      texts.append(f.read())
    total += len(texts[-1])
    if budget and total >= budget:
      break
  return _truncate(texts, budget)


def tfds_documents(name: str, split: str, role: str, *, data_dir: str,
                   text_key: str = "text", max_chars: int = 0,
                   validation_fraction: float = 0.05,
                   download: bool = False) -> List[str]:
  """The ``text_key`` strings of TFDS dataset ``name``'s ``split``, in order.

  ``role`` (``'train'`` or ``'validation'``) is the corpus split that
  ``split`` provides. Nothing is downloaded unless ``download`` is True; a
  dataset that is not prepared in ``data_dir`` raises ``FileNotFoundError``.
  ``max_chars`` cuts the corpus as in ``stdlib_documents`` (``role``'s share
  ``split_budget(role, max_chars, validation_fraction)``).
  """
  from diversity_jax.data import _tfds_real  # pylint: disable=g-import-not-at-top
  builder = _tfds_real.prepared_builder(name, data_dir, download, "load_text")
  feature = builder.info.features
  if text_key not in feature:
    raise ValueError(f"TFDS dataset {name!r} has no feature {text_key!r}; "
                     f"its features: {sorted(feature.keys())}")
  try:
    source = builder.as_data_source(split=split)
  except (KeyError, ValueError) as e:
    raise ValueError(f"TFDS dataset {name!r} has no split {split!r}; its "
                     f"splits: {sorted(builder.info.splits)}") from e
  budget = split_budget(role, max_chars, validation_fraction)
  texts, total = [], 0
  for i in range(len(source)):
    t = source[i][text_key]
    t = t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
    texts.append(t)
    total += len(t)
    if budget and total >= budget:
      break
  return _truncate(texts, budget)
