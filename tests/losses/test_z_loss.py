"""spherical_z_loss and log_partition_penalty vs brute-force numpy formulas.

References (written here independently of the implementation, float64):
Z-loss  softplus(a (b - z_y)) / a with z_y = (o_y - mean o) / std o (ddof 0),
de Brebisson & Vincent 2016; PaLM z-loss  coeff * log(sum exp o)^2. The
a = 1, b = 0 member is also checked against a numpy port of the co-author's
Theano code (pascal20100/factored_output_layer@5fbe04e,
example/timing_example.py: z_loss), which works from the row sums
s = sum o and q = sum o^2.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import losses


def _data(b=5, k=4, seed=0):
  rng = np.random.default_rng(seed)
  return (3.0 * rng.standard_normal((b, k))).astype(np.float32), \
      rng.integers(0, k, b).astype(np.int32)


def _brute_z(o, y, a, b):
  o = np.asarray(o, np.float64)
  z = (o[np.arange(len(y)), y] - o.mean(-1)) / o.std(-1)
  return np.log1p(np.exp(a * (b - z))) / a


@pytest.mark.parametrize("a, b", [(1.0, 0.0), (0.1, 4.0), (5.0, -1.0)])
def test_spherical_z_loss_matches_numpy(a, b):
  o, y = _data()
  got = jax.jit(lambda x, t: losses.spherical_z_loss(x, t, a=a, b=b, eps=0.0))(
      o, y)
  np.testing.assert_allclose(got, _brute_z(o, y, a, b), rtol=1e-5, atol=1e-6)


def _authors_z_loss_a1_b0(o, y, eps=1e-12):
  """Port of z_loss(AT, q, s) of the authors' Theano example (summed)."""
  o = np.asarray(o, np.float64)
  n = o.shape[-1]
  s, q = o.sum(-1), np.square(o).sum(-1)
  mu = s / n
  sigma = np.sqrt(q / n - mu ** 2)
  target = o[np.arange(len(y)), y]
  return np.sum(np.logaddexp(0.0, (mu - target) / (sigma + eps)))


def test_spherical_z_loss_matches_authors_code():
  o, y = _data(b=6, k=5, seed=3)
  got = jax.jit(lambda x, t: jnp.sum(
      losses.spherical_z_loss(x, t, a=1.0, b=0.0, eps=0.0)))(o, y)
  np.testing.assert_allclose(got, _authors_z_loss_a1_b0(o, y), rtol=1e-5)


def test_spherical_z_loss_shift_scale_invariant_and_constant_logits():
  o, y = _data()
  f = jax.jit(lambda x: losses.spherical_z_loss(x, y, a=2.0, b=1.0))
  np.testing.assert_allclose(f(o), f(7.0 * o - 3.0), rtol=1e-5, atol=1e-6)
  # Constant logits: z_y = 0, loss softplus(a b)/a, finite gradient.
  const = np.ones((5, 4), np.float32)
  np.testing.assert_allclose(f(const), np.log1p(np.exp(2.0)) / 2.0, rtol=1e-6)
  g = jax.jit(jax.grad(lambda x: jnp.sum(f(x))))(const)
  assert np.all(np.isfinite(g))


@pytest.mark.parametrize("value", [0.1, 1e3])
@pytest.mark.parametrize("d", [3, 7, 8])
def test_spherical_z_loss_constant_nonzero_logits_give_z_zero(d, value):
  # f32 rounding of the row mean used to leave a residual identical in every
  # entry, which standardization blew up to z = +-1 (a=1, b=0, 0.1, D=8:
  # 1.3133 with eps=0 instead of log 2).
  const = jnp.full((2, d), value, jnp.float32)
  y = jnp.array([0, d - 1])
  for eps in (0.0, 1e-6):
    f = jax.jit(lambda x: losses.spherical_z_loss(x, y, a=1.0, b=0.0, eps=eps))
    np.testing.assert_allclose(f(const), np.log(2.0), rtol=1e-6)
    # Shift invariance: the gradient of the all-zero row (0 for eps = 0,
    # (e_y - 1/D) / sqrt(eps) scaled for eps > 0).
    grad = jax.jit(jax.grad(lambda x: jnp.sum(f(x))))
    np.testing.assert_allclose(grad(const), grad(jnp.zeros_like(const)),
                               rtol=1e-5)


def test_log_partition_penalty_matches_numpy():
  o, _ = _data()
  lse = np.log(np.exp(o.astype(np.float64)).sum(-1))
  got = jax.jit(lambda x: losses.log_partition_penalty(x, coeff=1e-4))(o)
  np.testing.assert_allclose(got, 1e-4 * lse ** 2, rtol=1e-5)
  # Gradient: 2 c lse softmax(o) (finite differences are in test_common).
  g = jax.jit(jax.grad(
      lambda x: jnp.sum(losses.log_partition_penalty(x, coeff=0.5))))(o)
  sm = np.exp(o - lse[:, None])
  np.testing.assert_allclose(g, 2 * 0.5 * lse[:, None] * sm, rtol=1e-4,
                             atol=1e-5)


def test_bad_inputs_and_hyperparameters():
  o, y = _data()
  z = jax.jit(losses.spherical_z_loss, static_argnames=("a", "b"))
  with pytest.raises(ValueError, match="`a`"):
    z(o, y, a=0.0, b=1.0)
  with pytest.raises(ValueError, match="`a`"):
    z(o, y, a=-1.0, b=1.0)
  with pytest.raises(ValueError, match="`b`"):
    z(o, y, a=1.0, b=float("inf"))
  with pytest.raises(ValueError, match="`labels`"):
    z(o, y[:-1], a=1.0, b=1.0)
  with pytest.raises(TypeError, match="`labels`"):
    z(o, y.astype(np.float32), a=1.0, b=1.0)
  with pytest.raises(ValueError, match="`labels`"):
    z(o, y[:, None], a=1.0, b=1.0)
  with pytest.raises(TypeError):  # a and b are required (no canonical value)
    losses.spherical_z_loss(o, y)
  p = jax.jit(losses.log_partition_penalty, static_argnames="coeff")
  with pytest.raises(ValueError, match="`coeff`"):
    p(o, coeff=-1.0)
  with pytest.raises(TypeError, match="`logits`"):
    p(y)
  with pytest.raises(ValueError, match="`logits`"):
    p(jnp.float32(1.0))
  with pytest.raises(ValueError, match="`where`"):
    p(o, where=jnp.ones((3,), bool))
