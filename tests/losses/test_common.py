"""Family-wide test of every public loss in ``diversity_jax.losses``.

Specs are gathered from every ``tests/losses/specs_*.py`` (``SPECS`` lists of
``LossSpec``), so adding a spec file needs no edit here. Their names must equal
``losses.__all__`` exactly: a public loss without a spec fails.

For each spec, under ``jax.jit``: output shape / dtype / finiteness; vmap over
an extra leading axis equals a loop; ``check_grads`` (order 1, reverse mode)
on the first argument; the ``where=`` convention; bf16 input computed in f32;
extreme inputs; the smallest batch.
"""

from __future__ import annotations

import collections
import glob
import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from diversity_jax import losses

B = 6  # distinct from the class / feature sizes used by the spec files.
_HERE = os.path.dirname(os.path.abspath(__file__))
# check_grads in f32: a central difference with eps=1e-3 is accurate to
# ~1e-3 relative for smooth losses of O(1) inputs; a wrong gradient is O(1).
_GRAD_DEFAULTS = dict(eps=1e-3, atol=2e-2, rtol=2e-2)


def _load_specs():
  specs = []
  for path in sorted(glob.glob(os.path.join(_HERE, "specs_*.py"))):
    name = os.path.splitext(os.path.basename(path))[0]
    module = importlib.import_module(f"tests.losses.{name}")
    specs.extend(module.SPECS)
  return specs


ALL_SPECS = _load_specs()
SPECS = {s.name: s for s in ALL_SPECS}


def test_specs_cover_exactly_the_public_losses():
  counts = collections.Counter(s.name for s in ALL_SPECS)
  duplicates = sorted(n for n, c in counts.items() if c > 1)
  assert not duplicates, f"specs defined twice: {duplicates}"
  assert len(losses.__all__) == len(set(losses.__all__)), "duplicate __all__"
  public = set(losses.__all__)
  missing = sorted(public - set(SPECS))
  extra = sorted(set(SPECS) - public)
  assert not missing, f"public losses without a LossSpec: {missing}"
  assert not extra, f"LossSpecs of names not in losses.__all__: {extra}"


def _args(spec, batch, dtype=jnp.float32, seed=0):
  return tuple(spec.make_args(jax.random.key(seed), batch, dtype))


def _fn(name):
  return getattr(losses, name)


def _out_shape(spec, batch):
  return (batch,) if spec.per_example else ()


def _finite(x):
  return bool(np.all(np.isfinite(np.asarray(x, np.float64))))


