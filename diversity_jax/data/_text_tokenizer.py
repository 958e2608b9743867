"""Byte-level BPE tokenizer trained offline on a corpus' train split.

The tokenizer is the GPT-2 byte-level BPE (Radford et al. 2019, Sec. 2.2;
Sennrich et al. 2016) trained with Hugging Face ``tokenizers``: every string
is encodable (256 byte symbols, no unknown token). Ids 0 and 1 are the
special tokens ``PAD`` (padding of the last sequence of a split) and ``EOS``
(appended to every document). ``vocab_size`` is an upper bound: training
stops early when no pair of symbols is left to merge (the corpus is too small
for more), so ``tokenizer.get_vocab_size() <= vocab_size``; the model's
vocabulary is ``vocab_size`` either way.

Training is deterministic for a given corpus and ``tokenizers`` version (the
trainer breaks frequency ties by the pair itself).
"""

from __future__ import annotations

import os
from typing import List, Sequence

import numpy as np

PAD = "<|pad|>"
EOS = "<|endoftext|>"
PAD_ID, EOS_ID = 0, 1
SPECIAL_TOKENS = (PAD, EOS)
MIN_VOCAB_SIZE = 256 + len(SPECIAL_TOKENS)   # the byte alphabet + specials


def _require_tokenizers():
  try:
    import tokenizers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "the language-model datasets need the `tokenizers` package "
        "(pip install tokenizers)") from e
  return tokenizers


def train_bpe(texts: Sequence[str], vocab_size: int):
  """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``texts``.

  Args:
    texts: training documents.
    vocab_size: maximum vocabulary size (``>= MIN_VOCAB_SIZE``), special
      tokens included.

  Returns:
    The trained tokenizer (``PAD`` = 0, ``EOS`` = 1).

  Example:
    >>> tok = train_bpe(["def f(x):\\n    return x\\n"] * 10, 300)
    >>> tok.decode(tok.encode("def f").ids)
    'def f'

  References:
    Sennrich et al., "Neural Machine Translation of Rare Words with Subword
    Units", ACL 2016 (BPE); Radford et al., "Language Models are
    Unsupervised Multitask Learners", 2019, Sec. 2.2 (byte-level BPE);
    https://github.com/huggingface/tokenizers (``BpeTrainer``).
  """
  tk = _require_tokenizers()
  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(f"train_bpe: `vocab_size` must be >= {MIN_VOCAB_SIZE} "
                     f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), "
                     f"got {vocab_size}")
  tok = tk.Tokenizer(tk.models.BPE())
  tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = tk.decoders.ByteLevel()
  trainer = tk.trainers.BpeTrainer(
      vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
      initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
      show_progress=False)
  tok.train_from_iterator(texts, trainer=trainer)
  if (tok.token_to_id(PAD), tok.token_to_id(EOS)) != (PAD_ID, EOS_ID):
    raise RuntimeError("train_bpe: special token ids moved")
  return tok


def load_tokenizer(path: str):
  """The tokenizer saved at ``path`` (``tokenizer.json``)."""
  return _require_tokenizers().Tokenizer.from_file(os.fspath(path))


def encode_documents(tok, texts: Sequence[str]) -> List[np.ndarray]:
  """Token ids (int32) of each document, each followed by ``EOS``."""
  out = []
  for enc in tok.encode_batch(list(texts), add_special_tokens=False):
    ids = np.asarray(enc.ids, np.int32)
    out.append(np.concatenate([ids, np.asarray([EOS_ID], np.int32)]))
  return out


def pack(docs: Sequence[np.ndarray], seq_len: int) -> np.ndarray:
  """Documents concatenated into rows of ``seq_len + 1`` tokens.

  Row ``r`` holds stream tokens ``[r L, (r + 1) L]`` (``L = seq_len``): rows
  overlap by one token so that every token but the first is a target exactly
  once (inputs ``row[:-1]``, targets ``row[1:]``). The last row is padded
  with ``PAD_ID``.

  Example:
    >>> pack([np.arange(2, 8, dtype=np.int32)], 2).tolist()
    [[2, 3, 4], [4, 5, 6], [6, 7, 0]]
  """
  stream = (np.concatenate(list(docs)) if len(docs)
            else np.zeros((0,), np.int32))
  n = max(1, -(-(len(stream) - 1) // seq_len))
  padded = np.full((n * seq_len + 1,), PAD_ID, np.int32)
  padded[:len(stream)] = stream
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  return padded[idx]
