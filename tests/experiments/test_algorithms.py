"""DomainBed's optimizer reset at the end of a penalty warm-up.

``algorithms.reset_optimizer_at`` against a brute-force numpy Adam that is
re-created (zero moments, step 0) at the anneal step, as DomainBed's
``IRM.update`` / ``VREx.update`` / ``Fishr.update`` do with
``torch.optim.Adam``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import algorithms
from experiments.studies import dg_recipe


class _NumpyAdam:
  """torch.optim.Adam's update (no weight decay), float64."""

  def __init__(self, lr, b1=0.9, b2=0.999, eps=1e-8):
    self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
    self.t, self.m, self.v = 0, 0.0, 0.0

  def update(self, g):
    self.t += 1
    self.m = self.b1 * self.m + (1 - self.b1) * g
    self.v = self.b2 * self.v + (1 - self.b2) * g * g
    m_hat = self.m / (1 - self.b1 ** self.t)
    v_hat = self.v / (1 - self.b2 ** self.t)
    return -self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


def _grads(n, seed=0):
  rng = np.random.RandomState(seed)
  # A jump in gradient magnitude at the anneal step (what DomainBed resets for).
  return [{"w": (rng.randn(3, 2) * (1 if t < 3 else 100)).astype(np.float32)}
          for t in range(n)]


def _run(tx, grads, params):
  traces = []

  @jax.jit
  def step(state, g):
    traces.append(1)
    return tx.update(g, state, params)

  state, updates, states = tx.init(params), [], []
  for g in grads:
    u, state = step(state, g)
    updates.append(u)
    states.append(state)
  return updates, states, len(traces)


@pytest.mark.parametrize("reset_step", [0, 3])
def test_reset_matches_domainbed_fresh_adam(reset_step):
  lr = 1e-2
  params = {"w": jnp.zeros((3, 2))}
  grads = _grads(6)
  tx = algorithms.reset_optimizer_at(optax.adam(lr), reset_step)
  updates, states, traces = _run(tx, grads, params)
  assert traces == 1  # one compile: the reset is a traced select, no retrace
  ref = _NumpyAdam(lr)
  for t, g in enumerate(grads):
    if t == reset_step:
      ref = _NumpyAdam(lr)  # DomainBed: self.optimizer = torch.optim.Adam(...)
    np.testing.assert_allclose(updates[t]["w"], ref.update(g["w"].astype(
        np.float64)), rtol=2e-5, atol=1e-9, err_msg=f"update {t}")
  # Right after the anneal step the state is a fresh Adam's after one update:
  # moments of that step's gradient only, count 1 (bias correction restarts).
  inner = optax.adam(lr)
  _, fresh_after_one = inner.update(grads[reset_step], inner.init(params),
                                    params)
  jax.tree.map(np.testing.assert_array_equal, states[reset_step].inner_state,
               fresh_after_one)
  assert int(states[reset_step].count) == reset_step + 1
  (adam_state, *_) = states[-1].inner_state
  assert int(adam_state.count) == len(grads) - reset_step


def test_reset_changes_updates_after_the_jump():
  # Without the reset, Adam's second moment remembers the small gradients:
  # the first post-jump update is much larger than the reset one (a test of
  # the test: the two runs must differ).
  params = {"w": jnp.zeros((3, 2))}
  grads = _grads(5)
  plain, _, _ = _run(optax.adam(1e-2), grads, params)
  reset, _, _ = _run(algorithms.reset_optimizer_at(optax.adam(1e-2), 3),
                     grads, params)
  for t in range(3):
    np.testing.assert_array_equal(plain[t]["w"], reset[t]["w"])
  assert not np.allclose(plain[3]["w"], reset[3]["w"], rtol=1e-3)


def test_reset_passes_extra_args_and_validates():
  tx = optax.chain(algorithms.reset_optimizer_at(optax.sgd(0.1, 0.9), 1))
  params = {"w": jnp.ones(2)}
  state = tx.init(params)
  u, state = tx.update({"w": jnp.ones(2)}, state, params, loss_fn=None,
                       batch=None, key=None)
  np.testing.assert_allclose(u["w"], -0.1 * np.ones(2), rtol=1e-6)
  for bad in (-1, 1.5, True):
    with pytest.raises(ValueError, match="`reset_step` must be an int >= 0"):
      algorithms.reset_optimizer_at(optax.adam(1e-3), bad)


def test_trainer_resets_only_after_a_warmup(smoke_config):
  def kind(algorithm, anneal=None, reset=True):
    c = smoke_config
    c.algorithm = algorithm
    c.reset_optimizer_at_anneal = reset
    if anneal is not None:
      c.hparams[algorithm].anneal_steps = anneal
    _, steps, _ = algorithms.penalty_schedule(
        algorithms.ALGORITHMS[algorithm], algorithms.hparams_of(c))
    state = dg_recipe.make_optimizer(c, steps).init({"w": jnp.zeros(2)})
    return isinstance(state, algorithms.ResetState)

  assert kind("irm", 5) and kind("vrex", 5) and kind("fishr", 5)
  assert not kind("irm", 0)          # no warm-up: nothing to reset
  assert not kind("fishr", 5, False)  # opted out
  assert not kind("erm") and not kind("coral") and not kind("sam")