@pytest.mark.parametrize("name", sorted(SPECS))
def test_value_vmap_bf16_extreme_where(name):
  spec, fn = SPECS[name], _fn(name)
  args = _args(spec, B)
  x, rest = args[0], args[1:]
  where = jnp.arange(B) % 3 != 1
  scale = spec.extreme_scale

  def total(z, **kw):
    return jnp.sum(spec(fn, z, *rest, **kw))

  # vmap over an extra leading axis (two independent draws) vs a loop.
  per_call = [_args(spec, B, seed=seed) for seed in (1, 2)]
  stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *per_call)

  @jax.jit
  def run(x, stacked, per_call):
    out = {"out": spec(fn, x, *rest)}
    out["vmap"] = jax.vmap(lambda *a: spec(fn, *a))(*stacked)
    out["loop"] = jnp.stack([spec(fn, *a) for a in per_call])
    x16 = x.astype(jnp.bfloat16)
    out["bf16"] = spec(fn, x16, *rest)
    out["bf16_ref"] = spec(fn, x16.astype(x.dtype), *rest)
    if scale is not None:
      big = x * (scale / jnp.max(jnp.abs(x)))
      out["big"], out["g_big"] = jax.value_and_grad(total)(big)
    if spec.supports_where:
      out["masked"] = spec(fn, x, *rest, where=where)
      out["g_masked"] = jax.grad(lambda z: total(z, where=where))(x)
      out["none"] = spec(fn, x, *rest, where=jnp.zeros((B,), bool))
      out["g_none"] = jax.grad(
          lambda z: total(z, where=jnp.zeros((B,), bool)))(x)
    return out

  r = run(x, stacked, per_call)
  out = r["out"]
  assert out.shape == _out_shape(spec, B), (name, out.shape)
  assert r["vmap"].shape == (2,) + _out_shape(spec, B), name
  np.testing.assert_allclose(r["vmap"], r["loop"], rtol=1e-5, atol=1e-5,
                             err_msg=f"{name}: vmap != loop")
  assert out.dtype == jnp.float32, (name, out.dtype)
  assert _finite(out), name

  # bf16 inputs are computed in f32: same result as the f32 call on the
  # bf16-rounded input (a bf16 computation would be off by ~1e-2).
  assert r["bf16"].dtype == jnp.float32, (name, r["bf16"].dtype)
  np.testing.assert_allclose(r["bf16"], r["bf16_ref"], rtol=1e-4, atol=1e-4,
                             err_msg=f"{name}: bf16 input not computed in f32")

  if scale is not None:
    assert _finite(r["big"]), f"{name}: non-finite value at |x| = {scale}"
    assert _finite(r["g_big"]), f"{name}: non-finite gradient at |x| = {scale}"

  if spec.supports_where:
    keep = np.asarray(where)
    masked, g_masked = np.asarray(r["masked"]), np.asarray(r["g_masked"])
    assert _finite(masked) and _finite(g_masked), name
    assert _finite(r["none"]) and _finite(r["g_none"]), name
    if spec.per_example:
      np.testing.assert_array_equal(masked[~keep], 0.0)
      np.testing.assert_allclose(masked[keep], np.asarray(out)[keep],
                                 rtol=1e-5, atol=1e-6)
      np.testing.assert_array_equal(g_masked[~keep], 0.0)
      np.testing.assert_array_equal(r["none"], 0.0)
      np.testing.assert_array_equal(r["g_none"], 0.0)
    else:
      # Batch-level: `where` drops examples, i.e. equals the kept subset. The
      # batch axis is axis 0 of every array argument with leading size B.
      idx = np.flatnonzero(keep)

      def subset(a):
        if (hasattr(a, "shape") and a.ndim >= 1 and a.shape[0] == B
            and not jnp.issubdtype(a.dtype, jax.dtypes.prng_key)):
          return a[idx]
        return a

      sub = jax.jit(lambda *a: spec(fn, *a))(*[subset(a) for a in args])
      np.testing.assert_allclose(masked, sub, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name}: where != kept subset")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_check_grads(name):
  spec, fn = SPECS[name], _fn(name)
  if spec.skip_reason:
    pytest.skip(spec.skip_reason)
  args = _args(spec, B)
  rest = args[1:]
  f = jax.jit(lambda z: spec(fn, z, *rest))
  check_grads(f, (args[0],), order=1, modes=["rev"],
              **{**_GRAD_DEFAULTS, **spec.check_grads_kwargs})


@pytest.mark.parametrize("name", sorted(SPECS))
def test_smallest_batch(name):
  spec, fn = SPECS[name], _fn(name)
  batch = spec.min_batch
  args = _args(spec, batch)
  rest = args[1:]

  @jax.jit
  def run(z):
    out = spec(fn, z, *rest)
    return (out,) + jax.value_and_grad(
        lambda v: jnp.sum(spec(fn, v, *rest)))(z)

  out, value, grad = run(args[0])
  assert out.shape == _out_shape(spec, batch)
  assert _finite(value) and _finite(grad), name


def _is_int(a):
  return (hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.integer))


def _nan_at_first_entry(x):
  return x.at[(0,) * x.ndim].set(jnp.nan)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_nan_in_gives_nan_out(name):
  """One NaN entry in example 0 of the float input: NaN out, never a
  plausible number. ``nan_scope='example'``: only example 0 is NaN and the
  others keep their values; ``'batch'`` (and batch-level outputs): NaN."""
  spec, fn = SPECS[name], _fn(name)
  args = _args(spec, B)
  rest = args[1:]
  clean, out = jax.jit(lambda z: (spec(fn, z, *rest),
                                  spec(fn, _nan_at_first_entry(z), *rest)))(
                                      args[0])
  clean, out = np.asarray(clean), np.asarray(out)
  if not spec.per_example or spec.nan_scope == "batch":
    assert np.all(np.isnan(out)), (name, out)
    return
  assert np.isnan(out[0]), (name, out)
  np.testing.assert_array_equal(out[1:], clean[1:], err_msg=name)


