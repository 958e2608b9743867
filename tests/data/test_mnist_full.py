"""'rotated_mnist_full' / 'colored_mnist_full': DomainBed's constructions on TFDS mnist.

Nothing downloads: a tiny fake TFDS builder named ``mnist`` (same version,
features and splits as TFDS's MNIST, a few hundred synthetic digits keyed by
position like the real one) is prepared into a temporary data dir as
array_record. ``tfds.builder('mnist', data_dir=...)`` (the real MNIST class)
then reads its files, exactly as it would read a real prepared MNIST.
"""

import os
import shutil
from unittest import mock

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import registered

from diversity_jax import data
from diversity_jax.data import _builders
from diversity_jax.data import _domainbed
from diversity_jax.data import _mnist_full

_SIZES = {"train": 150, "test": 54}
_MNIST_CLS = tfds.builder_cls("mnist")


def _fake_digits(split):
  """Synthetic uint8 28x28 'digits' (a bright block whose place depends on the label)."""
  rng = np.random.default_rng(0 if split == "train" else 1)
  n = _SIZES[split]
  labels = rng.integers(0, 10, n)
  images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
  for i, k in enumerate(labels):
    images[i, 4 + 2 * k:10 + 2 * k, 6:22] = 200 + (i % 50)
  return images, labels


with registered.skip_registration():  # TFDS's real 'mnist' stays registered

  class FakeMnist(tfds.core.GeneratorBasedBuilder):
    """TFDS MNIST's name, version and features; synthetic digits keyed by position."""

    name = "mnist"
    VERSION = _MNIST_CLS.VERSION
    RELEASE_NOTES = {str(_MNIST_CLS.VERSION): "Test fixture."}
    code_path = None

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self,
          features=tfds.features.FeaturesDict({
              "image": tfds.features.Image(shape=(28, 28, 1)),
              "label": tfds.features.ClassLabel(num_classes=10),
          }),
          supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {s: self._generate_examples(s) for s in ("train", "test")}

    def _generate_examples(self, split):
      images, labels = _fake_digits(split)
      for i in range(len(labels)):  # keyed by file position, as TFDS's MNIST
        # A PIL image: TFDS encodes it as PNG with PIL (no TensorFlow).
        yield i, {"image": Image.fromarray(images[i], mode="L"),
                  "label": int(labels[i])}


def _prepare_fake_mnist(path):
  tfds.display_progress_bar(False)
  FakeMnist(data_dir=str(path), file_format="array_record"
            ).download_and_prepare()


def _concat_train_test():
  """DomainBed's torch.cat((train, test)) of the fake digits, in file order."""
  (xa, ya), (xb, yb) = _fake_digits("train"), _fake_digits("test")
  return np.concatenate([xa, xb]), np.concatenate([ya, yb])


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("mnist_full")
  _prepare_fake_mnist(path)
  return str(path)


def test_mnist70k_is_train_then_test_in_file_order(full_dir):
  images, labels = _mnist_full.mnist70k(full_dir)
  want_x, want_y = _concat_train_test()
  assert images.dtype == np.uint8 and images.shape == (204, 28, 28)
  assert labels.dtype == np.int64
  np.testing.assert_array_equal(images, want_x)
  np.testing.assert_array_equal(labels, want_y)
  # The recovery is not vacuous: TFDS stores the examples in another order.
  src = tfds.builder("mnist", data_dir=full_dir).as_data_source(split="train")
  stored = np.stack([np.asarray(src[i]["image"])[..., 0] for i in range(150)])
  assert not np.array_equal(stored, want_x[:150])
  assert sorted(map(bytes, stored)) == sorted(map(bytes, want_x[:150]))


def test_file_order_is_tfds_hash_order():
  # Independent of TFDS's hashing module: md5(salt + str(key)), sorted.
  import hashlib  # pylint: disable=g-import-not-at-top
  want = sorted(range(30), key=lambda k: int(
      hashlib.md5(b"test" + str(k).encode()).hexdigest(), 16))
  np.testing.assert_array_equal(_mnist_full.file_order("test", 30), want)
  np.testing.assert_array_equal(
      _mnist_full.file_order("test", 5, disable_shuffling=True), np.arange(5))


