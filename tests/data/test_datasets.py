"""data.load: mock, the offline TFDS builders (DomainBed constructions), tfds: names."""

import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest

from diversity_jax import data
from diversity_jax.data import _domainbed


# --------------------------------------------------------------------- mock --
def test_mock_dataset():
  ds = data.load("mock")
  assert ds.domains == ["d0", "d1", "d2"]
  assert ds.num_classes == 4 and ds.input_shape == (8, 8, 1)
  again = data.load("mock")
  for d in ds.domains:
    x, y = ds.arrays(d)
    assert x.shape == (120, 8, 8, 1) and x.dtype == np.float32
    assert y.shape == (120,) and y.dtype == np.int32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert set(np.unique(y)) == {0, 1, 2, 3}
    np.testing.assert_array_equal(x, again.arrays(d)[0])
  # Domains differ (a real shift): mean brightness increases with the domain.
  means = [ds.arrays(d)[0].mean() for d in ds.domains]
  assert means[0] < means[1] < means[2]


def test_mock_is_learnable_by_nearest_class_mean():
  ds = data.load("mock")
  x, y = ds.arrays("d0")
  flat = x.reshape(len(x), -1)
  centers = np.stack([flat[y == k].mean(0) for k in range(4)])
  pred = np.argmin(((flat[:, None] - centers[None]) ** 2).sum(-1), 1)
  assert (pred == y).mean() > 0.9


def test_load_errors():
  with pytest.raises(ValueError, match="unknown dataset `name` 'nope'.*mock"):
    data.load("nope")
  with pytest.raises(TypeError, match="name"):
    data.load(3)
  with pytest.raises(ValueError, match="unknown `domain` 'x'.*d0"):
    data.load("mock").arrays("x")


def test_default_data_dir(monkeypatch):
  monkeypatch.setenv("DIVERSITY_JAX_DATA_DIR", "/some/where")
  assert data.default_data_dir() == "/some/where"
  monkeypatch.delenv("DIVERSITY_JAX_DATA_DIR")
  assert data.default_data_dir().endswith(
      os.path.join(".cache", "diversity_jax", "tensorflow_datasets"))


def test_import_does_not_load_tfds():
  code = ("import sys, diversity_jax, diversity_jax.data as d; d.load('mock'); "
          "assert 'tensorflow_datasets' not in sys.modules, 'tfds imported'")
  subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------ DomainBed constructions ----
@pytest.fixture(scope="module")
def mnist():
  return _domainbed.mnist5k()


def test_mnist5k_is_real_mnist(mnist):
  images, labels = mnist
  assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
  np.testing.assert_array_equal(np.bincount(labels), [500] * 10)
  # MNIST statistics: mean pixel 0.1307 * 255 ~ 33.3, ~19% of pixels lit,
  # border rows empty; class means differ (a "1" has far less ink than a "0").
  assert abs(images.mean() - 33.3) < 1.5
  assert images[:, 0, :].max() == 0
  ink = [images[labels == k].mean() for k in range(10)]
  assert ink[1] < 0.6 * ink[0]


def test_split_environments_like_domainbed(mnist):
  images, labels = mnist
  envs = _domainbed.split_environments(images, labels, 6)
  assert [len(y) for _, y in envs] == [834, 834, 833, 833, 833, 833]
  perm = np.random.default_rng(0).permutation(5000)
  np.testing.assert_array_equal(envs[2][1], labels[perm][2::6])
  np.testing.assert_array_equal(envs[5][0], images[perm][5::6])


def test_rotate_direction_and_identity(mnist):
  images = mnist[0][:4]
  np.testing.assert_array_equal(_domainbed.rotate(images, 0), images)
  # Counter-clockwise like torchvision / PIL: +90 degrees == np.rot90 (k=1).
  np.testing.assert_array_equal(_domainbed.rotate(images, 90),
                                np.rot90(images, k=1, axes=(1, 2)))
  # 30 degrees is neither identity nor lossy beyond interpolation: rotating
  # back recovers the digit closely.
  r = _domainbed.rotate(images, 30)
  assert np.abs(r.astype(float) - images).mean() > 10
  back = _domainbed.rotate(r, -30).astype(float)
  assert np.abs(back - images).mean() < 0.35 * np.abs(r.astype(float) - images).mean()


