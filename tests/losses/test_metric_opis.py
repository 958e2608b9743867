"""OPIS against a brute-force numpy computation written from the definition.

No reference code for OPIS is stored, and the body of the paper (Sec. 3 of
arXiv:2307.04047) is not reachable with the search tools (see the Provenance
paragraph of ``opis``): the reference below follows the definition stated in
the docstring (F1-form utility of TPR / TNR, FAR-quantile calibration range,
class-mean), with explicit per-class pair lists, ``np.quantile`` and
``np.linspace``, sharing no code with the library. Independent of that
reading, ``test_opis_invariances`` checks properties any OPIS must have
(rotation / relabelling invariance, 0 for congruent classes).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import losses


def _opis_reference(x, y, far_range, num_thresholds=101):
  x = np.asarray(x, np.float64)
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  n = len(y)
  dist = lambda i, j: np.linalg.norm(x[i] - x[j])
  negatives = [dist(i, j) for i, j in itertools.combinations(range(n), 2)
               if y[i] != y[j]]
  if not negatives:
    return 0.0
  d_lo, d_hi = np.quantile(negatives, far_range)
  utilities = []
  for c in np.unique(y):
    members = [i for i in range(n) if y[i] == c]
    others = [j for j in range(n) if y[j] != c]
    if len(members) < 2 or not others:
      continue
    pos = np.array([dist(i, j) for i, j in itertools.combinations(members, 2)])
    negs = np.array([dist(i, j) for i in members for j in others])
    row = []
    for d in np.linspace(d_lo, d_hi, num_thresholds):
      tpr, tnr = np.mean(pos <= d), np.mean(negs > d)
      row.append(0.0 if tpr + tnr == 0 else 2 * tpr * tnr / (tpr + tnr))
    utilities.append(row)
  if not utilities:
    return 0.0
  u = np.array(utilities)                       # (classes, thresholds)
  return float(np.mean(np.var(u, axis=0)))


def _data(seed, n=18, c=4, d=5):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, size=n).astype(np.int32)
  spread = rng.uniform(0.3, 1.5, size=c)        # classes of unequal spread
  x = rng.normal(size=(c, d))[y] * 1.5 + spread[y, None] * rng.normal(size=(n, d))
  return x.astype(np.float32), y


@pytest.mark.parametrize("seed,far_range,num", [
    (0, (0.01, 0.1), 101), (1, (0.05, 0.5), 11), (2, (0.0, 1.0), 7)])
def test_opis_matches_reference(seed, far_range, num):
  x, y = _data(seed)
  f = jax.jit(lambda a, b: losses.opis(a, b, far_range=far_range,
                                       num_thresholds=num))
  ref = _opis_reference(x, y, far_range, num)
  np.testing.assert_allclose(f(x, y), ref, rtol=1e-4, atol=1e-6)
  assert ref > 1e-4


def test_opis_where_singletons_and_degenerate_sets():
  x, y = _data(3)
  y = y.copy()
  y[0] = 99                                      # a singleton class is skipped
  keep = np.ones(len(y), bool)
  keep[[4, 9]] = False
  f = jax.jit(lambda a, b, m: losses.opis(a, b, far_range=(0.02, 0.3),
                                          num_thresholds=21, where=m))
  np.testing.assert_allclose(
      f(x, y, keep), _opis_reference(x[keep], y[keep], (0.02, 0.3), 21),
      rtol=1e-4, atol=1e-6)
  for labels in (np.zeros(len(y), np.int32), np.arange(len(y), dtype=np.int32)):
    out = f(x, labels, np.ones(len(y), bool))
    assert out == 0.0                            # no negatives / no positives
  assert f(x, y, np.zeros(len(y), bool)) == 0.0


def _rotation(theta):
  c, s = np.cos(theta), np.sin(theta)
  return np.array([[c, -s], [s, c]])


def test_opis_invariances():
  f = jax.jit(lambda a, b: losses.opis(a, b, far_range=(0.1, 0.9),
                                       num_thresholds=33))
  # Three congruent classes: class k is class 0 rotated by 2 pi k / 3, so
  # every class sees the same positive and negative distances: OPIS = 0.
  base = np.array([[np.cos(a), np.sin(a)] for a in (0.0, 0.31, -0.52, 0.77)])
  x = np.concatenate([base @ _rotation(2 * np.pi * k / 3).T for k in range(3)])
  y = np.repeat(np.arange(3), len(base)).astype(np.int32)
  assert float(f(x.astype(np.float32), y)) < 1e-7
  # Spreading one class breaks the symmetry.
  x_wide = x.copy()
  wide = np.array([[np.cos(a), np.sin(a)] for a in (0.0, 0.9, -1.1, 0.5)])
  x_wide[:4] = wide
  value = float(f(x_wide.astype(np.float32), y))
  assert value > 1e-3
  # Rotating every embedding, rescaling them and renaming the classes changes
  # nothing.
  x_rot = 3.0 * x_wide @ _rotation(1.234).T
  np.testing.assert_allclose(f(x_rot.astype(np.float32), (y + 1) % 3 * 7),
                             value, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(value, _opis_reference(x_wide, y, (0.1, 0.9), 33),
                             rtol=1e-4, atol=1e-6)


def test_opis_bad_inputs():
  x, y = _data(4)
  for bad in [(0.1, 0.01), (0.1,), (-0.1, 0.5), "0.1"]:
    with pytest.raises(ValueError, match="`far_range`"):
      losses.opis(x, y, far_range=bad)
  with pytest.raises(ValueError, match="`num_thresholds`"):
    losses.opis(x, y, far_range=(0.0, 0.1), num_thresholds=1)
  with pytest.raises(TypeError, match="`labels`"):
    losses.opis(x, y.astype(np.float32), far_range=(0.0, 0.1))
