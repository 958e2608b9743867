"""Unigram baselines of a tokenized corpus: what an LM must beat.

Both count the same target tokens the LM is scored on (every token of a row
but the first, padding excluded).

* ``unigram_perplexity(train, eval)``: the unigram model fitted on the train
  split with add-one (Laplace) smoothing over the tokenizer's ``K`` ids,
  ``p(t) = (c_t + 1) / (C + K)``, scored on the eval split:
  ``exp(-(1/M) sum_i log p(t_i))``.
* ``oracle_unigram_perplexity(eval)``: the eval split's own unigram
  distribution scored on itself, ``exp(H)`` with ``H = -sum_t q_t log q_t``:
  no unigram model (fitted on anything) does better on that split.
"""

from __future__ import annotations

import numpy as np


def target_counts(rows: np.ndarray, num_ids: int, pad_id: int) -> np.ndarray:
  """Counts ``(num_ids,)`` of the target tokens ``rows[:, 1:]`` (no padding)."""
  t = np.asarray(rows)[:, 1:].reshape(-1)
  return np.bincount(t[t != pad_id], minlength=num_ids).astype(np.float64)


def unigram_perplexity(train_rows, eval_rows, num_ids: int,
                       pad_id: int) -> float:
  """Perplexity on ``eval_rows`` of the add-one unigram of ``train_rows``.

  Example:
    >>> rows = np.array([[0, 2, 2, 3]])
    >>> round(unigram_perplexity(rows, rows, 4, pad_id=0), 4)  # p = 3/7, 2/7
    2.671

  References:
    Jurafsky & Martin, "Speech and Language Processing", 3rd ed. draft,
    Ch. 3.5.1 (Laplace smoothing) and 3.3 (perplexity).
  """
  c = target_counts(train_rows, num_ids, pad_id)
  logp = np.log((c + 1.0) / (c.sum() + num_ids))
  e = target_counts(eval_rows, num_ids, pad_id)
  return float(np.exp(-(e @ logp) / max(e.sum(), 1.0)))


def oracle_unigram_perplexity(eval_rows, num_ids: int, pad_id: int) -> float:
  """``exp`` of the entropy of ``eval_rows``' own unigram distribution.

  Example:
    >>> round(oracle_unigram_perplexity(np.array([[0, 2, 2, 3]]), 4, 0), 4)
    1.8899
  """
  e = target_counts(eval_rows, num_ids, pad_id)
  q = e[e > 0] / max(e.sum(), 1.0)
  return float(np.exp(-(q @ np.log(q))))
