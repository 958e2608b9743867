"""Retrieval metrics against pytorch-metric-learning 2.9.0's AccuracyCalculator
(goldens from ``tests/golden/make_metric_tooling.py``) and brute-force numpy;
blocked == one block (the plain N x N version), ragged last block included.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import metric_learning as ml

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "..", "golden",
                              "metric_tooling.npz"))
NAMES = ("precision_at_1", "r_precision", "mean_average_precision_at_r")


def np_retrieval(q, ql, r=None, rl=None, recall_at=(1, 2, 4), distance="euclidean"):
  """Full ranking per query by a stable sort of the distances."""
  self_ref = r is None
  r, rl = (q, ql) if self_ref else (r, rl)
  q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
  if distance == "cosine":
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    r = r / np.linalg.norm(r, axis=1, keepdims=True)
    d = -(q @ r.T)
  else:
    d = np.linalg.norm(q[:, None] - r[None], axis=-1)
  per = {name: [] for name in NAMES + tuple(f"recall_at_{k}" for k in recall_at)}
  for i in range(len(q)):
    order = [j for j in np.argsort(d[i], kind="stable") if not (self_ref and j == i)]
    rel = np.array([rl[j] == ql[i] for j in order])
    big_r = rel.sum()
    if big_r == 0:
      continue
    per["precision_at_1"].append(rel[0])
    per["r_precision"].append(rel[:big_r].mean())
    prec = np.cumsum(rel) / np.arange(1, len(rel) + 1)
    per["mean_average_precision_at_r"].append(np.sum(prec[:big_r] * rel[:big_r]) / big_r)
    for k in recall_at:
      per[f"recall_at_{k}"].append(rel[:k].any())
  return {name: np.mean(v) for name, v in per.items()}


def _golden_sets():
  return (GOLDEN["acc_q"], GOLDEN["acc_q_labels"].astype(np.int32),
          GOLDEN["acc_ref"], GOLDEN["acc_ref_labels"].astype(np.int32))


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
@pytest.mark.parametrize("setting", ["self", "cross"])
def test_matches_pml_accuracy_calculator_and_numpy(distance, setting):
  q, ql, r, rl = _golden_sets()
  refs = (None, None) if setting == "self" else (r, rl)
  got = ml.retrieval_metrics(q, ql, *refs, distance=distance, block_size=48)
  want = np_retrieval(q, ql, *refs, distance=distance)
  for name in NAMES:
    golden = GOLDEN[f"acc_{distance}_{setting}_{name}"]
    np.testing.assert_allclose(got[name], golden, rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(want[name], golden, rtol=1e-9, err_msg=name)
  for k in (1, 2, 4):
    np.testing.assert_allclose(got[f"recall_at_{k}"], want[f"recall_at_{k}"],
                               rtol=1e-6)
  np.testing.assert_allclose(got["recall_at_1"], got["precision_at_1"])


@pytest.mark.parametrize("block_size", [1, 7, 32, None])
def test_blocked_equals_one_block_with_ragged_last_block(block_size):
  key = jax.random.PRNGKey(3)
  labels = jax.random.randint(key, (45,), 0, 9)
  x = jax.random.normal(jax.random.fold_in(key, 1), (45, 6)) + 0.5 * labels[:, None]
  plain = ml.retrieval_metrics(x, labels, block_size=None, recall_at=(1, 3))
  got = ml.retrieval_metrics(x, labels, block_size=block_size, recall_at=(1, 3))
  for name in plain:
    np.testing.assert_allclose(got[name], plain[name], rtol=1e-6, err_msg=name)
  want = np_retrieval(np.asarray(x), np.asarray(labels), recall_at=(1, 3))
  for name in plain:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)


def test_under_jit_with_static_k_and_traced_labels():
  q, ql, r, rl = _golden_sets()
  run = jax.jit(lambda a, b, c, d: ml.retrieval_metrics(
      a, b, c, d, k=12, recall_at=(1, 2), block_size=64))
  got = run(q, ql, r, rl)
  want = np_retrieval(q, ql, r, rl, recall_at=(1, 2))
  for name in got:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, err_msg=name)
  # k smaller than a class: R-precision and MAP@R become NaN, not a guess.
  short = jax.jit(lambda a, b: ml.retrieval_metrics(a, b, k=2, recall_at=(1,)))(q, ql)
  assert np.isnan(short["r_precision"]) and np.isnan(short["mean_average_precision_at_r"])
  assert np.isfinite(short["precision_at_1"])
  with pytest.raises(ValueError, match="`k`"):
    jax.jit(lambda a, b: ml.retrieval_metrics(a, b))(q, ql)


def test_ties_lone_queries_and_no_match():
  # Duplicated embeddings tie: the lower reference index ranks first.
  q = jnp.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0], [5.0, 5.0]])
  ql = jnp.array([0, 1, 0, 2])
  got = ml.retrieval_metrics(q, ql, recall_at=(1,))
  # Queries 1 and 3 have no same-label reference (R = 0): skipped. Query 0's
  # nearest are 1 and 2 (tie at distance 1: index 1 first, wrong label; the
  # other order would give P@1 = 1); query 2's nearest is 1 (distance 0).
  want = np_retrieval(np.asarray(q), np.asarray(ql), recall_at=(1,))
  for name in got:
    np.testing.assert_allclose(got[name], want[name], err_msg=name)
  np.testing.assert_allclose(got["precision_at_1"], 0.0)
  np.testing.assert_allclose(got["mean_average_precision_at_r"], 0.0)
  # No query has a relevant reference: NaN (pml returns NaN too).
  none = ml.retrieval_metrics(q, jnp.arange(4), recall_at=(1,))
  assert all(np.isnan(v) for v in none.values())


def test_nan_embedding_gives_nan():
  q, ql, _, _ = _golden_sets()
  got = ml.retrieval_metrics(jnp.asarray(q).at[5, 0].set(jnp.nan), ql)
  assert all(np.isnan(v) for v in got.values())


def test_memory_is_one_block_not_the_full_matrix():
  n, d, bs = 4096, 32, 256
  x = jax.ShapeDtypeStruct((n, d), jnp.float32)
  y = jax.ShapeDtypeStruct((n,), jnp.int32)

  def temp(block_size):
    f = jax.jit(lambda a, b: ml.retrieval_metrics(a, b, k=16, recall_at=(1,),
                                                  block_size=block_size))
    stats = f.lower(x, y).compile().memory_analysis()
    if stats is None:
      pytest.skip("memory_analysis unavailable on this backend")
    return stats.temp_size_in_bytes

  blocked, plain = temp(bs), temp(None)
  assert blocked <= 8 * bs * n * 4, blocked
  assert plain >= n * n * 4, plain


def test_bad_inputs_raise_naming_the_argument():
  x, y = jnp.ones((6, 3)), jnp.array([0, 0, 1, 1, 2, 2])
  cases = [
      (lambda: ml.retrieval_metrics(x[0], y), "`query_embeddings`"),
      (lambda: ml.retrieval_metrics(x, y[:4]), "`query_labels`"),
      (lambda: ml.retrieval_metrics(x, y, x), "`ref_embeddings`"),
      (lambda: ml.retrieval_metrics(x, y, x[:, :2], y), "`ref_embeddings`"),
      (lambda: ml.retrieval_metrics(x, y, recall_at=(1,), k=0), "`k`"),
      (lambda: ml.retrieval_metrics(x, y, recall_at=(1,), k=6), "`k`"),
      (lambda: ml.retrieval_metrics(x, y, recall_at=(0,)), "`recall_at`"),
      (lambda: ml.retrieval_metrics(x, y, recall_at=(4,), k=3), "`recall_at`"),
      (lambda: ml.retrieval_metrics(x, y, recall_at=(1,), distance="l1"),
       "`distance`"),
      (lambda: ml.retrieval_metrics(x, y, recall_at=(1,), block_size=0),
       "`block_size`"),
      (lambda: ml.retrieval_metrics(x[:0], y[:0], recall_at=(1,)),
       "`query_embeddings`"),
      (lambda: ml.retrieval_metrics(x[:1], y[:1], recall_at=(1,)),
       "`query_embeddings`"),
      (lambda: ml.retrieval_metrics(x, y, x[:0], y[:0], recall_at=(1,)),
       "`ref_embeddings`"),
  ]
  for call, needle in cases:
    with pytest.raises(ValueError, match=needle):
      call()
  # k below the largest class, labels concrete: an error, not NaN.
  with pytest.raises(ValueError, match="`k`"):
    ml.retrieval_metrics(x, jnp.zeros(6, jnp.int32), k=2, recall_at=(1,))
