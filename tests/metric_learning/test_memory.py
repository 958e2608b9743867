"""Cross-batch memory against pytorch-metric-learning 2.9.0's CrossBatchMemory
(goldens from ``tests/golden/make_metric_tooling.py``) and a numpy ring buffer
with brute-force pair losses over (batch) x (memory)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import losses
from diversity_jax import metric_learning as ml
from tests.metric_learning import np_reference

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "..", "golden",
                              "metric_tooling.npz"))
PAIR_LOSSES = ["multi_similarity_loss", "threshold_consistent_margin_loss",
               "snr_contrastive_loss"]


@pytest.mark.parametrize("via", ["miner", "inner_mining"])
def test_matches_pml_cross_batch_memory(via):
  if via == "miner":
    loss_fn = functools.partial(losses.multi_similarity_loss, mine=False)
    miner = ml.multi_similarity_miner
  else:
    loss_fn, miner = losses.multi_similarity_loss, None
  step = jax.jit(functools.partial(ml.cross_batch_memory_loss, loss_fn,
                                   miner=miner))
  state = ml.cross_batch_memory_init(20, 8)
  for x, y, want in zip(GOLDEN["xbm_x"], GOLDEN["xbm_labels"],
                        GOLDEN["xbm_loss"]):
    loss, state = step(x, y.astype(np.int32), state)
    np.testing.assert_allclose(loss.mean(), want, rtol=2e-5)
  assert int(state.position) == 32 % 20  # the ring buffer wrapped


class NumpyRing:
  """A ring buffer written from the paper's description (FIFO, size M)."""

  def __init__(self, size, dim):
    self.x = np.zeros((size, dim))
    self.y = np.zeros(size, np.int64)
    self.filled = np.zeros(size, bool)
    self.pos = 0

  def push(self, x, y, keep):
    slots = []
    for xi, yi, k in zip(x, y, keep):
      if not k:
        slots.append(-1)
        continue
      self.x[self.pos], self.y[self.pos], self.filled[self.pos] = xi, yi, True
      slots.append(self.pos)
      self.pos = (self.pos + 1) % len(self.x)
    return np.array(slots)


@pytest.mark.parametrize("loss_name", PAIR_LOSSES)
def test_every_pair_loss_against_numpy_ring_buffer(loss_name):
  fn = getattr(losses, loss_name)
  kw = dict(mine=False) if loss_name == "multi_similarity_loss" else {}
  step = jax.jit(functools.partial(ml.cross_batch_memory_loss, fn, **kw))
  state, ring = ml.cross_batch_memory_init(10, 6), NumpyRing(10, 6)
  key = jax.random.PRNGKey(0)
  for t in range(4):
    x = np.asarray(jax.random.normal(jax.random.fold_in(key, t), (4, 6)))
    y = np.array([0, 1, t % 2, 2], np.int32)
    keep = np.array([True, t != 1, True, True])
    loss, state = step(x, y, state, where=keep)
    slots = ring.push(x, y, keep)
    same = y[:, None] == ring.y[None, :]
    cand = ring.filled[None, :] & (slots[:, None] != np.arange(10)[None, :])
    cand &= keep[:, None]
    want = np_reference.pair_loss(loss_name, x, same & cand, ~same & cand,
                                  ref=ring.x)
    if np.ndim(want):
      want = np.where(keep, want, 0.0)
    np.testing.assert_allclose(loss, want, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(state.embeddings, ring.x, rtol=1e-6)
    np.testing.assert_array_equal(state.filled, ring.filled)
    assert int(state.position) == ring.pos


def test_memory_of_one_batch_equals_the_plain_batch_loss():
  # Memory = the batch itself (own copies excluded): the in-batch loss.
  x = jax.random.normal(jax.random.PRNGKey(1), (8, 5))
  y = jnp.array([0, 0, 1, 1, 2, 2, 3, 0])
  for name in PAIR_LOSSES:
    fn = getattr(losses, name)
    loss, _ = jax.jit(functools.partial(ml.cross_batch_memory_loss, fn))(
        x, y, ml.cross_batch_memory_init(8, 5))
    np.testing.assert_allclose(loss, jax.jit(fn)(x, y), rtol=1e-5, atol=1e-6)


def test_gradient_flows_through_the_queries_only():
  # The enqueued copies carry no gradient: d/dx equals the gradient of the
  # loss against the (constant) updated memory.
  y = jnp.array([0, 1, 0, 1])

  @jax.jit
  def run(x):
    state = ml.cross_batch_memory_init(8, 3)
    _, state = ml.cross_batch_memory_loss(losses.multi_similarity_loss, x, y,
                                          state)
    x2 = x + 0.3
    after, slots = ml.cross_batch_memory_update(state, x2, y)
    mask = after.filled[None, :] & (slots[:, None] != jnp.arange(8)[None, :])
    explicit = lambda e: losses.multi_similarity_loss(
        e, y, ref_embeddings=after.embeddings, ref_labels=after.labels,
        pair_where=mask).sum()
    xbm = lambda e: ml.cross_batch_memory_loss(
        losses.multi_similarity_loss, e, y, state)[0].sum()
    return jax.grad(xbm)(x2), jax.grad(explicit)(x2)

  g_xbm, g_explicit = run(jax.random.normal(jax.random.PRNGKey(2), (4, 3)))
  assert np.any(np.asarray(g_xbm) != 0)
  np.testing.assert_allclose(g_xbm, g_explicit, rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise_naming_the_argument():
  state = ml.cross_batch_memory_init(4, 3)
  x, y = jnp.ones((5, 3)), jnp.arange(5)
  with pytest.raises(ValueError, match="memory"):
    ml.cross_batch_memory_update(state, x, y)
  with pytest.raises(ValueError, match="`embeddings`"):
    ml.cross_batch_memory_update(state, x[:2, :2], y[:2])
  with pytest.raises(ValueError, match="`memory_size`"):
    ml.cross_batch_memory_init(0, 3)
  with pytest.raises(TypeError, match="`label_dtype`"):
    ml.cross_batch_memory_init(4, 3, label_dtype=jnp.float32)
