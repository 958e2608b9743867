"""Per-example head gradients (Fishr's input) against the closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import penalties


def test_head_per_example_grads_closed_form():
  rng = np.random.RandomState(0)
  e, b, f, k = 2, 3, 4, 5
  feats = rng.randn(e, b, f).astype(np.float32)
  labels = rng.randint(0, k, (e, b)).astype(np.int32)
  head = {"kernel": rng.randn(f, k).astype(np.float32),
          "bias": rng.randn(k).astype(np.float32)}
  got = jax.jit(lambda h, x, y: penalties._head_per_example_grads(
      h, x, y, optax.softmax_cross_entropy_with_integer_labels))(
          head, feats, labels)
  # Cross-entropy: d/dlogits = softmax - onehot; dW = f (x) (p - y), db = p - y.
  logits = feats @ head["kernel"] + head["bias"]
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  d = p - np.eye(k)[labels]
  want = np.concatenate(
      [(feats[..., :, None] * d[..., None, :]).reshape(e, b, f * k), d], -1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------- Fishr EMA (DomainBed) ----
def _ce_head_grads_numpy(feats, labels, head):
  """Closed-form per-example CE gradients of a linear head, float64."""
  feats = feats.astype(np.float64)
  logits = feats @ head["kernel"].astype(np.float64) + head["bias"]
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  d = p - np.eye(logits.shape[-1])[labels]
  e, b, f = feats.shape
  return np.concatenate(
      [(feats[..., :, None] * d[..., None, :]).reshape(e, b, -1), d], -1)


class _DomainBedFishrNumpy:
  """DomainBed's Fishr penalty with one ``MovingAverage`` per domain, in numpy.

  Written from ``domainbed/lib/misc.py::MovingAverage`` (ema_data starts from
  zeros on the first update; the returned value is divided by 1 - ema) and
  ``Fishr._get_grads_var_per_domain`` / ``_compute_distance_grads_var``.
  """

  def __init__(self, num_domains, ema):
    self.ema, self.updates = ema, 0
    self.ema_data = [None] * num_domains

  def penalty(self, grads):  # grads (E, B, P)
    values = []
    for e, g in enumerate(grads):
      var = ((g - g.mean(axis=0, keepdims=True)) ** 2).mean(axis=0)
      prev = np.zeros_like(var) if self.updates == 0 else self.ema_data[e]
      new = self.ema * prev + (1 - self.ema) * var
      values.append(new / (1 - self.ema))
      self.ema_data[e] = new
    self.updates += 1
    mean = np.mean(values, axis=0)
    return sum(np.mean((v - mean) ** 2) for v in values) / len(values)


def test_fishr_ema_matches_domainbed_over_three_steps():
  rng = np.random.RandomState(1)
  e, b, f, k, ema = 3, 5, 4, 3, 0.95
  head = {"kernel": rng.randn(f, k).astype(np.float32),
          "bias": rng.randn(k).astype(np.float32)}

  @jax.jit
  def step(state, feats, labels):
    return penalties.fishr(
        penalties.Inputs(None, labels, None, feats, head,
                         optax.softmax_cross_entropy_with_integer_labels),
        state, ema=ema)

  state = penalties.fishr_init(num_domains=e, head_params=head)
  assert state.ema.shape == (e, f * k + k)
  ref = _DomainBedFishrNumpy(e, ema)
  got_values, want_values = [], []
  for t in range(3):
    # Different scales per step so the EMA weights matter.
    feats = (rng.randn(e, b, f) * (1 + t)).astype(np.float32)
    labels = rng.randint(0, k, (e, b)).astype(np.int32)
    value, state = step(state, feats, labels)
    want = ref.penalty(_ce_head_grads_numpy(feats, labels, head))
    got_values.append(float(value))
    want_values.append(want)
    np.testing.assert_allclose(
        np.asarray(state.ema), np.stack(ref.ema_data), rtol=1e-5, atol=1e-8)
    if t == 0:  # first update: the EMA'd penalty is the stateless one
      stateless, unchanged = step((), feats, labels)
      np.testing.assert_allclose(float(value), float(stateless), rtol=1e-5)
      assert unchanged == ()
  np.testing.assert_allclose(got_values, want_values, rtol=1e-4)
  # The EMA changes the value after the first step (a test that can fail).
  assert abs(got_values[2] - float(step((), feats, labels)[0])) > 1e-3 * abs(
      got_values[2])


def test_moving_average_gradient_is_one_and_state_detached():
  prev = jnp.array([0.3, -1.0, 2.0])
  data = jnp.array([1.0, 2.0, 0.5])
  for ema in (0.0, 0.5, 0.95):
    value, new = jax.jit(penalties.moving_average, static_argnums=2)(
        prev, data, ema)
    np.testing.assert_allclose(new, ema * prev + (1 - ema) * data, rtol=1e-6)
    np.testing.assert_allclose(value, new / (1 - ema), rtol=1e-6)
    # DomainBed detaches the stored average: d value / d data = 1, and no
    # gradient flows into the previous average.
    g_data, g_prev = jax.grad(
        lambda d, p: jnp.sum(penalties.moving_average(p, d, ema)[0]),
        argnums=(0, 1))(data, prev)
    np.testing.assert_allclose(g_data, np.ones(3), rtol=1e-5)
    np.testing.assert_array_equal(g_prev, np.zeros(3))


def test_fishr_ema_state_shape_mismatch_is_clear():
  head = {"kernel": np.zeros((4, 3), np.float32), "bias": np.zeros(3, np.float32)}
  state = penalties.fishr_init(num_domains=2, head_params=head)
  with pytest.raises(ValueError, match=r"Fishr EMA state has shape \(2, 15\)"):
    penalties.fishr(
        penalties.Inputs(None, np.zeros((3, 2), np.int32), None,
                         np.zeros((3, 2, 4), np.float32), head,
                         optax.softmax_cross_entropy_with_integer_labels),
        state, ema=0.95)
