"""Greedy selectors against brute-force numpy versions written separately."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import selection


def np_k_center(x, k, first=0, where=None):
  n = len(x)
  kept = np.ones(n, bool) if where is None else where
  picks = []
  for t in range(k):
    cand = [i for i in range(n) if kept[i] and i not in picks]
    if not cand:
      picks.append(-1)
      continue
    if t == 0:
      picks.append(first)
      continue
    dmin = [min(np.sum((x[i] - x[s]) ** 2) for s in picks if s >= 0)
            for i in cand]
    picks.append(cand[int(np.argmax(dmin))])
  return picks


def np_divprune(x, k):
  xn = x / np.linalg.norm(x, axis=1, keepdims=True)
  d = 1.0 - xn @ xn.T
  n = len(x)
  nn = [min(d[i, j] for i in range(n) if i != j) for j in range(n)]
  picks = [int(np.argmax(nn))]
  while len(picks) < k:
    cand = [i for i in range(n) if i not in picks]
    picks.append(cand[int(np.argmax([min(d[s, i] for s in picks)
                                     for i in cand]))])
  return picks


def np_log_det(l, k):
  picks = []
  for _ in range(k):
    cand = [i for i in range(len(l)) if i not in picks]
    vals = [np.linalg.slogdet(l[np.ix_(picks + [i], picks + [i])])[1]
            for i in cand]
    picks.append(cand[int(np.argmax(vals))])
  return picks


def np_vendi(l, k, first=0):
  def vs(s):
    lam = np.linalg.eigvalsh(l[np.ix_(s, s)] / len(s))
    lam = lam[lam > 1e-6]
    return np.exp(-np.sum(lam * np.log(lam)))
  picks = [first]
  while len(picks) < k:
    cand = [i for i in range(len(l)) if i not in picks]
    picks.append(cand[int(np.argmax([vs(picks + [i]) for i in cand]))])
  return picks


@pytest.mark.parametrize("seed", range(4))
def test_k_center_matches_brute_force(seed):
  x = np.random.default_rng(seed).normal(size=(12, 3)).astype(np.float32)
  f = jax.jit(selection.k_center_greedy, static_argnames="k")
  assert f(x, k=6, first=seed).tolist() == np_k_center(x, 6, first=seed)


def test_k_center_where_and_unfilled_slots():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 2)).astype(np.float32)
  where = np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)
  f = jax.jit(selection.k_center_greedy, static_argnames="k")
  got = f(x, k=6, where=where).tolist()
  assert got == np_k_center(x, 6, where=where)
  assert got[4:] == [-1, -1]
  # a NaN in a dropped row changes nothing; in a kept row, every pick is -1
  x2 = x.copy()
  x2[1] = np.nan
  assert f(x2, k=6, where=where).tolist() == got
  x2[0, 0] = np.nan
  assert f(x2, k=6, where=where).tolist() == [-1] * 6


def test_k_center_bf16_and_errors():
  x = np.random.default_rng(1).normal(size=(10, 4)).astype(np.float32)
  xb = jnp.asarray(x, jnp.bfloat16)
  want = np_k_center(np.asarray(xb, np.float32), 4)
  assert selection.k_center_greedy(xb, 4).tolist() == want
  with pytest.raises(ValueError, match="k_center_greedy: `k`"):
    selection.k_center_greedy(x, 11)
  with pytest.raises(TypeError, match="`features`"):
    selection.k_center_greedy(x.astype(np.int32), 2)
  with pytest.raises(ValueError, match="`first`"):
    selection.k_center_greedy(x, 2, first=10)
  with pytest.raises(TypeError, match="`k` must be a static"):
    jax.jit(selection.k_center_greedy)(x, 2)
  assert selection.k_center_greedy(x, 0).shape == (0,)


@pytest.mark.parametrize("seed", range(3))
def test_divprune_matches_brute_force_batched(seed):
  rng = np.random.default_rng(seed)
  t = rng.normal(size=(2, 3, 16, 5)).astype(np.float32)
  got = jax.jit(selection.divprune, static_argnames="k")(t, k=5)
  assert got.shape == (2, 3, 5)
  for b in range(2):
    for c in range(3):
      assert got[b, c].tolist() == np_divprune(t[b, c], 5)


def test_divprune_nan_sequence_only():
  t = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
  t[1, 2, 0] = np.nan
  got = selection.divprune(t, 3)
  assert got[0].tolist() == np_divprune(t[0], 3)
  assert got[1].tolist() == [-1, -1, -1]


@pytest.mark.parametrize("seed", range(3))
def test_greedy_log_det_matches_brute_force(seed):
  x = np.random.default_rng(seed).normal(size=(10, 6))
  l = (x @ x.T + 0.1 * np.eye(10)).astype(np.float32)
  f = jax.jit(selection.greedy_log_det, static_argnames="k")
  assert f(l, k=5).tolist() == np_log_det(l.astype(np.float64), 5)


def test_greedy_log_det_stops_at_rank():
  x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
  got = selection.greedy_log_det(x @ x.T, 5).tolist()
  assert got[3:] == [-1, -1] and -1 not in got[:3]
  where = np.array([0, 1, 1, 0, 1, 1, 1, 1], bool)
  got = selection.greedy_log_det(x @ x.T, 3, where=where).tolist()
  assert 0 not in got and 3 not in got
  l = x @ x.T
  l[0, 1] = np.nan
  assert selection.greedy_log_det(l, 2).tolist() == [-1, -1]


@pytest.mark.parametrize("seed", range(3))
def test_greedy_vendi_matches_brute_force(seed):
  x = np.random.default_rng(seed).normal(size=(9, 4))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  l = (x @ x.T).astype(np.float32)
  f = jax.jit(selection.greedy_vendi, static_argnames="k")
  assert f(l, k=4, first=seed).tolist() == np_vendi(l.astype(np.float64), 4,
                                                     first=seed)


def test_selection_mask():
  idx = jnp.array([[3, 1, -1], [0, 0, 2]])
  assert selection.selection_mask(idx, 4).tolist() == [
      [False, True, False, True], [True, False, True, False]]
