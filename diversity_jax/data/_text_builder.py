"""TFDS builder of token sequences for language modelling (array_record).

``data.load_text(corpus, vocab_size=..., seq_len=...)`` builds (first call)
and reads ``<data_dir>/lm_text/<config>/<version>/``: the ``train`` and
``validation`` splits of a corpus (``_text_corpus``), tokenized with a
byte-level BPE trained on the train split (``_text_tokenizer``) and packed
into rows of ``seq_len + 1`` tokens (``pack``). The tokenizer is cached
beside the dataset, in ``<data_dir>/lm_text/tokenizers/``, and shared by the
sequence lengths of one corpus and vocabulary. Nothing is downloaded for the
``'stdlib'`` corpus; ``'tfds:<name>'`` corpora read a prepared TFDS dataset
(downloaded only with ``download=True``).
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import tensorflow_datasets as tfds

from diversity_jax.data import _builders
from diversity_jax.data import _text_corpus
from diversity_jax.data import _text_tokenizer

NAME = "lm_text"


@dataclasses.dataclass(eq=False)
class LmTextConfig(tfds.core.BuilderConfig):
  """What defines one built dataset (its directory name is derived from it)."""
  corpus: str = _text_corpus.STDLIB
  vocab_size: int = 32768
  seq_len: int = 128
  max_chars: int = 0
  validation_fraction: float = 0.05
  text_key: str = "text"
  train_split: str = "train"
  validation_split: str = "validation"
  download: bool = False
  source_data_dir: str = ""


def corpus_id(corpus: str) -> str:
  """A directory-safe id of ``corpus`` (the stdlib's names its version)."""
  if corpus == _text_corpus.STDLIB:
    return _text_corpus.stdlib_id()
  return re.sub(r"[^A-Za-z0-9]+", "_", corpus).strip("_")


def _tokenizer_name(cfg: LmTextConfig) -> str:
  splits = ("" if cfg.corpus == _text_corpus.STDLIB else
            f"-{cfg.text_key}-{cfg.train_split}")
  return (f"{corpus_id(cfg.corpus)}{splits}-v{cfg.vocab_size}"
          f"-c{cfg.max_chars}-f{cfg.validation_fraction:g}")


def config_name(cfg: LmTextConfig) -> str:
  splits = ("" if cfg.corpus == _text_corpus.STDLIB else
            f"-{cfg.validation_split}")
  name = f"{_tokenizer_name(cfg)}{splits}-l{cfg.seq_len}"
  return re.sub(r"[^A-Za-z0-9_-]", "_", name)


def documents(cfg: LmTextConfig, role: str):
  """The documents of corpus split ``role`` (``'train'`` / ``'validation'``)."""
  if cfg.corpus == _text_corpus.STDLIB:
    return _text_corpus.stdlib_documents(
        role, max_chars=cfg.max_chars,
        validation_fraction=cfg.validation_fraction)
  split = cfg.train_split if role == "train" else cfg.validation_split
  return _text_corpus.tfds_documents(
      cfg.corpus[len("tfds:"):], split, role, data_dir=cfg.source_data_dir,
      text_key=cfg.text_key, max_chars=cfg.max_chars,
      validation_fraction=cfg.validation_fraction, download=cfg.download)


class LmText(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Token sequences ``(seq_len + 1,)`` int32 of a corpus, train/validation.

  Built for one ``LmTextConfig`` (set by ``builder_for``): its tokenizer is
  trained on the train split's documents (or read from its cache) when the
  dataset is generated.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = []
  code_path = None   # see _builders._DomainBuilder
  name = NAME

  def _info(self) -> tfds.core.DatasetInfo:
    cfg = self.builder_config
    return tfds.core.DatasetInfo(
        builder=self,
        description=(f"{cfg.corpus} corpus, byte-level BPE (vocabulary <= "
                     f"{cfg.vocab_size}), rows of {cfg.seq_len + 1} tokens."),
        features=tfds.features.FeaturesDict({
            "tokens": tfds.features.Tensor(shape=(cfg.seq_len + 1,),
                                           dtype=np.int32),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager   # nothing is downloaded here (see tfds_documents)
    _builders.BUILD_COUNTS[self.name] += 1
    cfg = self.builder_config
    tok = tokenizer(cfg, os.path.join(cfg.source_data_dir, NAME))
    return {role: self._generate_examples(tok, role)
            for role in _text_corpus.SPLITS}

  def _generate_examples(self, tok, role):
    cfg = self.builder_config
    rows = _text_tokenizer.pack(
        _text_tokenizer.encode_documents(tok, documents(cfg, role)),
        cfg.seq_len)
    for i, row in enumerate(rows):
      yield i, {"tokens": row, "index": i}


def tokenizer_path(cfg: LmTextConfig, root: str) -> str:
  """``<root>/tokenizers/<corpus>-v<vocab>-c<max_chars>-f<fraction>.json``
  (``root`` = ``<data_dir>/lm_text``)."""
  return os.path.join(root, "tokenizers", _tokenizer_name(cfg) + ".json")


def tokenizer(cfg: LmTextConfig, root: str):
  """The corpus' tokenizer: read from its cache, else trained and cached."""
  path = tokenizer_path(cfg, root)
  if not os.path.exists(path):
    with _builders._build_lock(root, "tokenizer"):  # pylint: disable=protected-access
      if not os.path.exists(path):
        tok = _text_tokenizer.train_bpe(documents(cfg, "train"),
                                        cfg.vocab_size)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tok.save(path + ".tmp")
        os.replace(path + ".tmp", path)
  return _text_tokenizer.load_tokenizer(path)


def builder_for(cfg: LmTextConfig, data_dir: str) -> LmText:
  """The builder of ``cfg`` in ``data_dir`` (a subclass naming ``cfg``)."""
  cfg = dataclasses.replace(cfg, name=config_name(cfg))
  cls = type("LmText_" + cfg.name.replace("-", "_"), (LmText,),
             {"BUILDER_CONFIGS": [cfg], "name": NAME},
             skip_registration=True)
  return cls(config=cfg.name, data_dir=data_dir, file_format="array_record")
