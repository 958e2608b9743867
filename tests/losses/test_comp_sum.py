"""comp_sum / generalized_cross_entropy / mean_absolute_error vs references.

References: optax CE (tau = 1); the authors' LDR repository's GCELoss (golden
values in tests/golden/ldr_kl.npz, see make_ldr_kl.py); and a brute-force
float64 numpy port of Phi^tau(u) written from the paper's definition
(u = sum_{y' != y} exp(h_y' - h_y)), independent of the log-softmax code.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diversity_jax import losses

GOLDEN = np.load(__file__.rsplit("/tests/", 1)[0] + "/tests/golden/ldr_kl.npz")


def _brute_phi(logits, labels, tau):
  logits = np.asarray(logits, np.float64)
  h_y = logits[np.arange(len(labels)), labels]
  gaps = np.exp(logits - h_y[:, None])
  u = gaps.sum(-1) - 1.0  # drop the y' = y term (exp 0 = 1)
  if tau == 1.0:
    return np.log1p(u)
  return ((1.0 + u) ** (1.0 - tau) - 1.0) / (1.0 - tau)


def _data(b=7, k=4, seed=0):
  rng = np.random.default_rng(seed)
  return (2.0 * rng.standard_normal((b, k))).astype(np.float32), \
      rng.integers(0, k, b).astype(np.int32)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 1.3, 1.7, 2.0, 3.0])
def test_comp_sum_matches_brute_force(tau):
  logits, labels = _data()
  got = jax.jit(lambda x, y: losses.comp_sum(x, y, tau=tau))(logits, labels)
  np.testing.assert_allclose(got, _brute_phi(logits, labels, tau), rtol=2e-5,
                             atol=1e-6)


def test_named_members_closed_forms():
  logits, labels = _data()
  z = np.exp(logits.astype(np.float64))
  p = (z / z.sum(-1, keepdims=True))[np.arange(7), labels]
  comp = jax.jit(losses.comp_sum, static_argnames="tau")
  # tau = 1: optax softmax CE.
  np.testing.assert_allclose(
      comp(logits, labels, tau=1.0),
      optax.softmax_cross_entropy_with_integer_labels(logits, labels),
      rtol=1e-6, atol=1e-6)
  # tau = 0: sum-exponential u = 1/p - 1; tau = 2: 1 - p; tau = 3.
  np.testing.assert_allclose(comp(logits, labels, tau=0.0), 1 / p - 1,
                             rtol=1e-5)
  np.testing.assert_allclose(
      jax.jit(losses.mean_absolute_error)(logits, labels), 1 - p, rtol=1e-5,
      atol=1e-6)
  np.testing.assert_allclose(comp(logits, labels, tau=3.0),
                             (1 - p ** 2) / 2, rtol=1e-5, atol=1e-6)
  gce = jax.jit(losses.generalized_cross_entropy, static_argnames="q")
  np.testing.assert_allclose(gce(logits, labels, q=0.7),
                             comp(logits, labels, tau=1.7), rtol=1e-6)


@pytest.mark.parametrize("q", [0.3, 0.7])
def test_gce_matches_authors_code(q):
  got = jax.jit(lambda x, y: losses.generalized_cross_entropy(x, y, q=q))(
      GOLDEN["logits1"], GOLDEN["labels"])
  np.testing.assert_allclose(got, GOLDEN[f"gce_q{q}"], rtol=1e-5, atol=1e-6)


def test_tau_near_one_is_continuous():
  logits, labels = _data()
  f = jax.jit(losses.comp_sum, static_argnames="tau")
  ce = f(logits, labels, tau=1.0)
  for t in (1.0 - 1e-4, 1.0 + 1e-4):
    np.testing.assert_allclose(f(logits, labels, tau=t), ce, rtol=1e-3)


@pytest.mark.parametrize("tau", [0.0, 1.0, 2.0, 5.0])
def test_extreme_logits_value_and_gradient(tau):
  logits = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], jnp.float32)
  labels = jnp.array([1, 0])  # both maximally wrong
  f = jax.jit(jax.value_and_grad(
      lambda x: jnp.sum(losses.comp_sum(x, labels, tau=tau))))
  value, grad = f(logits)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  if tau >= 1.0:  # bounded members saturate at Phi(inf) = 1/(tau - 1)
    expected = 2e4 * 2 if tau == 1.0 else 2.0 / (tau - 1.0)
    np.testing.assert_allclose(value, expected, rtol=1e-3)
  else:  # exponential growth is continued linearly: large, finite, monotone
    assert value > 1e20


def test_traced_tau():
  logits, labels = _data()
  f = jax.jit(lambda t: losses.comp_sum(logits, labels, tau=t))
  for tau in (0.5, 1.0, 1.7):
    np.testing.assert_allclose(f(tau), _brute_phi(logits, labels, tau),
                               rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("fn, kwargs, match", [
    (losses.comp_sum, dict(tau=-0.5), "`tau`"),
    (losses.generalized_cross_entropy, dict(q=0.0), "`q`"),
    (losses.generalized_cross_entropy, dict(q=1.5), "`q`"),
])
def test_bad_hyperparameters(fn, kwargs, match):
  logits, labels = _data()
  with pytest.raises(ValueError, match=match):
    jax.jit(lambda x, y: fn(x, y, **kwargs))(logits, labels)


@pytest.mark.parametrize("fn", [losses.comp_sum,
                                losses.generalized_cross_entropy,
                                losses.mean_absolute_error])
def test_bad_inputs(fn):
  logits, labels = _data()
  j = jax.jit(fn)
  with pytest.raises(ValueError, match="`labels`"):  # mismatched shapes
    j(logits, labels[:-1])
  with pytest.raises(TypeError, match="`labels`"):  # float labels
    j(logits, labels.astype(np.float32))
  with pytest.raises(ValueError, match="`labels`"):  # wrong rank
    j(logits, labels[:, None])
  with pytest.raises(TypeError, match="`logits`"):  # integer logits
    j(labels[:, None], labels)
  with pytest.raises(ValueError, match="`labels` must lie in"):  # eager only
    fn(logits, labels + 10)
  # No class at all: an error about the logits, not "must lie in [0, 0)".
  with pytest.raises(ValueError,
                     match="`logits` must have at least one class"):
    j(logits[:, :0], labels)
