"""Streaming 'tfds:' datasets: per-batch random access, same data as in memory.

A tiny multi-domain TFDS builder is defined and prepared offline here (array
record format, nothing downloaded); ``data.load('tfds:...')`` then reads it
whole (``streaming='off'``), or per batch (``'on'``, or ``'auto'`` with the
size threshold lowered).
"""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from diversity_jax import data
from diversity_jax.data import _tfds_real

_DOMAINS = ("dom_a", "dom_b", "dom_c")
_SIZES = (24, 17, 20)
_SHAPE = (8, 8, 1)


def _domain_arrays(e):
  rng = np.random.default_rng(100 + e)
  n = _SIZES[e]
  return (rng.integers(0, 256, (n,) + _SHAPE, dtype=np.uint8),
          rng.integers(0, 3, n))


class TinyStreamDomains(tfds.core.GeneratorBasedBuilder):
  """Three small domains (one split each) of random 8x8x1 uint8 images."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test fixture."}
  code_path = None  # defined in a test file; nothing is downloaded

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=_SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=3),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {d: self._generate_examples(e) for e, d in enumerate(_DOMAINS)}

  def _generate_examples(self, e):
    x, y = _domain_arrays(e)
    for i in range(len(y)):
      yield i, {"image": x[i], "label": int(y[i])}


NAME = "tfds:tiny_stream_domains"


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tiny_tfds"))
  tfds.display_progress_bar(False)
  TinyStreamDomains(data_dir=path, file_format="array_record"
                    ).download_and_prepare()
  return path


def _expected(domain, order):
  """What the in-memory path returns: the records in file order, /255."""
  x, y = _domain_arrays(_DOMAINS.index(domain))
  return x[order].astype(np.float32) / np.float32(255.0), y[order]


def test_streaming_reads_the_same_examples(tiny_dir):
  mem = data.load(NAME, data_dir=tiny_dir, streaming="off")
  stream = data.load(NAME, data_dir=tiny_dir, streaming="on")
  assert not mem.streaming and stream.streaming
  assert stream.domains == list(_DOMAINS) == mem.domains
  assert stream.input_shape == _SHAPE and stream.num_classes == 3
  rng = np.random.default_rng(0)
  for domain, n in zip(_DOMAINS, _SIZES):
    x, y = mem.arrays(domain)
    # Independent check of the in-memory path: the generated examples (TFDS
    # may store them in another order; match them by content).
    gx, gy = _domain_arrays(_DOMAINS.index(domain))
    order = [int(np.flatnonzero((gx == np.round(xi * 255)).all(axis=(1, 2, 3))
                                )[0]) for xi in x]
    ex, ey = _expected(domain, order)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    src = stream.source(domain)
    assert len(src) == n and src.example_shape == _SHAPE
    idx = rng.integers(0, n, 9)
    sx, sy = src.read(idx)
    assert sx.dtype == np.float32 and sy.dtype == np.int32
    np.testing.assert_array_equal(sx, x[idx])
    np.testing.assert_array_equal(sy, y[idx])
    # A subset composes indices (the holdout split of a streamed domain).
    in_idx, out_idx = data.holdout_indices(n, 0.2, seed=3)
    (xi, yi), (xo, yo) = data.split_holdout(x, y, 0.2, seed=3)
    np.testing.assert_array_equal(src.subset(in_idx).read(np.arange(len(yi)))[0],
                                  xi)
    np.testing.assert_array_equal(src.subset(out_idx).read(np.arange(len(yo)))[1],
                                  yo)
    np.testing.assert_array_equal(stream.arrays(domain)[0], x)
  empty_x, empty_y = stream.source("dom_a").read(np.zeros(0, np.int64))
  assert empty_x.shape == (0,) + _SHAPE and empty_y.shape == (0,)


def test_streaming_threshold_selects_automatically(tiny_dir, monkeypatch):
  assert not data.load(NAME, data_dir=tiny_dir).streaming  # tiny: in memory
  # 61 examples * 64 pixels * 4 bytes = 15,616 bytes.
  monkeypatch.setattr(_tfds_real, "STREAMING_THRESHOLD_BYTES", 15_615)
  assert data.load(NAME, data_dir=tiny_dir).streaming
  assert not data.load(NAME, data_dir=tiny_dir, streaming="off").streaming
  monkeypatch.setattr(_tfds_real, "STREAMING_THRESHOLD_BYTES", 15_616)
  assert not data.load(NAME, data_dir=tiny_dir).streaming


def test_streaming_bad_args(tiny_dir):
  with pytest.raises(ValueError, match=r"`streaming` must be one of \['auto'"):
    data.load(NAME, data_dir=tiny_dir, streaming=True)
  with pytest.raises(ValueError, match="only for 'tfds:<name>'"):
    data.load("mock", streaming="on")
  src = data.load(NAME, data_dir=tiny_dir, streaming="on").source("dom_b")
  with pytest.raises(IndexError, match=r"\[0, 17\)"):
    src.read(np.array([17]))
  with pytest.raises(ValueError, match="`indices` must have rank 1"):
    src.read(np.array([[0]]))
  with pytest.raises(TypeError, match="`indices` must have an integer dtype"):
    src.read(np.array([0.0]))


def test_batches_from_sources_equal_batches_from_arrays(tiny_dir):
  mem = data.load(NAME, data_dir=tiny_dir, streaming="off")
  stream = data.load(NAME, data_dir=tiny_dir, streaming="on")
  for sampling in ("replacement", "epoch"):
    a = data.MultiDomainBatches([mem.arrays(d) for d in _DOMAINS[:2]], 6,
                                seed=4, sampling=sampling)
    b = data.MultiDomainBatches([stream.source(d) for d in _DOMAINS[:2]], 6,
                                seed=4, sampling=sampling)
    assert a.sizes == b.sizes
    for step in (0, 1, 7):
      ba, bb = a.batch(step), b.batch(step)
      assert ba.keys() == bb.keys()
      for k in ba:
        assert ba[k].dtype == bb[k].dtype, k
        np.testing.assert_array_equal(ba[k], bb[k], err_msg=k)


def test_training_streamed_equals_in_memory(tiny_dir, tmp_path, monkeypatch):
  from configs import mock  # pylint: disable=g-import-not-at-top
  from experiments import metrics  # pylint: disable=g-import-not-at-top
  from experiments.studies import dg  # pylint: disable=g-import-not-at-top
  out = {}
  for mode in ("off", "on"):
    if mode == "on":  # streaming never reads a whole domain into memory
      def no_arrays(self, domain):
        raise AssertionError(f"arrays({domain!r}) read while streaming")
      monkeypatch.setattr(data.Dataset, "arrays", no_arrays)
    c = mock.get_config("smoke")
    c.dataset, c.data_dir, c.streaming = NAME, tiny_dir, mode
    c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 3, 3, 3, 1
    c.eval_batch_size = 8  # several eval chunks, the last one padded
    workdir = str(tmp_path / mode)
    result = dg.train_one(c, workdir, "dom_a")
    rows = metrics.read_jsonl(f"{workdir}/metrics.jsonl")
    out[mode] = (result, rows)
  assert out["on"] == out["off"]  # bit-identical metrics and selection


# ------------------------------------------- images of varying size --------
def _var_image(e, i):
  rng = np.random.default_rng([e, i])
  h, w = rng.integers(5, 15, 2)
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


class TinyVarSizeDomains(tfds.core.GeneratorBasedBuilder):
  """Two domains of RGB images of varying sizes (as DomainNet)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Test fixture."}
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(None, None, 3),
                                          dtype=np.uint8, encoding="zlib"),
            "label": tfds.features.ClassLabel(num_classes=2),
        }),
        supervised_keys=("image", "label"))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {d: self._generate_examples(e) for e, d in enumerate(("p", "q"))}

  def _generate_examples(self, e):
    for i in range(6):
      yield i, {"image": _var_image(e, i), "label": i % 2}