def test_colored_statistics(mnist):
  envs = _domainbed.colored_domains(*mnist)
  assert [len(e[1]) for e in envs] == [1667, 1667, 1666]
  for (x, y, c, digit), flip in zip(envs, (0.1, 0.2, 0.9)):
    n = len(y)
    assert x.shape == (n, 28, 28, 2) and x.dtype == np.uint8
    # 25% label noise w.r.t. the digit<5 label (4 sigma ~ 0.042).
    noise = np.mean(y != (digit < 5))
    assert abs(noise - 0.25) < 4 * np.sqrt(0.25 * 0.75 / n), noise
    # Color disagrees with the (noisy) label at rate `flip`.
    rate = np.mean(c != y)
    assert abs(rate - flip) < 4 * np.sqrt(flip * (1 - flip) / n), (rate, flip)
    # The digit sits in channel `color`; the other channel is zero.
    ink = x.reshape(n, -1, 2).sum(1)
    np.testing.assert_array_equal(np.argmax(ink, 1), c)
    assert (ink.min(1) == 0).all()


# ----------------------------------------------------------------- builders --
def test_rotated_mnist_built(built_data_dir, mnist):
  ds = data.load("rotated_mnist", data_dir=built_data_dir)
  assert ds.domains == ["0", "15", "30", "45", "60", "75"]
  assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
  sizes = [len(ds.arrays(d)[1]) for d in ds.domains]
  assert sizes == [834, 834, 833, 833, 833, 833]
  envs = _domainbed.split_environments(*mnist, 6)
  x0, y0 = ds.arrays("0")
  assert x0.dtype == np.float32 and y0.dtype == np.int32
  # Domain '0' is the unrotated digits / 255, in the split's order.
  np.testing.assert_array_equal(x0[..., 0], envs[0][0] / np.float32(255))
  np.testing.assert_array_equal(y0, envs[0][1])
  x75, y75 = ds.arrays("75")
  np.testing.assert_array_equal(y75, envs[5][1])
  assert 0.0 <= x75.min() and x75.max() <= 1.0
  # Rotation moves ink: 75 degrees differs from the unrotated digits a lot.
  assert np.abs(x75[..., 0] - envs[5][0] / 255.0).mean() > 0.05
  # Digits in every domain cover all 10 classes roughly evenly.
  for d in ds.domains:
    counts = np.bincount(ds.arrays(d)[1], minlength=10)
    assert counts.min() > 50


