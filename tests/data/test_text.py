"""Language-modelling corpora: stdlib selection, BPE, packing, TFDS builder."""

import binascii
import os
import sysconfig

import numpy as np
import pytest
import tensorflow_datasets as tfds

from diversity_jax import data
from diversity_jax.data import _builders
from diversity_jax.data import _text_corpus as corpus
from diversity_jax.data import _text_tokenizer as tokenizer

SLICE = 30_000   # characters: tokenizer training and building take seconds


def test_stdlib_selection_rule():
  root = sysconfig.get_paths()["stdlib"]
  files = corpus.stdlib_files()
  assert files == sorted(files) and len(files) > 100
  assert "os.py" in files and "json/decoder.py" in files
  for f in files:
    parts = f.split("/")
    assert f.endswith(".py") and "\\" not in f
    assert not set(parts[:-1]) & corpus.STDLIB_SKIP_DIRS
    assert not parts[-1].startswith("_sysconfigdata")
    assert os.path.isfile(os.path.join(root, f))
  assert not any(f.startswith("test/") or "/tests/" in f for f in files)


def test_split_is_crc32_of_the_path():
  for f in corpus.stdlib_files()[:200]:
    expected = binascii.crc32(f.encode()) / 2**32 < 0.05
    assert (corpus.split_of(f, 0.05) == "validation") == expected
  val = [f for f in corpus.stdlib_files()
         if corpus.split_of(f, 0.05) == "validation"]
  assert 0.01 < len(val) / len(corpus.stdlib_files()) < 0.12


def test_stdlib_documents_slice():
  root = sysconfig.get_paths()["stdlib"]
  docs = corpus.stdlib_documents("train", max_chars=SLICE)
  assert sum(map(len, docs)) == corpus.split_budget("train", SLICE, 0.05)
  first = next(f for f in corpus.stdlib_files()
               if corpus.split_of(f, 0.05) == "train")
  with open(os.path.join(root, first), encoding="utf-8") as fh:
    assert fh.read().startswith(docs[0])
  val = corpus.stdlib_documents("validation", max_chars=SLICE)
  assert sum(map(len, val)) == corpus.split_budget("validation", SLICE, 0.05)
  assert not set(val) & set(docs)


def test_pack_covers_the_stream_once():
  rng = np.random.default_rng(0)
  docs = [rng.integers(2, 50, n).astype(np.int32) for n in (7, 1, 12)]
  stream = np.concatenate(docs)
  for seq_len in (1, 4, 5, 19, 40):
    rows = tokenizer.pack(docs, seq_len)
    assert rows.shape[1] == seq_len + 1 and rows.dtype == np.int32
    np.testing.assert_array_equal(rows[1:, 0], rows[:-1, -1])   # overlap 1
    targets = rows[:, 1:].reshape(-1)
    n = len(stream) - 1
    np.testing.assert_array_equal(targets[:n], stream[1:])
    assert np.all(targets[n:] == tokenizer.PAD_ID)
    assert len(targets) - n < seq_len


def test_bpe_roundtrip_and_determinism():
  texts = corpus.stdlib_documents("train", max_chars=SLICE)
  tok = tokenizer.train_bpe(texts, 400)
  again = tokenizer.train_bpe(texts, 400)
  assert tok.to_str() == again.to_str()
  assert tok.get_vocab_size() <= 400
  assert tok.token_to_id(tokenizer.PAD) == tokenizer.PAD_ID
  assert tok.token_to_id(tokenizer.EOS) == tokenizer.EOS_ID
  sample = "def f(x):\n    return x  # ünïcode ✓\n"
  assert tok.decode(tok.encode(sample).ids) == sample
  enc = tokenizer.encode_documents(tok, texts[:2])
  assert [e[-1] for e in enc] == [tokenizer.EOS_ID] * 2
  assert tok.decode(enc[0][:-1].tolist()) == texts[0]
  with pytest.raises(ValueError, match="vocab_size"):
    tokenizer.train_bpe(texts, 100)