def test_image_size_resizes_varying_images_like_domainbed(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  path = str(tmp_path)
  TinyVarSizeDomains(data_dir=path, file_format="array_record"
                     ).download_and_prepare()
  name = "tfds:tiny_var_size_domains"
  with pytest.raises(ValueError, match="pass `image_size`"):
    data.load(name, data_dir=path)
  with pytest.raises(ValueError, match="only for 'tfds:<name>'"):
    data.load("mock", image_size=8)
  for streaming in ("off", "on"):
    ds = data.load(name, data_dir=path, image_size=7, streaming=streaming)
    assert ds.input_shape == (7, 7, 3) and ds.streaming == (streaming == "on")
    x, y = ds.source("q").read(np.arange(6))
    assert x.shape == (6, 7, 7, 3) and x.dtype == np.float32
    # DomainBed: transforms.Resize((7, 7)) on the RGB PIL image (bilinear).
    # TFDS may store the examples in another order: match them one to one.
    want = [np.asarray(Image.fromarray(_var_image(1, i), "RGB").resize(
        (7, 7), Image.BILINEAR)).astype(np.float32) / np.float32(255.0)
            for i in range(6)]
    match = [[j for j in range(6) if np.array_equal(xi, want[j])] for xi in x]
    assert sorted(m[0] for m in match if len(m) == 1) == list(range(6))
    assert [m[0] % 2 for m in match] == y.tolist()
