"""Family-wide checks over every public name of `diversity_jax.selection`.

The spec names must equal ``selection.__all__`` (a forgotten entry fails).
Every selector runs under ``jax.jit`` with a static ``k``, returns ``k``
int32 indices in ``[-1, n)`` with no repeated item, accepts bf16 inputs, and
every public function's docstring has a formula, an example and references.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import selection

N, D, K = 9, 4, 4


def _x(dtype=jnp.float32):
  return jnp.asarray(np.random.default_rng(0).normal(size=(N, D)), dtype)


def _kernel(dtype=jnp.float32):
  x = np.random.default_rng(0).normal(size=(N, D))
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  return jnp.asarray(x @ x.T + 0.1 * np.eye(N), dtype)


def _uds(dtype):
  z = jnp.asarray(np.random.default_rng(0).normal(size=(N, 3, 5)), dtype)
  idx, _, _ = jax.jit(selection.uds_select, static_argnames="k")(
      z, _x(dtype), selection.uds_init_memory(8, D), k=K)
  return idx


# name -> dtype -> (k,) indices computed under jit; None: not a selector.
SELECTORS = {
    "k_center_greedy": lambda dt: jax.jit(
        selection.k_center_greedy, static_argnames="k")(_x(dt), k=K),
    "divprune": lambda dt: jax.jit(
        selection.divprune, static_argnames="k")(_x(dt), k=K),
    "greedy_log_det": lambda dt: jax.jit(
        selection.greedy_log_det, static_argnames="k")(_kernel(dt), k=K),
    "greedy_vendi": lambda dt: jax.jit(
        selection.greedy_vendi, static_argnames="k")(_kernel(dt), k=K),
    "uds_select": _uds,
    "cluster_sample": lambda dt: jax.jit(
        selection.cluster_sample, static_argnames=("k", "num_clusters"))(
            jax.random.key(0), jnp.arange(N) % 3, k=K, num_clusters=3,
            quality=_x(dt)[:, 0]),
    "reweight_clusters": None,
    "kmeans": None,
    "kmeans_plus_plus_init": None,
    "quadmix_sample": None,  # repeats items (copies): tests/selection/test_quadmix.py
    "quadmix_sampling_values": None,
    "KMeansResult": None,
    "UDSMemory": None,
    "uds_init_memory": None,
    "selection_mask": None,
}


def test_specs_cover_public_api():
  assert sorted(SELECTORS) == sorted(selection.__all__)


@pytest.mark.parametrize("name", sorted(n for n, f in SELECTORS.items() if f))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_selector_indices(name, dtype):
  idx = np.asarray(SELECTORS[name](dtype))
  assert idx.shape == (K,) and idx.dtype == np.int32
  assert ((idx >= 0) & (idx < N)).all()
  assert len(set(idx.tolist())) == K


@pytest.mark.parametrize("name", sorted(selection.__all__))
def test_docstring(name):
  obj = getattr(selection, name)
  if inspect.isclass(obj):  # result / state containers
    assert obj.__doc__
    return
  doc = obj.__doc__
  for section in ("Args:", "Returns:", "Example:", "References:", "math::"):
    assert section in doc, f"{name} docstring lacks {section}"
