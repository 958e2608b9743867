"""``data.load_text``: a tokenized language-modelling corpus, in memory.

The TFDS builder (``_text_builder``, imported on first use like every TFDS
module of this package) writes the token rows once; :class:`TextDataset`
reads them.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Dict, Optional

import numpy as np

from diversity_jax.data import _text_corpus
from diversity_jax.data import _text_tokenizer


class TextDataset:
  """Token sequences of a corpus' train / validation splits, in memory.

  Attributes:
    name: the corpus (``'stdlib'`` or ``'tfds:<name>'``).
    vocab_size: the vocabulary size asked for (the model's).
    tokenizer_vocab_size: ids the tokenizer produces (``<= vocab_size``).
    seq_len: model input length; rows hold ``seq_len + 1`` tokens.
    tokenizer_path: the cached ``tokenizer.json``.
    pad_id: the padding token id.
    eos_id: the end-of-sequence token id.

  ``sequences(split)`` returns the ``(n, seq_len + 1)`` int32 rows (read
  once, read-only); ``tokenizer()`` the ``tokenizers.Tokenizer``.

  Example:
    >>> import tempfile
    >>> from diversity_jax import data
    >>> ds = data.load_text('stdlib', vocab_size=512, seq_len=32,
    ...                     max_chars=20_000, data_dir=tempfile.mkdtemp())
    >>> ds.sequences('train').shape[1]
    33
  """

  def __init__(self, name, vocab_size, seq_len, tokenizer_path, builder):
    self.name = name
    self.vocab_size = int(vocab_size)
    self.seq_len = int(seq_len)
    self.tokenizer_path = tokenizer_path
    self.pad_id = _text_tokenizer.PAD_ID
    self.eos_id = _text_tokenizer.EOS_ID
    self._builder = builder
    self._cache: Dict[str, np.ndarray] = {}
    self.tokenizer_vocab_size = int(self.tokenizer().get_vocab_size())

  def tokenizer(self):
    return _text_tokenizer.load_tokenizer(self.tokenizer_path)

  def sequences(self, split: str) -> np.ndarray:
    if split not in _text_corpus.SPLITS:
      raise ValueError(f"TextDataset.sequences: unknown `split` {split!r}; "
                       f"valid choices: {list(_text_corpus.SPLITS)}")
    if split not in self._cache:
      source = self._builder.as_data_source(split=split)
      records = source.__getitems__(list(range(len(source))))
      order = np.argsort([r["index"] for r in records], kind="stable")
      rows = np.stack([np.asarray(records[i]["tokens"], np.int32)
                       for i in order]) if records else np.zeros(
                           (0, self.seq_len + 1), np.int32)
      rows.setflags(write=False)
      self._cache[split] = rows
    return self._cache[split]

  def __repr__(self) -> str:
    return (f"TextDataset(name={self.name!r}, vocab_size={self.vocab_size}, "
            f"tokenizer_vocab_size={self.tokenizer_vocab_size}, "
            f"seq_len={self.seq_len})")


def load_text(corpus: str = _text_corpus.STDLIB, *, vocab_size: int = 32768,
              seq_len: int = 128, data_dir: Optional[str] = None,
              max_chars: int = 0, validation_fraction: float = 0.05,
              text_key: str = "text", train_split: str = "train",
              validation_split: str = "validation",
              download: bool = False) -> TextDataset:
  """Builds (first call) and reads a tokenized language-modelling corpus.

  Args:
    corpus: ``'stdlib'`` (the Python standard library's source, offline; see
      ``_text_corpus``) or ``'tfds:<name>'`` (the ``text_key`` strings of a
      TFDS dataset's ``train_split`` / ``validation_split``).
    vocab_size: BPE vocabulary size (an upper bound for the tokenizer; the
      model's vocabulary), ``>= 258``.
    seq_len: tokens per model input (rows hold ``seq_len + 1``).
    data_dir: TFDS data dir (default ``default_data_dir()``).
    max_chars: cut the corpus to about this many characters (0: all; the
      tests use small slices).
    validation_fraction: the ``'stdlib'`` validation share (by file); also
      the validation share of ``max_chars``.
    text_key, train_split, validation_split: for ``'tfds:<name>'``.
    download: for ``'tfds:<name>'``: allow TFDS to download and prepare it.

  Returns:
    A :class:`TextDataset`.

  Example:
    >>> import tempfile
    >>> from diversity_jax import data
    >>> ds = data.load_text('stdlib', vocab_size=512, seq_len=32,
    ...                     max_chars=20_000, data_dir=tempfile.mkdtemp())
    >>> ds.sequences('validation').dtype, ds.tokenizer_vocab_size <= 512
    (dtype('int32'), True)

  References:
    Sennrich et al., ACL 2016 (BPE); Radford et al. 2019, Sec. 2.2
    (byte-level BPE, documents separated by ``<|endoftext|>``).
  """
  from diversity_jax.data import _builders  # pylint: disable=g-import-not-at-top
  from diversity_jax.data import _datasets  # pylint: disable=g-import-not-at-top
  from diversity_jax.data import _text_builder as tb  # pylint: disable=g-import-not-at-top
  data_dir = os.fspath(data_dir) if data_dir else _datasets.default_data_dir()
  for name, value, low in (("vocab_size", vocab_size,
                            _text_tokenizer.MIN_VOCAB_SIZE),
                           ("seq_len", seq_len, 1), ("max_chars", max_chars, 0)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        value < low):
      raise ValueError(f"load_text: `{name}` must be an int >= {low}, got "
                       f"{value!r}")
  if not 0.0 < validation_fraction < 1.0:
    raise ValueError(f"load_text: `validation_fraction` must lie in (0, 1), "
                     f"got {validation_fraction!r}")
  if corpus != _text_corpus.STDLIB and not (
      isinstance(corpus, str) and corpus.startswith("tfds:")
      and len(corpus) > len("tfds:")):
    raise ValueError(f"load_text: unknown `corpus` {corpus!r}; valid choices: "
                     f"['{_text_corpus.STDLIB}', 'tfds:<name>']")
  cfg = tb.LmTextConfig(
      name="", corpus=corpus, vocab_size=int(vocab_size), seq_len=int(seq_len),
      max_chars=int(max_chars), validation_fraction=float(validation_fraction),
      text_key=text_key, train_split=train_split,
      validation_split=validation_split, download=bool(download),
      source_data_dir=data_dir)
  builder = tb.builder_for(cfg, data_dir)
  if not builder.is_prepared():
    # TFDS prints "Downloading and preparing ..." even when, as here,
    # nothing is downloaded.
    with contextlib.redirect_stdout(io.StringIO()):
      _builders.prepare(builder, data_dir)
    builder = tb.builder_for(cfg, data_dir)
  root = os.path.join(data_dir, tb.NAME)
  return TextDataset(corpus, vocab_size, seq_len, tb.tokenizer_path(cfg, root),
                     builder)
