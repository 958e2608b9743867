"""Tests for the shared trace-time validation helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from diversity_jax._src import checks
from diversity_jax._src import numerics


def test_logits_labels_errors_name_the_argument():
  logits = jnp.zeros((4, 3))
  with pytest.raises(TypeError, match="`labels` must have an integer dtype"):
    checks.check_logits_and_labels(logits, jnp.zeros((4,)), "f")
  with pytest.raises(ValueError, match=r"`labels` must have shape \(4,\)"):
    checks.check_logits_and_labels(logits, jnp.zeros((4, 1), jnp.int32), "f")
  with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 3\)"):
    checks.check_logits_and_labels(logits, jnp.array([0, 1, 2, 3]), "f")
  with pytest.raises(TypeError, match="`logits` must have a floating dtype"):
    checks.check_logits_and_labels(jnp.zeros((4, 3), jnp.int32),
                                   jnp.zeros((4,), jnp.int32), "f")


def test_label_range_skipped_under_jit():
  f = jax.jit(lambda l, y: (checks.check_logits_and_labels(l, y, "f"), y)[1])
  np.testing.assert_array_equal(f(jnp.zeros((2, 3)), jnp.array([0, 5])), [0, 5])


def test_scalar_range_messages():
  with pytest.raises(ValueError, match=r"`tau` must lie in \[0, inf\), got -1"):
    checks.check_nonnegative(-1, "tau", "comp_sum")
  with pytest.raises(ValueError, match=r"`q` must lie in \(0, 1\]"):
    checks.check_scalar_in_range(0.0, "q", "f", low=0, high=1,
                                 low_inclusive=False)
  checks.check_scalar_in_range(1.0, "q", "f", low=0, high=1, low_inclusive=False)


def test_where_mask_checks():
  with pytest.raises(TypeError, match="`where` must be a boolean mask"):
    checks.check_where(jnp.ones((3,)), (3,), "f")
  with pytest.raises(ValueError, match="does not broadcast"):
    checks.check_where(jnp.ones((4,), bool), (3,), "f")
  checks.check_where(jnp.ones((1,), bool), (3,), "f")


def test_masked_mean_empty_is_zero_not_nan():
  x = jnp.arange(3.0)
  assert numerics.masked_mean(x, jnp.zeros(3, bool)) == 0.0
  np.testing.assert_allclose(numerics.masked_mean(x, x > 0), 1.5)
  g = jax.grad(lambda x: numerics.masked_mean(x, jnp.zeros(3, bool)))(x)
  assert np.all(np.isfinite(g))


def test_safe_norm_gradient_at_zero_is_finite():
  g = jax.grad(numerics.safe_norm)(jnp.zeros(3))
  np.testing.assert_array_equal(g, np.zeros(3))
  x = jnp.array([3.0, 4.0])
  np.testing.assert_allclose(numerics.safe_norm(x), 5.0)
  np.testing.assert_allclose(jax.grad(numerics.safe_norm)(x), x / 5.0)
  np.testing.assert_allclose(numerics.tree_l2_norm({"a": x, "b": jnp.zeros(2)}),
                             5.0)


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_tree_l2_norm_neither_overflows_nor_underflows(scale):
  """bf16 leaves whose f32 sum of squares is inf (1e60) or 0 (1e-60)."""
  tree = {"a": jnp.array([3.0 * scale], jnp.bfloat16),
          "b": jnp.array([[4.0 * scale]], jnp.bfloat16)}
  a, b = (float(np.asarray(tree[k], np.float64).ravel()[0]) for k in "ab")
  norm = jax.jit(numerics.tree_l2_norm)(tree)
  np.testing.assert_allclose(float(norm), np.hypot(a, b), rtol=1e-6)
  grad = jax.grad(numerics.tree_l2_norm)(
      optax.tree.cast(tree, jnp.float32))
  np.testing.assert_allclose(float(grad["a"][0]), a / np.hypot(a, b),
                             rtol=1e-6)
  assert np.isnan(numerics.tree_l2_norm({"a": jnp.array([1.0, jnp.nan])}))
  assert numerics.tree_l2_norm({"a": jnp.array([1.0, jnp.inf])}) == jnp.inf


def test_safe_divide_and_promote():
  np.testing.assert_array_equal(
      numerics.safe_divide(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0])),
      [0.0, 0.5])
  assert numerics.promote_to_f32(jnp.ones(2, jnp.bfloat16)).dtype == jnp.float32
  assert numerics.promote_to_f32(jnp.ones(2, jnp.int32)).dtype == jnp.int32
