"""Family-wide checks over every public name of `diversity_jax.metric_learning`.

The spec names must equal ``metric_learning.__all__`` (a forgotten entry
fails). Each function runs under ``jax.jit``; bf16 embeddings give the result
of the same values in f32; every public docstring has an example and
references (functions also a formula); a NaN embedding reaches the loss or
metric as NaN.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import losses
from diversity_jax import metric_learning as ml

B, D = 10, 6
LABELS = jnp.array([0, 0, 0, 1, 1, 2, 2, 2, 3, 4], jnp.int32)


def _x(dtype=jnp.float32):
  x = np.random.default_rng(0).normal(size=(B, D))
  return jnp.asarray(x, jnp.bfloat16).astype(dtype)  # on the bf16 grid


def _xbm(x):
  loss, state = ml.cross_batch_memory_loss(
      losses.multi_similarity_loss, x, LABELS, ml.cross_batch_memory_init(16, D))
  return loss, state.embeddings


# name -> f(embeddings) run under jit; None: state / helper without embeddings.
SPECS = {
    "multi_similarity_miner": lambda x: ml.multi_similarity_miner(x, LABELS),
    "batch_hard_miner": lambda x: ml.batch_hard_miner(x, LABELS),
    "triplet_margin_miner": lambda x: ml.triplet_margin_miner(x, LABELS),
    "pairs_from_triplets": lambda x: ml.pairs_from_triplets(
        ml.triplet_margin_miner(x, LABELS)),
    "retrieval_metrics": lambda x: ml.retrieval_metrics(
        x, LABELS, k=3, recall_at=(1, 2), block_size=4),
    "cross_batch_memory_loss": _xbm,
    "cross_batch_memory_update": lambda x: ml.cross_batch_memory_update(
        ml.cross_batch_memory_init(12, D), x, LABELS),
    "cross_batch_memory_init": None,
    "CrossBatchMemoryState": None,
}


def test_specs_cover_public_api():
  assert sorted(SPECS) == sorted(ml.__all__)


@pytest.mark.parametrize("name", [n for n, f in SPECS.items() if f is not None])
def test_jit_and_bf16_inputs(name):
  f = jax.jit(SPECS[name])
  out32, out16 = f(_x()), f(_x(jnp.bfloat16))
  for a, b in zip(jax.tree_util.tree_leaves(out32),
                  jax.tree_util.tree_leaves(out16)):
    assert a.dtype == b.dtype or a.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(a, np.float64),
                               np.asarray(b, np.float64), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ml.__all__)
def test_docstrings_have_example_and_references(name):
  doc = getattr(ml, name).__doc__
  if name == "CrossBatchMemoryState":
    assert "Attributes:" in doc
    return
  assert "Example:" in doc and "References:" in doc, name
  assert ":math:" in doc or ".. math::" in doc, name


def test_nan_embedding_reaches_losses_and_metrics_as_nan():
  x = _x().at[3, 1].set(jnp.nan)
  mask = jax.jit(ml.multi_similarity_miner)(x, LABELS)
  loss = jax.jit(functools.partial(losses.multi_similarity_loss, mine=False))(
      x, LABELS, pair_where=mask)
  assert np.all(np.isnan(loss))
  xbm_loss, _ = jax.jit(_xbm)(x)
  assert np.all(np.isnan(xbm_loss))
  metrics = jax.jit(SPECS["retrieval_metrics"])(x)
  assert all(np.isnan(v) for v in metrics.values())