def test_rotated_mnist_angles_independent_check(built_data_dir, mnist):
  """Each domain's digits, un-rotated with scipy (a separate implementation),
  best match the source digits at the domain's own angle."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  ds = data.load("rotated_mnist", data_dir=built_data_dir)
  envs = _domainbed.split_environments(*mnist, 6)
  candidates = np.arange(-90, 91, 15)
  for e, domain in ((2, "30"), (5, "75")):
    x = ds.arrays(domain)[0][:40, ..., 0]
    src = envs[e][0][:40] / 255.0
    errs = [np.mean((ndimage.rotate(x, -a, axes=(1, 2), reshape=False, order=3)
                     - src) ** 2) for a in candidates]
    assert candidates[int(np.argmin(errs))] == int(domain), errs


def test_colored_mnist_built(built_data_dir, mnist):
  ds = data.load("colored_mnist", data_dir=built_data_dir)
  want = _domainbed.colored_domains(*mnist)
  x, y = ds.arrays("+80%")
  np.testing.assert_array_equal(x, want[1][0] / np.float32(255))
  np.testing.assert_array_equal(y, want[1][1])
  assert ds.domains == ["+90%", "+80%", "-90%"]
  assert ds.num_classes == 2 and ds.input_shape == (28, 28, 2)
  for d, flip in zip(ds.domains, (0.1, 0.2, 0.9)):
    x, y = ds.arrays(d)
    n = len(y)
    assert x.shape == (n, 28, 28, 2) and set(np.unique(y)) == {0, 1}
    color = np.argmax(x.reshape(n, -1, 2).sum(1), 1)
    agree = np.mean(color == y)   # '+90%': color predicts the label 90%
    assert abs(agree - (1 - flip)) < 4 * np.sqrt(flip * (1 - flip) / n)
    assert abs(np.mean(y) - 0.5) < 0.05


def test_digits_rotated_built(built_data_dir):
  ds = data.load("digits_rotated", data_dir=built_data_dir)
  assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
  assert [len(ds.arrays(d)[1]) for d in ds.domains] == [300, 300, 300, 299, 299, 299]
  x, _ = ds.arrays("0")
  assert x.max() == 1.0 and x.min() == 0.0


def test_first_build_is_quiet(tmp_path, capfd, caplog):
  # Nothing is downloaded: no TFDS "Downloading and preparing dataset Unknown
  # size" line, and no "has no dataset_info.json" warning about the folder
  # being built.
  with caplog.at_level("INFO"):
    data.load("digits_rotated", data_dir=str(tmp_path))
  out, err = capfd.readouterr()
  assert "Downloading" not in out + err and "prepared" not in out + err
  assert not [r for r in caplog.records if "dataset_info" in r.getMessage()]
  assert [r.getMessage() for r in caplog.records
          if "diversity_jax.data: building" in r.getMessage()]


def test_offline_build_is_cached(built_data_dir):
  from diversity_jax.data import _builders  # pylint: disable=g-import-not-at-top
  first = data.load("digits_rotated", data_dir=built_data_dir)  # builds if new
  info = os.path.join(built_data_dir, "digits_rotated", "1.0.0",
                      "dataset_info.json")
  mtime = os.path.getmtime(info)
  before = _builders.BUILD_COUNTS["digits_rotated"]
  assert before >= 1  # built by this process (the data dir is per session)
  ds = data.load("digits_rotated", data_dir=built_data_dir)
  np.testing.assert_array_equal(ds.arrays("30")[0], first.arrays("30")[0])
  assert _builders.BUILD_COUNTS["digits_rotated"] == before
  assert os.path.getmtime(info) == mtime


def test_builders_need_no_tensorflow(built_data_dir):
  data.load("digits_rotated", data_dir=built_data_dir).arrays("0")
  assert "tensorflow" not in sys.modules


@pytest.mark.parametrize("module", ["_pipeline", "_datasets", "_sources"])
def test_docstring_examples(module):
  import doctest  # pylint: disable=g-import-not-at-top
  import importlib  # pylint: disable=g-import-not-at-top
  mod = importlib.import_module(f"diversity_jax.data.{module}")
  result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0


def test_public_names_documented():
  for name in data.__all__:
    doc = getattr(data, name).__doc__ or ""
    assert doc.strip(), name
    if name != "default_data_dir":
      assert "Example" in doc, name


# ------------------------------------------------------------- tfds: names --
def test_tfds_name_with_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with tfds.testing.mock_data(num_examples=6):
    ds = data.load("tfds:mnist", data_dir=str(tmp_path), download=True)
    assert ds.name == "tfds:mnist" and ds.domains == ["all"]
    assert ds.num_classes == 10 and ds.input_shape == (28, 28, 1)
    x, y = ds.arrays("all")
  assert x.shape == (6, 28, 28, 1) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0
  assert y.dtype == np.int32 and ((0 <= y) & (y < 10)).all()


def test_tfds_never_downloads_by_default(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  with mock.patch.object(tfds.core.DatasetBuilder, "download_and_prepare") as dl:
    with pytest.raises(FileNotFoundError, match="download=True"):
      data.load("tfds:mnist", data_dir=str(tmp_path))
  dl.assert_not_called()


def test_tfds_unknown_name(tmp_path):
  with pytest.raises(ValueError, match="not a TFDS dataset"):
    data.load("tfds:no_such_dataset_xyz", data_dir=str(tmp_path))
  with pytest.raises(ValueError, match="unknown dataset"):
    data.load("tfds:")


def test_tfds_split_to_domain_rule():
  from diversity_jax.data import _tfds_real  # pylint: disable=g-import-not-at-top
  assert _tfds_real._domains(["train", "test"]) == (
      ["all"], {"all": ["train", "test"]})
  assert _tfds_real._domains([]) == (["all"], {"all": ["train"]})
  assert _tfds_real._domains(["train", "clipart", "sketch"]) == (
      ["clipart", "sketch"], {"clipart": ["clipart"], "sketch": ["sketch"]})