def test_load_text_builds_once_and_reads_the_corpus(tmp_path):
  kw = dict(vocab_size=300, seq_len=16, max_chars=SLICE, data_dir=tmp_path)
  before = _builders.BUILD_COUNTS["lm_text"]
  ds = data.load_text("stdlib", **kw)
  assert _builders.BUILD_COUNTS["lm_text"] == before + 1
  assert ds.tokenizer_vocab_size <= 300 and ds.vocab_size == 300
  assert os.path.exists(ds.tokenizer_path)
  tok = ds.tokenizer()
  for split in ("train", "validation"):
    rows = ds.sequences(split)
    assert rows.shape[1] == 17 and rows.dtype == np.int32
    docs = corpus.stdlib_documents(split, max_chars=SLICE)
    expected = np.concatenate(tokenizer.encode_documents(tok, docs))
    stream = np.concatenate([rows[0, :1], rows[:, 1:].reshape(-1)])
    np.testing.assert_array_equal(stream[:len(expected)], expected)
  again = data.load_text("stdlib", **kw)     # cached: not rebuilt
  assert _builders.BUILD_COUNTS["lm_text"] == before + 1
  np.testing.assert_array_equal(again.sequences("train"),
                                ds.sequences("train"))
  # Another sequence length reuses the cached tokenizer.
  other = data.load_text("stdlib", **{**kw, "seq_len": 8})
  assert other.tokenizer_path == ds.tokenizer_path
  assert other.sequences("train").shape[1] == 9


class _TinyText(tfds.core.GeneratorBasedBuilder):
  """A TFDS text dataset prepared by the test (stands in for e.g. lm1b)."""

  name = "diversity_jax_tiny_text"
  VERSION = tfds.core.Version("1.0.0")
  code_path = None
  DOCS = {"train": ["def f(x):\n    return x\n"] * 20,
          "test": ["def g(y):\n    return y + 1\n"] * 5}

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict(
            {"body": tfds.features.Text()}))

  def _split_generators(self, dl_manager):
    return {s: self._generate_examples(d) for s, d in self.DOCS.items()}

  def _generate_examples(self, docs):
    for i, d in enumerate(docs):
      yield i, {"body": d}


def test_load_text_tfds_corpus(tmp_path):
  kw = dict(vocab_size=280, seq_len=8, data_dir=tmp_path, text_key="body",
            validation_split="test")
  with pytest.raises(FileNotFoundError, match="download=True"):
    data.load_text("tfds:diversity_jax_tiny_text", **kw)
  _TinyText(data_dir=tmp_path, file_format="array_record").download_and_prepare()
  ds = data.load_text("tfds:diversity_jax_tiny_text", **kw)
  tok = ds.tokenizer()
  for split, docs in (("train", _TinyText.DOCS["train"]),
                      ("validation", _TinyText.DOCS["test"])):
    rows = ds.sequences(split)
    stream = np.concatenate([rows[0, :1], rows[:, 1:].reshape(-1)])
    stream = stream[stream != tokenizer.PAD_ID].tolist()
    text = tok.decode(stream, skip_special_tokens=False)
    assert text == "".join(d + tokenizer.EOS for d in docs)
  with pytest.raises(ValueError, match="no feature 'text'"):
    data.load_text("tfds:diversity_jax_tiny_text",
                   **{**kw, "text_key": "text"})
  with pytest.raises(ValueError, match="no split 'dev'"):
    data.load_text("tfds:diversity_jax_tiny_text",
                   **{**kw, "validation_split": "dev"})


@pytest.mark.parametrize("kwargs, match", [
    (dict(corpus="wiki"), "corpus"),
    (dict(vocab_size=100), "vocab_size"),
    (dict(seq_len=0), "seq_len"),
    (dict(validation_fraction=1.0), "validation_fraction"),
])
def test_load_text_bad_arguments(kwargs, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    data.load_text(**{"data_dir": tmp_path, **kwargs})
