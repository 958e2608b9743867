"""``data.load('tfds:<name>')``: any TFDS dataset through the same interface.

Nothing is downloaded unless the caller passes ``download=True``. Reading uses
``builder.as_data_source`` (``array_record`` files, no TensorFlow); datasets
prepared in the ``tfrecord`` format need TensorFlow to read, as in TFDS itself.

Small datasets are read whole into memory. Above ``STREAMING_THRESHOLD_BYTES``
of float32 images (or with ``streaming='on'``) the dataset *streams*: each
domain is a :class:`TfdsSource` and the input pipeline reads every batch from
the files by index (random access into ``array_record``), so memory stays
flat and batches stay a pure function of ``(seed, step)``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow_datasets as tfds

from diversity_jax.data import _sources
from diversity_jax.data._datasets import Dataset

# Stream (read per batch) when the float32 images would take more than this.
STREAMING_THRESHOLD_BYTES = 2 * 2**30

STANDARD_SPLITS = frozenset({"train", "test", "validation", "valid", "val",
                             "dev", "extra", "unlabeled"})


def _domains(split_names: List[str]) -> Tuple[List[str], dict]:
  """Domain -> splits: one domain 'all' for standard splits, else one per split."""
  if not split_names:  # unknown splits (e.g. unprepared metadata): train only
    return ["all"], {"all": ["train"]}
  if set(split_names) <= STANDARD_SPLITS:
    return ["all"], {"all": list(split_names)}
  domains = [s for s in split_names if s not in STANDARD_SPLITS]
  return domains, {d: [d] for d in domains}


class TfdsSource:
  """One domain (one or more TFDS splits, concatenated) read by index from disk.

  ``read(indices)`` fetches only the requested records (random access into
  the ``array_record`` files through ``as_data_source``) and decodes them
  as the in-memory path does: images reshaped to ``example_shape`` and, for
  integer pixels, divided by 255 in float32; labels int32.

  With ``resize``, every image is first resized to ``resize x resize`` with
  PIL's bilinear filter (what DomainBed's ``transforms.Resize((224, 224))``
  does to its PIL images), so datasets of varying image sizes (DomainNet,
  PACS, ...) get one fixed ``example_shape``.

  Args:
    data_sources: ``builder.as_data_source(split=...)`` of each split.
    image_key, label_key: the supervised feature names.
    example_shape: ``(H, W, C)`` (after resizing).
    resize: side of the resized images, or None (images used as stored).

  Example:
    >>> # ds = data.load('tfds:domainnet/real', streaming='on')
    >>> # x, y = ds.source('train').read(np.array([0, 5]))
  """

  def __init__(self, data_sources: Sequence, image_key: str, label_key: str,
               example_shape: Tuple[int, ...], resize: Optional[int] = None):
    self._sources = list(data_sources)
    self._resize = resize
    self._image_key, self._label_key = image_key, label_key
    self.example_shape = tuple(example_shape)
    self._offsets = np.cumsum([0] + [len(s) for s in self._sources])

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def read(self, indices) -> Tuple[np.ndarray, np.ndarray]:
    idx = _sources._as_indices(indices, len(self), "TfdsSource.read")  # pylint: disable=protected-access
    split = np.searchsorted(self._offsets, idx, side="right") - 1
    records = [None] * idx.size
    for s in np.unique(split):
      where = np.flatnonzero(split == s)
      local = (idx[where] - self._offsets[s]).tolist()
      source = self._sources[s]
      for pos, i in zip(where, local):
        records[pos] = source[i]
    if not records:
      return (np.zeros((0,) + self.example_shape, np.float32),
              np.zeros((0,), np.int32))
    x = np.stack([self._image(r) for r in records])
    if np.issubdtype(x.dtype, np.integer):
      x = x.astype(np.float32) / np.float32(255.0)
    y = np.asarray([int(r[self._label_key]) for r in records], np.int32)
    return np.asarray(x, np.float32), y

  def subset(self, indices) -> _sources.SubsetSource:
    return _sources.SubsetSource(self, indices)

  def _image(self, record) -> np.ndarray:
    image = np.asarray(record[self._image_key])
    if self._resize:
      image = _resize(image, self._resize)
    return image.reshape(self.example_shape)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  """``(H, W[, C])`` uint8 -> ``(size, size, C)`` uint8, PIL bilinear per channel."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.dtype != np.uint8:
    raise ValueError(f"load: `image_size` resizes uint8 images only, got "
                     f"dtype {image.dtype}")
  if image.ndim == 2:
    image = image[..., None]
  return np.stack([np.asarray(Image.fromarray(image[..., c]).resize(
      (size, size), Image.BILINEAR)) for c in range(image.shape[-1])], -1)