def test_rotated_mnist_full_is_domainbed_construction(full_dir):
  ds = data.load("rotated_mnist_full", data_dir=full_dir)
  assert ds.name == "rotated_mnist_full"
  assert ds.domains == ["0", "15", "30", "45", "60", "75"]
  assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
  want = _domainbed.rotated_domains(*_concat_train_test())
  assert [len(ds.arrays(d)[1]) for d in ds.domains] == [34] * 6
  for d, (wx, wy) in zip(ds.domains, want):
    x, y = ds.arrays(d)
    assert x.dtype == np.float32 and y.dtype == np.int32
    np.testing.assert_array_equal(x, wx / np.float32(255))
    np.testing.assert_array_equal(y, wy)
  # Domain '0' holds DomainBed's split of the concatenation, unrotated
  # (brute force: numpy permutation with the build seed, then [i::6]).
  cx, cy = _concat_train_test()
  perm = np.random.default_rng(_domainbed.BUILD_SEED).permutation(len(cy))
  np.testing.assert_array_equal(ds.arrays("0")[0][..., 0],
                                cx[perm][0::6] / np.float32(255))
  np.testing.assert_array_equal(ds.arrays("45")[1], cy[perm][3::6])


def test_colored_mnist_full_is_domainbed_construction(full_dir):
  ds = data.load("colored_mnist_full", data_dir=full_dir)
  assert ds.domains == ["+90%", "+80%", "-90%"]
  assert ds.num_classes == 2 and ds.input_shape == (28, 28, 2)
  want = _domainbed.colored_domains(*_concat_train_test())
  assert [len(ds.arrays(d)[1]) for d in ds.domains] == [68] * 3
  for d, (wx, wy, _, _) in zip(ds.domains, want):
    np.testing.assert_array_equal(ds.arrays(d)[0], wx / np.float32(255))
    np.testing.assert_array_equal(ds.arrays(d)[1], wy)


def test_full_is_cached_and_needs_mnist_only_to_build(full_dir, tmp_path):
  path = str(tmp_path / "copy")
  shutil.copytree(full_dir, path)
  first = data.load("rotated_mnist_full", data_dir=path)  # built in full_dir
  x15 = first.arrays("15")[0]
  before = _builders.BUILD_COUNTS["rotated_mnist_full"]
  shutil.rmtree(os.path.join(path, "mnist"))  # the source is gone
  with mock.patch.object(tfds.core.DatasetBuilder,
                         "download_and_prepare") as dl:
    again = data.load("rotated_mnist_full", data_dir=path)
    np.testing.assert_array_equal(again.arrays("15")[0], x15)
  dl.assert_not_called()
  assert _builders.BUILD_COUNTS["rotated_mnist_full"] == before


def test_not_prepared_fails_clearly_and_never_downloads(tmp_path):
  with mock.patch.object(tfds.core.DatasetBuilder,
                         "download_and_prepare") as dl:
    for name in data._datasets.MNIST_FULL:  # pylint: disable=protected-access
      with pytest.raises(FileNotFoundError,
                         match=r"not prepared in data_dir.*never downloads by "
                         r"default.*--config.download=True"):
        data.load(name, data_dir=str(tmp_path))
  dl.assert_not_called()
  assert not os.path.exists(tmp_path / "rotated_mnist_full")


def test_download_true_prepares_mnist_as_array_record(tmp_path, monkeypatch):
  calls = []

  def fake_download(self, **kwargs):  # stands in for the internet
    calls.append((self.name, kwargs))
    _prepare_fake_mnist(tmp_path)

  monkeypatch.setattr(_mnist_full, "_has_tensorflow", lambda: True)
  monkeypatch.setattr(_MNIST_CLS, "download_and_prepare", fake_download)
  ds = data.load("rotated_mnist_full", data_dir=str(tmp_path), download=True)
  assert calls == [("mnist", {"file_format": "array_record"})]
  want = _domainbed.rotated_domains(*_concat_train_test())
  np.testing.assert_array_equal(ds.arrays("60")[1], want[4][1])
  data.load("rotated_mnist_full", data_dir=str(tmp_path), download=True)
  assert len(calls) == 1  # prepared once


def test_download_without_tensorflow_fails_clearly(tmp_path, monkeypatch):
  monkeypatch.setattr(_mnist_full, "_has_tensorflow", lambda: False)
  with mock.patch.object(_MNIST_CLS, "download_and_prepare") as dl:
    with pytest.raises(ImportError, match="needs TensorFlow.*tensorflow-cpu"):
      data.load("colored_mnist_full", data_dir=str(tmp_path), download=True)
  dl.assert_not_called()


def test_tfrecord_mnist_fails_clearly(full_dir):
  # Writing tfrecord needs TensorFlow: fake the stored format instead.
  info_cls = type(tfds.builder("mnist", data_dir=full_dir).info)
  with mock.patch.object(info_cls, "file_format",
                         new_callable=mock.PropertyMock,
                         return_value=tfds.core.FileFormat.TFRECORD):
    with pytest.raises(ValueError, match="stored as 'tfrecord'.*array_record"):
      _mnist_full.mnist_builder(full_dir)
