"""Miners against pytorch-metric-learning 2.9.0 goldens and brute-force numpy.

Goldens: ``tests/golden/make_metric_tooling.py`` (torch is not needed here).
The numpy miners below loop over anchors / pairs, written from the papers'
definitions, independent of the masked JAX code.
"""

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


_unit = np_reference.unit


def _np_pairs(labels, ref_labels=None):
  """Positive / negative candidate lists per anchor (self excluded w/o refs)."""
  self_ref = ref_labels is None
  ref_labels = labels if self_ref else ref_labels
  pos = [[j for j in range(len(ref_labels))
          if ref_labels[j] == labels[i] and not (self_ref and j == i)]
         for i in range(len(labels))]
  neg = [[j for j in range(len(ref_labels)) if ref_labels[j] != labels[i]]
         for i in range(len(labels))]
  return pos, neg


def np_ms_miner(x, labels, eps, ref=None, ref_labels=None):
  s = _unit(x) @ _unit(x if ref is None else ref).T
  pos, neg = _np_pairs(labels, ref_labels)
  out = np.zeros(s.shape, bool)
  for i in range(len(labels)):
    if not pos[i] or not neg[i]:
      continue
    for j in pos[i]:
      out[i, j] = s[i, j] - eps < max(s[i, n] for n in neg[i])
    for j in neg[i]:
      out[i, j] = s[i, j] + eps > min(s[i, p] for p in pos[i])
  return out


def np_batch_hard(x, labels):
  xn = _unit(x)
  d = np.linalg.norm(xn[:, None] - xn[None], axis=-1)
  pos, neg = _np_pairs(labels)
  out = np.zeros(d.shape, bool)
  for i in range(len(labels)):
    if pos[i] and neg[i]:
      out[i, max(pos[i], key=lambda j: d[i, j])] = True
      out[i, min(neg[i], key=lambda j: d[i, j])] = True
  return out


def np_triplets(x, labels, margin, kind, ref=None, ref_labels=None):
  xn = _unit(x)
  rn = xn if ref is None else _unit(ref)
  d = np.linalg.norm(xn[:, None] - rn[None], axis=-1)
  pos, neg = _np_pairs(labels, ref_labels)
  out = np.zeros((len(labels), len(rn), len(rn)), bool)
  for a in range(len(labels)):
    for p in pos[a]:
      for n in neg[a]:
        t = d[a, n] - d[a, p]
        out[a, p, n] = {"all": t <= margin, "hard": t <= min(margin, 0),
                        "semihard": 0 < t <= margin, "easy": t > margin}[kind]
  return out


def _golden_batch():
  return (GOLDEN["miner_x"], GOLDEN["miner_labels"].astype(np.int32),
          GOLDEN["miner_ref"], GOLDEN["miner_ref_labels"].astype(np.int32))


def test_multi_similarity_miner_matches_pml_and_numpy():
  x, y, ref, ry = _golden_batch()
  mine = jax.jit(functools.partial(ml.multi_similarity_miner, epsilon=0.1))
  own = mine(x, y)
  np.testing.assert_array_equal(own, GOLDEN["miner_ms"])
  np.testing.assert_array_equal(own, np_ms_miner(x, y, 0.1))
  with_ref = mine(x, y, ref_embeddings=ref, ref_labels=ry)
  np.testing.assert_array_equal(with_ref, GOLDEN["miner_ms_ref"])
  np.testing.assert_array_equal(with_ref, np_ms_miner(x, y, 0.1, ref, ry))
  # Mining removed pairs (the comparison can fail).
  assert own.sum() < len(y) * (len(y) - 1)


def test_batch_hard_miner_matches_pml_and_numpy():
  x, y, _, _ = _golden_batch()
  mask = jax.jit(ml.batch_hard_miner)(x, y)
  np.testing.assert_array_equal(mask, GOLDEN["miner_batch_hard"])
  np.testing.assert_array_equal(mask, np_batch_hard(x, y))
  # Singleton class 5 has no positive: its row is empty.
  assert not np.any(np.asarray(mask)[y == 5])


@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_triplet_margin_miner_matches_pml_and_numpy(kind):
  x, y, _, _ = _golden_batch()
  mask = jax.jit(functools.partial(ml.triplet_margin_miner, margin=0.2,
                                   type_of_triplets=kind))(x, y)
  np.testing.assert_array_equal(mask, GOLDEN[f"miner_triplet_{kind}"])
  np.testing.assert_array_equal(mask, np_triplets(x, y, 0.2, kind))
  assert np.asarray(mask).sum() > 0


def test_semihard_miner_with_references_matches_pml_and_numpy():
  x, y, ref, ry = _golden_batch()
  mask = jax.jit(functools.partial(
      ml.triplet_margin_miner, type_of_triplets="semihard"))(
          x, y, ref_embeddings=ref, ref_labels=ry)
  np.testing.assert_array_equal(mask, GOLDEN["miner_triplet_semihard_ref"])
  np.testing.assert_array_equal(mask, np_triplets(x, y, 0.2, "semihard", ref, ry))


def test_pairs_from_triplets_is_the_union_of_ap_and_an_pairs():
  t = np.asarray(GOLDEN["miner_triplet_semihard"])
  ref = np.zeros(t.shape[:2], bool)
  for a, p, n in zip(*np.nonzero(t)):
    ref[a, p] = ref[a, n] = True
  np.testing.assert_array_equal(jax.jit(ml.pairs_from_triplets)(t), ref)