def _num_bytes(info, splits: Dict[str, List[str]], shape) -> int:
  """float32 bytes of every domain's images (0 if the split sizes are unknown)."""
  try:
    n = sum(info.splits[s].num_examples for ss in splits.values() for s in ss)
  except (KeyError, ValueError):
    return 0
  return int(n) * int(np.prod(shape)) * 4


def prepared_builder(name: str, data_dir: str, download: bool, fn: str):
  """TFDS builder ``name`` prepared in ``data_dir`` (array_record).

  Prepared (downloaded) here only when ``download``; otherwise an
  unprepared dataset raises ``FileNotFoundError`` saying how to prepare it.
  """
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except  # TFDS raises several types
    raise ValueError(f"{fn}: `name` 'tfds:{name}' is not a TFDS dataset "
                     f"({type(e).__name__}: {str(e).splitlines()[0]})") from e
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
          f"{fn}: TFDS dataset {name!r} is not prepared in data_dir "
          f"{data_dir!r}, and diversity_jax never downloads by default; pass "
          "download=True (or prepare it with `tfds build --file_format="
          f"array_record {name} --data_dir {data_dir}`)")
    builder.download_and_prepare(file_format="array_record")
  return builder


def load_tfds(name: str, data_dir: str, *, download: bool = False,
              streaming: str = "auto", image_size: int = 0) -> Dataset:
  """Loads TFDS dataset ``name`` (``'mnist'``, ``'cifar10'``, ``'domainnet/real'``...).

  ``streaming``: ``'auto'`` streams when the float32 images exceed
  ``STREAMING_THRESHOLD_BYTES``; ``'on'`` / ``'off'`` force it.
  ``image_size``: resize every image to ``image_size x image_size`` (needed
  for datasets of varying image sizes); 0 keeps the stored fixed size.
  """
  fn = "load"
  builder = prepared_builder(name, data_dir, download, fn)
  info = builder.info
  image_key, label_key = info.supervised_keys or ("image", "label")
  if not isinstance(image_key, str) or not isinstance(label_key, str):
    raise ValueError(f"{fn}: TFDS dataset {name!r} has nested supervised keys "
                     f"{info.supervised_keys}; only (image, label) is supported")
  label_feature = info.features[label_key]
  num_classes = getattr(label_feature, "num_classes", None)
  if not num_classes:
    raise ValueError(f"{fn}: TFDS dataset {name!r}: feature {label_key!r} is not "
                     "a ClassLabel; only classification datasets are supported")
  shape = tuple(info.features[image_key].shape)
  if len(shape) == 2:
    shape = shape + (1,)
  if image_size and len(shape) == 3 and shape[2] is not None:
    shape = (image_size, image_size, shape[2])
  if len(shape) != 3 or any(s is None for s in shape):
    raise ValueError(f"{fn}: TFDS dataset {name!r}: images must have a fixed "
                     f"(H, W, C) shape, got {shape}; for images of varying "
                     "size (e.g. domainnet) pass `image_size` (DomainBed "
                     "resizes to 224)")
  domains, splits = _domains(list(info.splits))
  cache: Dict[str, TfdsSource] = {}

  def source(domain):
    if domain not in cache:
      cache[domain] = TfdsSource(
          [builder.as_data_source(split=s) for s in splits[domain]],
          image_key, label_key, shape, resize=image_size or None)
    return cache[domain]

  def read(domain):
    src = source(domain)
    return src.read(np.arange(len(src)))

  stream = streaming == "on" or (
      streaming == "auto"
      and _num_bytes(info, splits, shape) > STREAMING_THRESHOLD_BYTES)
  return Dataset(f"tfds:{name}", domains, num_classes, shape, read,
                 source=source if stream else None)