def test_every_labelled_spec_declares_its_labels():
  for spec in ALL_SPECS:
    ints = [i for i, a in enumerate(_args(spec, B)) if _is_int(a)]
    if ints:
      assert spec.labels in ("classes", "identities"), spec.name
      assert tuple(ints) == spec.label_args, (spec.name, ints)
    else:
      assert spec.labels is None, spec.name


def _bad_labels(args, spec):
  """Example 0 gets label -1 and example 1 a label far above any K."""
  i = spec.label_args[0]
  y = args[i].at[0].set(-1).at[1].set(10**6)
  return args[:i] + (y,) + args[i + 1:]


@pytest.mark.parametrize(
    "name", sorted(n for n, s in SPECS.items() if s.labels == "classes"))
def test_out_of_range_class_labels(name):
  """Under jit an out-of-range label gives NaN for that example (value and
  gradient), the other examples unchanged; dropped by ``where`` it is
  ignored; with concrete labels it raises, naming ``labels``."""
  spec, fn = SPECS[name], _fn(name)
  args = _args(spec, B)
  bad = _bad_labels(args, spec)
  keep = jnp.arange(B) >= 2

  def total(z, a, **kw):
    return jnp.sum(spec(fn, z, *a[1:], **kw))

  @jax.jit
  def run(args, bad):
    out = {"clean": spec(fn, *args), "bad": spec(fn, *bad),
           "masked": spec(fn, *bad, where=keep),
           "clean_masked": spec(fn, *args, where=keep)}
    out["g_clean"] = jax.grad(total)(args[0], args)
    out["g_bad"] = jax.grad(total)(bad[0], bad)
    out["g_masked"] = jax.grad(lambda z: total(z, bad, where=keep))(bad[0])
    return out

  r = jax.tree_util.tree_map(np.asarray, run(args, bad))
  np.testing.assert_allclose(r["masked"], r["clean_masked"], rtol=1e-6,
                             atol=1e-7, err_msg=f"{name}: masked bad labels")
  assert _finite(r["g_masked"]), name
  if not spec.per_example or spec.nan_scope == "batch":
    assert np.all(np.isnan(r["bad"])), (name, r["bad"])
  else:
    assert np.all(np.isnan(r["bad"][:2])), (name, r["bad"])
    np.testing.assert_array_equal(r["bad"][2:], r["clean"][2:], err_msg=name)
    g = r["g_bad"].reshape(B, -1)
    assert np.all(np.isnan(g[:2])), f"{name}: finite gradient of a bad label"
    np.testing.assert_allclose(g[2:], r["g_clean"].reshape(B, -1)[2:],
                               rtol=1e-6, atol=1e-7, err_msg=name)
  with pytest.raises(ValueError, match="`labels`"):
    spec(fn, *bad)


@pytest.mark.parametrize(
    "name", sorted(n for n, s in SPECS.items() if s.labels == "identities"))
def test_identity_labels_accept_any_integer(name):
  """Only label equality matters: an injective relabelling to negative and
  large ids (of every label argument together) gives the same output."""
  spec, fn = SPECS[name], _fn(name)
  args = _args(spec, B)
  moved = tuple(1000 * a - 7 if i in spec.label_args else a
                for i, a in enumerate(args))
  out, relabelled = jax.jit(lambda a, b: (spec(fn, *a), spec(fn, *b)))(
      args, moved)
  np.testing.assert_allclose(relabelled, out, rtol=1e-6, atol=1e-7,
                             err_msg=name)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_empty_batch(name):
  """A batch of 0 examples gives a defined value (an empty per-example
  output, 0 for a batch-level one) or an error naming the argument."""
  spec, fn = SPECS[name], _fn(name)
  args = _args(spec, 0)
  try:
    out = jax.jit(lambda *a: spec(fn, *a))(*args)
  except ValueError as e:
    assert "`" in str(e), (name, str(e))
    return
  if spec.per_example:
    assert out.shape == (0,), (name, out.shape)
  else:
    assert out.shape == () and float(out) == 0.0, (name, out)
