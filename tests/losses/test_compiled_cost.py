"""Compiled cost of value+grad: no more (B, K) passes than the formula needs.

XLA's cost analysis of the jitted value+grad (bytes accessed, transcendental
ops) against optax CE on the same logits: the load-independent columns of
``python -m benchmarks.losses``. A loss that materializes a log-softmax or
softmax array it does not need, or evaluates ``exp`` twice over the same
logits, fails here.
"""

import jax
import jax.numpy as jnp
import optax
import pytest

from diversity_jax import losses

B, K = 16, 128


def _cost(per_example, *args):
  """``(bytes accessed, transcendentals)`` of jitted value+grad in arg 0."""
  fn = jax.jit(jax.value_and_grad(lambda z, *rest: jnp.mean(
      per_example(z, *rest))))
  analysis = fn.lower(*args).compile().cost_analysis()
  return analysis["bytes accessed"], analysis.get("transcendentals", 0.0)


def _inputs():
  k1, k2 = jax.random.split(jax.random.key(0))
  return (jax.random.normal(k1, (B, K)),
          jax.random.randint(k2, (B,), 0, K))


@pytest.mark.parametrize("name", ["comp_sum", "generalized_cross_entropy",
                                  "mean_absolute_error"])
def test_comp_sum_family_costs_one_cross_entropy(name):
  logits, labels = _inputs()
  ce_bytes, ce_transcendentals = _cost(
      optax.softmax_cross_entropy_with_integer_labels, logits, labels)
  num_bytes, transcendentals = _cost(getattr(losses, name), logits, labels)
  # A log-softmax array and its cotangent would add ~1/3 of CE's bytes.
  assert num_bytes <= 1.1 * ce_bytes, (num_bytes, ce_bytes)
  # One exp per logit, plus per-row terms (log, expm1).
  assert transcendentals <= ce_transcendentals + 2 * B


def test_symmetric_cross_entropy_one_exp_pass_per_input():
  logits, _ = _inputs()
  teacher = jnp.flip(logits, axis=0)
  ce_bytes, _ = _cost(
      optax.softmax_cross_entropy_with_integer_labels, logits,
      jnp.zeros((B,), jnp.int32))
  num_bytes, transcendentals = _cost(losses.symmetric_cross_entropy, logits,
                                     teacher)
  assert transcendentals <= 2 * B * K + 2 * B  # exp of z and of t, once each
  # Two inputs: about two CEs of bytes, no softmax arrays on top.
  assert num_bytes <= 2.4 * ce_bytes, (num_bytes, ce_bytes)
