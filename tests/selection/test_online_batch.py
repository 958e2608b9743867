"""UDS online batch selection against a numpy version of the authors' rule."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from diversity_jax import selection


def np_uds(z, e, queue, k, alpha):
  util = np.array([np.linalg.svd(m, compute_uv=False).sum() for m in z])
  if len(queue):
    div = np.array([np.mean([np.linalg.norm(x - q) for q in queue]) for x in e])
  else:
    div = np.zeros(len(z))
  s = util + alpha * div
  order = sorted(range(len(s)), key=lambda i: (-s[i], i))[:k]
  return order, s


def test_uds_matches_brute_force_over_steps():
  rng = np.random.default_rng(0)
  size, dim, k, alpha = 5, 3, 2, 0.7
  mem = selection.uds_init_memory(size, dim)
  queue = []
  step = jax.jit(selection.uds_select, static_argnames="k")
  for _ in range(4):
    z = rng.normal(size=(6, 4, 5)).astype(np.float32)
    e = rng.normal(size=(6, dim)).astype(np.float32)
    idx, s, mem = step(z, e, mem, k=k, alpha=alpha)
    want, ws = np_uds(z, e, queue, k, alpha)
    np.testing.assert_allclose(s, ws, rtol=1e-5)
    assert idx.tolist() == want
    queue = (queue + [e[i] for i in want])[-size:]
    assert int(mem.count) == len(queue)
    np.testing.assert_allclose(
        np.sort(np.asarray(mem.buffer)[:len(queue)], axis=0),
        np.sort(np.stack(queue), 0))


def test_uds_token_mask_where_and_nan():
  rng = np.random.default_rng(1)
  z = rng.normal(size=(4, 3, 5)).astype(np.float32)
  e = rng.normal(size=(4, 2)).astype(np.float32)
  mask = np.array([[1, 1, 0]] * 4, bool)
  mem = selection.uds_init_memory(8, 2)
  _, s, _ = selection.uds_select(z, e, mem, 2, token_mask=mask)
  z0 = z.copy()
  z0[:, 2] = 0
  np.testing.assert_allclose(s, np_uds(z0, e, [], 2, 0.0)[1], rtol=1e-5)
  where = np.array([1, 0, 0, 0], bool)
  idx, _, m2 = selection.uds_select(z, e, mem, 2, where=where)
  assert idx.tolist() == [0, -1] and int(m2.count) == 1
  z[3, 0, 0] = np.nan
  idx, _, m3 = selection.uds_select(z, e, mem, 2)
  assert idx.tolist() == [-1, -1] and int(m3.count) == 0
  idx, _, _ = selection.uds_select(z, e, mem, 2, where=~(np.arange(4) == 3))
  assert -1 not in idx.tolist()
  with pytest.raises(ValueError, match="uds_select: `embeddings`"):
    selection.uds_select(z, e[:, :1], mem, 2)