def test_ms_miner_mask_reproduces_the_loss_inner_miner():
  x, y, ref, ry = _golden_batch()

  @jax.jit
  def run(e):
    mask = ml.multi_similarity_miner(e, y)
    return (losses.multi_similarity_loss(e, y, mine=False, pair_where=mask),
            losses.multi_similarity_loss(e, y))

  via_mask, inner = run(x)
  np.testing.assert_allclose(via_mask, inner, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("loss_name", ["multi_similarity_loss",
                                       "threshold_consistent_margin_loss",
                                       "snr_contrastive_loss"])
def test_pair_losses_take_batch_hard_and_triplet_masks(loss_name):
  # A pair mask restricts the loss to those pairs: equal to the loss computed
  # by brute force on the kept pairs only (MS: per anchor, on its kept pairs).
  fn = getattr(losses, loss_name)
  x, y, _, _ = _golden_batch()
  kw = dict(mine=False) if loss_name == "multi_similarity_loss" else {}

  @jax.jit
  def run(e):
    hard = ml.batch_hard_miner(e, y)
    semi = ml.pairs_from_triplets(ml.triplet_margin_miner(
        e, y, type_of_triplets="semihard"))
    return hard, semi, fn(e, y, pair_where=hard, **kw), fn(e, y, pair_where=semi, **kw)

  hard, semi, out_hard, out_semi = run(x)
  for mask, out in ((hard, out_hard), (semi, out_semi)):
    same = y[:, None] == y[None, :]
    pos = np.asarray(mask) & same & ~np.eye(len(y), dtype=bool)
    ref = np_reference.pair_loss(loss_name, x, pos, np.asarray(mask) & ~same)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_where_drops_examples_from_every_miner():
  x, y, _, _ = _golden_batch()
  keep = np.ones(len(y), bool)
  keep[[1, 4, 9]] = False
  sub = np.ix_(keep, keep)
  for miner in (ml.multi_similarity_miner, ml.batch_hard_miner):
    full = jax.jit(lambda e, m: miner(e, y, where=m))(x, keep)
    alone = jax.jit(miner)(x[keep], y[keep])
    np.testing.assert_array_equal(np.asarray(full)[sub], alone)
    assert not np.any(np.asarray(full)[~keep]) and not np.any(
        np.asarray(full)[:, ~keep])
  trip = jax.jit(lambda e, m: ml.triplet_margin_miner(e, y, where=m))(x, keep)
  alone = jax.jit(ml.triplet_margin_miner)(x[keep], y[keep])
  np.testing.assert_array_equal(np.asarray(trip)[np.ix_(keep, keep, keep)], alone)


def test_no_positive_or_no_negative_gives_empty_masks():
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 4))
  run = jax.jit(lambda e, y: (ml.multi_similarity_miner(e, y),
                              ml.batch_hard_miner(e, y),
                              ml.triplet_margin_miner(e, y)))
  for y in (jnp.zeros(6, jnp.int32), jnp.arange(6, dtype=jnp.int32)):
    assert not any(np.any(m) for m in run(x, y))


def test_miner_bad_inputs_raise_naming_the_argument():
  x, y = jnp.ones((4, 3)), jnp.array([0, 0, 1, 1])
  cases = [
      (lambda: ml.multi_similarity_miner(x, y, epsilon=-1.0), ValueError, "`epsilon`"),
      (lambda: ml.batch_hard_miner(x[0], y), ValueError, "`embeddings`"),
      (lambda: ml.batch_hard_miner(x, y[:3]), ValueError, "`labels`"),
      (lambda: ml.batch_hard_miner(x, y, ref_embeddings=x), ValueError,
       "`ref_labels`"),
      (lambda: ml.batch_hard_miner(x, y, ref_embeddings=x[:, :2], ref_labels=y),
       ValueError, "`ref_embeddings`"),
      (lambda: ml.batch_hard_miner(x, y, pair_where=jnp.ones((4, 3), bool)),
       ValueError, "`pair_where`"),
      (lambda: ml.batch_hard_miner(x, y, pair_where=jnp.ones((4, 4))),
       TypeError, "`pair_where`"),
      (lambda: ml.triplet_margin_miner(x, y, type_of_triplets="hardest"),
       ValueError, "`type_of_triplets`"),
      (lambda: ml.triplet_margin_miner(x, y, margin=float("nan")), ValueError,
       "`margin`"),
      (lambda: ml.pairs_from_triplets(jnp.ones((2, 3, 4), bool)), ValueError,
       "`triplet_mask`"),
      # The pair losses share the reference / pair-mask checks.
      (lambda: losses.multi_similarity_loss(x, y, ref_labels=y), ValueError,
       "`ref_embeddings`"),
      (lambda: losses.threshold_consistent_margin_loss(
          x, y, ref_embeddings=x, ref_labels=y[:3]), ValueError, "`ref_labels`"),
      (lambda: losses.snr_contrastive_loss(
          x, y, pair_where=jnp.ones((4, 5), bool)), ValueError, "`pair_where`"),
  ]
  for call, error, needle in cases:
    with pytest.raises(error, match=needle):
      call()
