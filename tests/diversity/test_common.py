"""Family-wide checks over every public name of `diversity_jax.diversity`.

Each spec says how to call one public function on tiny random inputs. The test
requires the spec names to equal ``diversity.__all__`` (a forgotten entry
fails), then checks for every function: it runs under ``jax.jit``, returns
finite f32 values, has finite gradients with respect to its first float input
(where differentiable), computes bf16 inputs in f32, and has a docstring with
a formula, an example and references.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import diversity


@dataclasses.dataclass(frozen=True)
class DiversitySpec:
  """How the common test calls one public function.

  make_args: ``key -> tuple`` of positional arguments; the first one is the
    float input that is differentiated and cast to bf16.
  call: ``(fn, *args) -> array or pytree`` (default ``fn(*args, **kwargs)``).
  differentiable: whether the gradient w.r.t. the first argument is meaningful
    (piecewise-constant measures have zero gradient and are still checked to
    be finite).
  tree_output: the function returns a parameter pytree (leaf dtypes kept).
  label_arg: position of the integer class labels (``(B,)``, indexing the
    last axis of the logits; the output's last axis is the batch), if any.
  """

  name: str
  make_args: Callable[[Any], tuple]
  kwargs: dict = dataclasses.field(default_factory=dict)
  call: Optional[Callable[..., Any]] = None
  differentiable: bool = True
  tree_output: bool = False
  label_arg: Optional[int] = None

  def __call__(self, fn, *args):
    if self.call is not None:
      return self.call(fn, *args, **self.kwargs)
    return fn(*args, **self.kwargs)


def _normal(key, shape):
  return jax.random.normal(key, shape, jnp.float32)


def _logits(key):
  return (3.0 * _normal(key, (3, 4, 5)),)


def _logits_labels(key):
  return (3.0 * _normal(key, (3, 4, 5)), jnp.array([0, 1, 4, 2]))


class _TinyNet(nn.Module):

  @nn.compact
  def __call__(self, x, features_only=False):
    h = nn.Dense(6, name="hidden")(x)
    if features_only:
      return h
    return nn.Dense(3, name="out")(nn.relu(h))


_NET = _TinyNet()
_PARAMS = _NET.init(jax.random.PRNGKey(0), jnp.zeros((1, 4)))
_STACKED = jax.tree_util.tree_map(
    lambda *l: jnp.stack(l),
    *[_NET.init(jax.random.PRNGKey(i), jnp.zeros((1, 4))) for i in range(3)])


def _apply(p, x):
  return _NET.apply(p, x)


def _features(p, x):
  return _NET.apply(p, x, features_only=True)


def _call_distill(fn, x):
  xs = jnp.clip(x[::-1] + 0.3, 0.0, 1.0)
  return fn(_features, _PARAMS, x, xs, num_steps=3)


def _call_dverge(fn, xd, labels, **kw):
  return fn(_apply, _STACKED, xd, labels, **kw)


def _call_interpolate(fn, x):
  return fn({"w": x, "b": jnp.ones(3)}, {"w": 2 * x, "b": jnp.zeros(3)},
            alpha=0.3)


def _call_average(fn, x):
  return fn([{"w": x}, {"w": 2 * x}, {"w": -x}], weights=(1.0, 2.0, 1.0))


def _rbf_kernel(key):
  z = _normal(key, (5, 1, 2))
  return jnp.exp(-jnp.sum((z - z.transpose(1, 0, 2)) ** 2, -1))


def _call_keyed(fn, x, **kw):
  return fn(x, jax.random.key(0), **kw)


SPECS = [
    DiversitySpec("balanced_average", lambda k: (_normal(k, (3, 2)),),
                  call=_call_average, tree_output=True),
    DiversitySpec("covariance_decorrelation", lambda k: (_normal(k, (6, 4)),)),
    DiversitySpec("dverge_cross_entropy",
                  lambda k: (jax.random.uniform(k, (3, 4, 4)),
                             jnp.array([0, 1, 2, 1])),
                  call=_call_dverge, differentiable=False, label_arg=1),
    DiversitySpec("ensemble_ambiguity", _logits_labels, label_arg=1),
    DiversitySpec("feature_distillation",
                  lambda k: (jax.random.uniform(k, (4, 4)),),
                  call=_call_distill, differentiable=False),
    DiversitySpec("interpolate_params", lambda k: (_normal(k, (3, 2)),),
                  call=_call_interpolate, tree_output=True),
    DiversitySpec("matrix_nuclear_norm", lambda k: (_normal(k, (2, 5, 3)),)),
    DiversitySpec("negative_entropy", lambda k: (3.0 * _normal(k, (4, 5)),)),
    DiversitySpec("pairwise_disagreement", _logits, differentiable=False),
    DiversitySpec("pairwise_js_divergence", _logits),
    DiversitySpec("pairwise_kl_divergence", _logits),
    DiversitySpec("pego_orthogonality",
                  lambda k: (_normal(k, (3, 4, 5)),
                             _normal(jax.random.fold_in(k, 1), (4, 5)))),
    DiversitySpec("prompt_cosine_diversity", lambda k: (_normal(k, (3, 2, 4)),)),
    DiversitySpec("quality_weighted_vendi_score",
                  lambda k: (_rbf_kernel(k), jax.random.uniform(
                      jax.random.fold_in(k, 1), (5,))),
                  kwargs={"q": 2}),
    DiversitySpec("relative_rke",
                  lambda k: (_normal(k, (5, 3)),
                             _normal(jax.random.fold_in(k, 1), (7, 3))),
                  kwargs={"bandwidth": 1.5}),
    DiversitySpec("rke_mode_count", lambda k: (_normal(k, (6, 3)),),
                  kwargs={"bandwidth": 1.5, "block_size": 4}),
    DiversitySpec("singular_value_energy_regularizer",
                  lambda k: (_normal(k, (2, 4, 3)),), kwargs={"k": 2}),
    DiversitySpec("vendi_score", lambda k: (_rbf_kernel(k),),
                  kwargs={"q": 1.5}),
    DiversitySpec("vendi_score_dual", lambda k: (_normal(k, (6, 3)),),
                  kwargs={"q": 2}),
    DiversitySpec("vendi_score_from_features", lambda k: (_normal(k, (6, 3)),)),
    DiversitySpec("vendi_score_nystrom", lambda k: (_normal(k, (6, 3)),),
                  call=_call_keyed,
                  kwargs={"bandwidth": 1.5, "num_landmarks": 4,
                          "block_size": 4}),
    DiversitySpec("vendi_score_rff", lambda k: (_normal(k, (6, 3)),),
                  call=_call_keyed,
                  kwargs={"bandwidth": 1.5, "num_features": 8,
                          "block_size": 4}),
]

_BY_NAME = {s.name: s for s in SPECS}


def test_specs_cover_public_api():
  assert sorted(_BY_NAME) == sorted(diversity.__all__)
  assert len(_BY_NAME) == len(SPECS)


@pytest.mark.parametrize("name", sorted(_BY_NAME))
def test_gradient_finite(name):
  spec, fn = _BY_NAME[name], getattr(diversity, name)
  args = spec.make_args(jax.random.PRNGKey(2))

  def scalar(x):
    out = spec(fn, x, *args[1:])
    return sum(jnp.sum(l) for l in jax.tree_util.tree_leaves(out))

  grad = jax.jit(jax.grad(scalar))(args[0])
  assert np.all(np.isfinite(np.asarray(grad)))
  if spec.differentiable:
    assert np.any(np.asarray(grad) != 0)


@pytest.mark.parametrize("name", sorted(_BY_NAME))
def test_jit_finite_f32_and_bf16(name):
  """Under jit: finite f32 outputs; bf16 inputs give the f32 result."""
  spec, fn = _BY_NAME[name], getattr(diversity, name)
  args = spec.make_args(jax.random.PRNGKey(3))
  x16 = args[0].astype(jnp.bfloat16)
  run = jax.jit(lambda x: spec(fn, x, *args[1:]))
  out16 = run(x16)
  out32 = run(x16.astype(jnp.float32))
  for b in jax.tree_util.tree_leaves(out32):
    assert b.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(b)))
  for a, b in zip(jax.tree_util.tree_leaves(out16),
                  jax.tree_util.tree_leaves(out32)):
    if spec.tree_output:
      assert a.dtype in (jnp.bfloat16, jnp.float32)  # leaf dtypes are kept
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b),
                                 rtol=1e-2, atol=1e-2)
    else:
      assert a.dtype == jnp.float32 or name == "feature_distillation"
      np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b),
                                 rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("name", sorted(_BY_NAME))
def test_docstring(name):
  doc = getattr(diversity, name).__doc__
  assert doc and doc.strip().splitlines()[0].strip()
  for section in ("Args:", "Returns:", "Example:", "References:", "math::"):
    assert section in doc, f"{name} docstring lacks {section}"
  refs = doc.split("References:")[1]
  assert re.search(r"(19|20)\d\d", refs), f"{name}: no paper year in references"


@pytest.mark.parametrize("name", sorted(_BY_NAME))
def test_nan_in_gives_nan_out(name):
  """A NaN entry in the first input gives NaN, never a plausible number."""
  spec, fn = _BY_NAME[name], getattr(diversity, name)
  args = spec.make_args(jax.random.PRNGKey(4))
  x = args[0].at[(0,) * args[0].ndim].set(jnp.nan)
  out = jax.jit(lambda z: spec(fn, z, *args[1:]))(x)
  leaves = [np.asarray(l, np.float32) for l in jax.tree_util.tree_leaves(out)]
  assert any(np.any(np.isnan(l)) for l in leaves), (name, leaves)


def test_every_labelled_spec_declares_its_labels():
  for spec in SPECS:
    args = spec.make_args(jax.random.PRNGKey(0))
    ints = [i for i, a in enumerate(args)
            if jnp.issubdtype(jnp.result_type(a), jnp.integer)]
    assert ints == ([] if spec.label_arg is None else [spec.label_arg]), (
        spec.name)


@pytest.mark.parametrize(
    "name", sorted(n for n, s in _BY_NAME.items() if s.label_arg is not None))
def test_out_of_range_labels(name):
  """Under jit an out-of-range label gives NaN for that example (the others
  unchanged), nothing when dropped by ``where``; concrete, it raises."""
  spec, fn = _BY_NAME[name], getattr(diversity, name)
  args = spec.make_args(jax.random.PRNGKey(5))
  i = spec.label_arg
  bad = args[:i] + (args[i].at[0].set(-1).at[1].set(10**6),) + args[i + 1:]
  keep = jnp.arange(args[i].shape[0]) >= 2
  call = spec.call or (lambda f, *a, **kw: f(*a, **kw))
  masked = lambda a: call(fn, *a, where=keep, **spec.kwargs)
  run = jax.jit(lambda a, b: (spec(fn, *a), spec(fn, *b), masked(a),
                              masked(b)))
  clean, out, clean_m, out_m = (np.asarray(o) for o in run(args, bad))
  assert np.all(np.isnan(out[..., :2])), (name, out)
  np.testing.assert_array_equal(out[..., 2:], clean[..., 2:])
  np.testing.assert_array_equal(out_m, clean_m)
  with pytest.raises(ValueError, match="`labels`"):
    spec(fn, *bad)

