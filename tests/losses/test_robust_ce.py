"""Tests of label-smoothed CE (vs PyTorch golden) and symmetric CE (vs numpy)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diversity_jax import losses

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "golden")


def _np_log_softmax(z):
  z = np.asarray(z, np.float64)
  m = z.max(-1, keepdims=True)
  return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


@pytest.mark.parametrize("a", [0.0, 0.1, 0.35, 1.0])
def test_label_smoothing_matches_torch_golden(a):
  g = np.load(os.path.join(GOLDEN, "label_smoothed_cross_entropy.npz"))
  fn = jax.jit(lambda z, y: losses.label_smoothed_cross_entropy(
      z, y, smoothing=a))
  np.testing.assert_allclose(fn(g["logits"], g["labels"]), g[f"loss_{a}"],
                             rtol=1e-5, atol=1e-5)


def test_label_smoothing_matches_optax_smooth_labels():
  z = jax.random.normal(jax.random.key(0), (6, 4)) * 3
  y = jnp.array([0, 1, 2, 3, 0, 2])
  want = optax.softmax_cross_entropy(
      z, optax.smooth_labels(jax.nn.one_hot(y, 4), 0.2))
  got = jax.jit(lambda z: losses.label_smoothed_cross_entropy(
      z, y, smoothing=0.2))(z)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _np_sce(z, t, alpha):
  lp, lq = _np_log_softmax(z), _np_log_softmax(t)
  out = np.zeros(z.shape[:-1])
  for idx in np.ndindex(*z.shape[:-1]):
    fwd = -sum(np.exp(lq[idx][k]) * lp[idx][k] for k in range(z.shape[-1]))
    rev = -sum(np.exp(lp[idx][k]) * lq[idx][k] for k in range(z.shape[-1]))
    out[idx] = (1 - alpha) * fwd + alpha * rev
  return out


def test_symmetric_ce_matches_numpy():
  k1, k2 = jax.random.split(jax.random.key(1))
  z = jax.random.normal(k1, (3, 4, 6)) * 2
  t = jax.random.normal(k2, (3, 4, 6)) * 2
  fn = jax.jit(losses.symmetric_cross_entropy)  # alpha traced: one compile
  for alpha in (0.0, 0.5, 0.8):
    np.testing.assert_allclose(fn(z, t, alpha=alpha), _np_sce(z, t, alpha),
                               rtol=1e-5, atol=1e-5)


def test_symmetric_ce_is_the_rmt_form():
  # (Finite-difference gradients: test_robust_specs.py.)
  z = jax.random.normal(jax.random.key(2), (4, 5))
  t = jax.random.normal(jax.random.key(3), (4, 5))
  # alpha=0.5 is the RMT loss: 0.5 * (CE(q -> p) + CE(p -> q)).
  want = 0.5 * (optax.softmax_cross_entropy(z, jax.nn.softmax(t))
                + optax.softmax_cross_entropy(t, jax.nn.softmax(z)))
  np.testing.assert_allclose(
      jax.jit(losses.symmetric_cross_entropy)(z, t), want, rtol=1e-5,
      atol=1e-6)


def test_where_bf16_and_extreme_inputs():
  z = jnp.array([[1e4, -1e4, 0.0], [3.0, 1.0, -2.0]], jnp.bfloat16)
  y = jnp.array([1, 0])
  where = jnp.array([True, False])
  out = jax.jit(lambda z: losses.label_smoothed_cross_entropy(
      z, y, smoothing=0.1, where=where))(z)
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
  assert out[1] == 0
  g = jax.jit(jax.grad(lambda z: losses.label_smoothed_cross_entropy(
      z, y, where=where).sum()))(z.astype(jnp.float32))
  assert bool(jnp.all(g[1] == 0)) and bool(jnp.all(jnp.isfinite(g)))
  s = jax.jit(losses.symmetric_cross_entropy)(z, -z)
  assert s.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(s)))


def test_bad_inputs_raise_naming_the_argument():
  z, y = jnp.zeros((3, 4)), jnp.array([0, 1, 2])
  with pytest.raises(TypeError, match="`labels`"):
    losses.label_smoothed_cross_entropy(z, y.astype(jnp.float32))
  with pytest.raises(ValueError, match="`labels`"):
    losses.label_smoothed_cross_entropy(z, jnp.array([0, 1]))
  with pytest.raises(ValueError, match="`smoothing`"):
    losses.label_smoothed_cross_entropy(z, y, smoothing=1.5)
  with pytest.raises(ValueError, match="`teacher_logits`"):
    losses.symmetric_cross_entropy(z, jnp.zeros((3, 5)))
  with pytest.raises(ValueError, match="`alpha`"):
    losses.symmetric_cross_entropy(z, z, alpha=-0.1)
  with pytest.raises(TypeError, match="`teacher_logits`"):
    losses.symmetric_cross_entropy(z, y)


def _np_label_sce_authors(z, y, alpha, beta, label_floor):
  """The authors' Keras formula per example, in float64 numpy.

  ``alpha * -sum(y_true * log(clip(p, 1e-7, 1)))
  + beta * -sum(p * log(clip(y_true, label_floor, 1)))``.
  """
  p = np.exp(_np_log_softmax(z))
  q = np.eye(z.shape[-1])[y]
  ce = -np.sum(q * np.log(np.clip(p, 1e-7, 1.0)), axis=-1)
  rce = -np.sum(p * np.log(np.clip(q, label_floor, 1.0)), axis=-1)
  return alpha * ce + beta * rce


@pytest.mark.parametrize("alpha,beta,log_zero", [
    (0.1, 1.0, -4.0), (0.01, 1.0, -4.0), (6.0, 0.1, float(np.log(1e-4))),
    (1.0, 0.0, -4.0)])
def test_symmetric_label_ce_matches_authors_formula(alpha, beta, log_zero):
  k1, k2 = jax.random.split(jax.random.key(2))
  z = jax.random.normal(k1, (7, 5)) * 2  # p >= 1e-7: the CE clip is inactive
  y = jax.random.randint(k2, (7,), 0, 5)
  fn = jax.jit(lambda z, y: losses.symmetric_label_cross_entropy(
      z, y, alpha=alpha, beta=beta, log_zero=log_zero))
  want = _np_label_sce_authors(np.asarray(z), np.asarray(y), alpha, beta,
                               np.exp(log_zero))
  np.testing.assert_allclose(fn(z, y), want, rtol=1e-5, atol=1e-5)


def test_symmetric_label_ce_reverse_term_is_bounded_and_symmetric():
  # RCE alone: sum over all K labels of -A (1 - p_k) = -A (K - 1), constant
  # (the symmetry condition of Ghosh et al. 2017), for any logits.
  z = jax.random.normal(jax.random.key(3), (4, 6)) * 5
  fn = jax.jit(lambda z, y: losses.symmetric_label_cross_entropy(
      z, y, alpha=0.0, beta=1.0, log_zero=-4.0))
  total = sum(fn(z, jnp.full((4,), k)) for k in range(6))
  np.testing.assert_allclose(total, 4.0 * 5, rtol=1e-5)


def test_symmetric_label_ce_rejects_nonnegative_log_zero():
  with pytest.raises(ValueError, match="log_zero"):
    losses.symmetric_label_cross_entropy(jnp.zeros((2, 3)), jnp.array([0, 1]),
                                         log_zero=0.0)
