"""Metric losses: edge cases, `where`, bad inputs and memory.

The family-wide checks (jit, vmap, check_grads, bf16, extremes, smallest
batch) of these specs run in ``test_common.py``. Reference values are in
``test_metric_pml_golden.py`` (pytorch-metric-learning), ``test_metric_unpg.py``,
``test_metric_susana.py`` (numpy ports of the authors' code) and
``test_metric_opis.py``. This file checks the conventions shared by the family.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import losses

PAIRWISE = ["multi_similarity_loss", "threshold_consistent_margin_loss",
            "snr_contrastive_loss"]


def _x(seed=0, b=8, d=8):
  return jax.random.normal(jax.random.PRNGKey(seed), (b, d))


def _w(seed=1, d=8, c=4):
  return jax.random.normal(jax.random.PRNGKey(seed), (d, c))


# --------------------------------------------------------- empty pair sets
@pytest.mark.parametrize("name,labels", [
    (name, labels) for name in PAIRWISE + ["unpg_loss"]
    for labels in ("all_different", "all_same", "single")
    if not (name == "unpg_loss" and labels == "single")])
def test_batches_without_positive_or_negative_pairs(name, labels):
  fn = getattr(losses, name)
  b = 1 if labels == "single" else 6
  x = _x(b=b)
  y = (jnp.arange(b) if labels == "all_different" else jnp.zeros(b)).astype(jnp.int32)
  extra = (_w(c=6),) if name == "unpg_loss" else ()
  f = lambda e: jnp.sum(fn(e, y, *extra))
  val, grad = jax.jit(jax.value_and_grad(f))(x)
  assert np.isfinite(val) and np.all(np.isfinite(grad))
  if name == "unpg_loss":
    if labels != "all_different":  # no negative pair: the plain margin head
      plain = jax.jit(lambda e: losses.unpg_loss(
          e, y, *extra, unify_negatives=False).sum())(x)
      np.testing.assert_allclose(val, plain, rtol=1e-5)
    return
  if name == "multi_similarity_loss" or labels == "single":
    # MS: the miner needs both kinds of pair; with one kind nothing is kept.
    assert val == 0.0 and np.all(grad == 0.0)


def test_tcm_and_snr_with_one_kind_of_pair_use_that_kind_only():
  x = _x(b=6)
  same = jnp.zeros(6, jnp.int32)
  tcm = jax.jit(lambda e, l: (
      losses.threshold_consistent_margin_loss(e, l),
      losses.threshold_consistent_margin_loss(e, l, lambda_minus=0.0)))
  both, pos_only = tcm(x, same)
  np.testing.assert_allclose(both, pos_only)
  assert pos_only > 0
  diff = jnp.arange(6, dtype=jnp.int32)
  # Random pairs have d_SNR ~ 2: only the negative term (margin 3) is active.
  snr = jax.jit(lambda e, l: losses.snr_contrastive_loss(e, l, neg_margin=3.0))(
      x, diff)
  assert snr > 0


def test_multi_similarity_without_mining_uses_single_kind_of_pair():
  x = _x(b=6)
  same = jnp.zeros(6, jnp.int32)
  out = jax.jit(lambda e, l: losses.multi_similarity_loss(e, l, mine=False))(
      x, same)
  s = np.asarray(x) / np.linalg.norm(x, axis=1, keepdims=True)
  s = s @ s.T
  ref = [np.log1p(np.sum(np.exp(-2.0 * (np.delete(s[i], i) - 0.5)))) / 2.0
         for i in range(6)]
  np.testing.assert_allclose(out, ref, rtol=1e-5)


# ------------------------------------------------------------ NaN in, NaN out
@pytest.mark.parametrize("name", PAIRWISE + ["unpg_loss", "opis"])
def test_nan_embedding_makes_every_output_nan_unless_dropped(name):
  # Every anchor pairs with the NaN example (the miner's and the masks'
  # comparisons used to drop those pairs silently: finite values out).
  fn = getattr(losses, name)
  x = _x(b=6).at[2, 3].set(jnp.nan)
  y = jnp.array([0, 0, 1, 1, 2, 2], jnp.int32)
  kw = dict(far_range=(0.05, 0.5)) if name == "opis" else {}
  extra = (_w(c=3),) if name == "unpg_loss" else ()
  keep = np.arange(6) != 2

  @jax.jit
  def run(e, m):
    return fn(e, y, *extra, **kw), fn(e, y, *extra, where=m, **kw)

  out, masked = run(x, keep)
  assert np.all(np.isnan(np.asarray(out))), (name, out)
  # Dropped by `where`, the NaN example leaves the batch: the kept subset.
  sub = jax.jit(lambda e, l: fn(e, l, *extra, **kw))(x[keep], y[keep])
  masked = np.asarray(masked)
  if masked.ndim:
    np.testing.assert_allclose(masked[keep], sub, rtol=1e-5, atol=1e-6)
    assert masked[2] == 0
  else:
    np.testing.assert_allclose(masked, sub, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- where
def _drop_case(name):
  x = _x(3, b=10)
  y = jnp.array([0, 0, 1, 1, 2, 2, 0, 1, 3, 3], jnp.int32)
  keep = np.array([1, 1, 1, 0, 1, 1, 1, 0, 1, 1], bool)
  extra = ()
  if name == "normalized_softmax_loss":
    extra = (_w(c=4),)
  if name == "proto_triplet_loss":
    extra = (_w(c=4).T,)
  return x, y, keep, extra


@pytest.mark.parametrize("name", PAIRWISE + ["normalized_softmax_loss",
                                            "proto_triplet_loss"])
def test_where_equals_dropping_examples(name):
  fn = getattr(losses, name)
  x, y, keep, extra = _drop_case(name)

  @jax.jit
  def run(e, m):
    masked = fn(e, y, *extra, where=m)
    grad = jax.grad(lambda z: jnp.sum(fn(z, y, *extra, where=m)))(e)
    none = fn(e, y, *extra, where=jnp.zeros_like(m))
    return masked, grad, none

  masked, g, none = run(x, keep)
  sub = jax.jit(lambda e, l: fn(e, l, *extra))(x[keep], y[keep])
  if np.ndim(masked) == 1:  # per-anchor output
    np.testing.assert_allclose(np.asarray(masked)[keep], sub, rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(masked)[~keep] == 0)
  else:
    np.testing.assert_allclose(masked, sub, rtol=1e-5, atol=1e-6)
  assert np.all(np.asarray(g)[~keep] == 0) and np.all(np.isfinite(g))
  np.testing.assert_array_equal(none, 0.0)


# ----------------------------------------------------------------- bad input
def test_bad_inputs_raise_naming_the_argument():
  x, y, w = _x(b=4), jnp.array([0, 0, 1, 1], jnp.int32), _w(c=2)
  cases = [
      (lambda: losses.multi_similarity_loss(x[0], y), ValueError, "`embeddings`"),
      (lambda: losses.multi_similarity_loss(x, y.astype(jnp.float32)), TypeError,
       "`labels`"),
      (lambda: losses.multi_similarity_loss(x.astype(jnp.int32), y), TypeError,
       "`embeddings`"),
      (lambda: losses.multi_similarity_loss(x, y[:3]), ValueError, "`labels`"),
      (lambda: losses.multi_similarity_loss(x, y, alpha=0.0), ValueError, "`alpha`"),
      (lambda: losses.multi_similarity_loss(x, y, epsilon=-1.0), ValueError,
       "`epsilon`"),
      (lambda: losses.multi_similarity_loss(x, y, where=jnp.ones(4)), TypeError,
       "`where`"),
      (lambda: losses.multi_similarity_loss(x, y, where=jnp.ones(3, bool)),
       ValueError, "`where`"),
      (lambda: losses.threshold_consistent_margin_loss(x, y, margin_plus=2.0),
       ValueError, "`margin_plus`"),
      (lambda: losses.threshold_consistent_margin_loss(x, y, lambda_minus=-1.0),
       ValueError, "`lambda_minus`"),
      (lambda: losses.snr_contrastive_loss(x[:, :1], y), ValueError,
       "`embeddings`"),
      (lambda: losses.snr_distance(x, x[:, :3]), ValueError, "`ref_embeddings`"),
      (lambda: losses.normalized_softmax_loss(x, y, w.T), ValueError, "`weights`"),
      (lambda: losses.normalized_softmax_loss(x, y, w, temperature=0.0),
       ValueError, "`temperature`"),
      (lambda: losses.normalized_softmax_loss(x, y + 5, w), ValueError, "`labels`"),
      (lambda: losses.unpg_loss(x, y, w, head="sphereface"), ValueError, "`head`"),
      (lambda: losses.unpg_loss(x, y, w, whisker=-1.0), ValueError, "`whisker`"),
      (lambda: losses.unpg_loss(x, y, w, scale=0.0), ValueError, "`scale`"),
      (lambda: losses.proto_triplet_loss(x, y, w), ValueError, "`prototypes`"),
      (lambda: losses.proto_triplet_loss(x, y, w.T, jnp.zeros(3, jnp.int32)),
       ValueError, "`prototype_labels`"),
      (lambda: losses.proto_triplet_loss(x, y, w.T, margin=-0.1), ValueError,
       "`margin`"),
      (lambda: losses.icnn_loss(x[:2], y[:2]), ValueError, "`embeddings`"),
      (lambda: losses.icnn_loss(x, y, k=0), ValueError, "`k`"),
      (lambda: losses.icnn_loss(x, y, k=1, num_neighbors=9), ValueError,
       "`num_neighbors`"),
  ]
  for call, error, needle in cases:
    with pytest.raises(error, match=needle):
      call()
  # Errors fire at trace time under jit too.
  with pytest.raises(ValueError, match="`labels`"):
    jax.jit(losses.multi_similarity_loss)(x, y[:3])


# ----------------------------------------------------------------- memory
@pytest.mark.parametrize("name", PAIRWISE + ["unpg_loss", "icnn_loss", "opis"])
def test_memory_is_a_few_batch_squared_buffers(name):
  # No (B, B, D) tensor: forward + backward temp memory stays within a small
  # multiple of one (B, B) f32 buffer (a (B, B, D) broadcast would be D = 64x).
  b, d = 1024, 64
  fn = getattr(losses, name)
  x = jax.ShapeDtypeStruct((b, d), jnp.float32)
  y = jax.ShapeDtypeStruct((b,), jnp.int32)
  w = jax.ShapeDtypeStruct((d, 100), jnp.float32)
  if name == "unpg_loss":
    f = lambda e, l, c: fn(e, l, c).mean()
  elif name == "opis":
    f = lambda e, l, c: fn(e, l, far_range=(1e-3, 1e-2))
  else:
    f = lambda e, l, c: jnp.mean(fn(e, l))
  compiled = jax.jit(jax.value_and_grad(f)).lower(x, y, w).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    pytest.skip("memory_analysis unavailable on this backend")
  assert stats.temp_size_in_bytes <= 8 * b * b * 4, stats.temp_size_in_bytes
