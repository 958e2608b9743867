"""Shared helpers for the linear cross-entropy kernel tests.

* ``make_inputs``: random (x, w, labels, bias, class_weights) with a share of
  ignored labels and a few rows whose softmax is peaked (as CCE's tests:
  some rows of ``x`` copy rows of ``w``).
* ``numpy_rows``: an independent float64 brute-force formula (scipy
  logsumexp on materialized logits), written without the library's helpers.
* ``evaluate``: loss, lse and the VJP of (x, w, bias) for random cotangents,
  everything under ``jax.jit``.
* ``assert_close_scaled``: bf16 tolerances scaled by sqrt(reduction length).
* ``bad_inputs`` / ``assert_bad_rows``: NaN in, NaN out and out-of-range
  labels under jit, the behaviour every implementation must share.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import logsumexp

from diversity_jax.kernels import linear_cross_entropy

IGNORE = -100


def make_inputs(n, d, v, *, seed=0, dtype=jnp.float32, ignore_frac=0.2,
                scale=1.0, batch=None):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)) / np.sqrt(d) * 3.0
  w = rng.standard_normal((v, d))
  m = min(n, v) // 3
  x[:m] = w[:m] * 0.5                    # peaked rows: p(target) close to 1
  labels = rng.integers(0, v, (n,))
  labels[:m] = np.arange(m)
  labels[rng.random(n) < ignore_frac] = IGNORE
  bias = rng.standard_normal((v,)) * 0.5
  cw = rng.uniform(0.5, 1.5, (v,))
  x = x * scale
  if batch is not None:
    x = x.reshape(batch + (d,))
    labels = labels.reshape(batch)
  cast = lambda a: jnp.asarray(a, dtype)
  return (cast(x), cast(w), jnp.asarray(labels, jnp.int32), cast(bias),
          jnp.asarray(cw, jnp.float32))


def numpy_rows(x, w, labels, *, bias=None, class_weights=None,
               label_smoothing=0.0, log_partition_penalty=0.0, softcap=None,
               ignore_index=IGNORE):
  """Float64 per-row (loss, lse), PyTorch cross_entropy semantics + z-loss."""
  x = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
  w = np.asarray(w, np.float64)
  y = np.asarray(labels).reshape(-1)
  z = x @ w.T
  if bias is not None:
    z = z + np.asarray(bias, np.float64)
  if softcap is not None:
    z = softcap * np.tanh(z / softcap)
  lse = logsumexp(z, axis=1)
  logp = z - lse[:, None]
  v = w.shape[0]
  k = np.ones(v) if class_weights is None else np.asarray(class_weights, np.float64)
  keep = y != ignore_index
  ys = np.where(keep, y, 0)
  nll = -logp[np.arange(len(y)), ys] * k[ys]
  smooth = -(logp * k[None, :]).sum(1) / v
  loss = (1 - label_smoothing) * nll + label_smoothing * smooth
  loss = loss + log_partition_penalty * lse ** 2
  loss = np.where(keep, loss, 0.0)
  denom = (k[ys] * keep).sum()
  return loss, lse, denom


def numpy_loss(x, w, labels, reduction="mean", **kw):
  loss, lse, denom = numpy_rows(x, w, labels, **kw)
  if reduction == "none":
    return loss.reshape(np.shape(labels)), lse
  total = loss.sum()
  if reduction == "mean":
    total = total / denom if denom > 0 else 0.0
  return total, lse


def cotangents(labels, reduction, seed=1, lse_cotangent=True):
  """Fixed random (loss, lse) cotangents as float32 numpy arrays."""
  rng = np.random.default_rng(seed)
  shape = np.shape(labels)
  ct_loss = rng.standard_normal(shape if reduction == "none" else ())
  ct_lse = rng.standard_normal(shape) * 0.3 * float(lse_cotangent)
  return ct_loss.astype(np.float32), ct_lse.astype(np.float32)


@functools.partial(jax.jit, static_argnames=("kw", "lse_output"))
def _evaluate(x, w, labels, bias, class_weights, ct_loss, ct_lse, kw,
              lse_output):
  def f(x, w, bias, return_lse=lse_output):
    return linear_cross_entropy(x, w, labels, bias=bias,
                                class_weights=class_weights,
                                return_lse=return_lse, **dict(kw))
  if lse_output:
    (loss, lse), vjp = jax.vjp(f, x, w, bias)
    return (loss, lse) + tuple(vjp((ct_loss, ct_lse)))
  loss, vjp = jax.vjp(f, x, w, bias)
  _, lse = f(x, w, bias, return_lse=True)
  return (loss, lse) + tuple(vjp(ct_loss))


def evaluate(x, w, labels, *, bias=None, class_weights=None, seed=1,
             lse_cotangent=True, lse_output=True, **kw):
  """(loss, lse, dx, dw, dbias) under jit for ``cotangents(...)``.

  ``lse_output=False`` (needs ``lse_cotangent=False``): the gradients come
  from a call without ``return_lse`` (the ``fused_backward`` path applies
  only there); the lse from a second, forward-only call.
  """
  assert lse_output or not lse_cotangent, (
      "lse_output=False takes no lse cotangent")
  ct = cotangents(labels, kw.get("reduction", "mean"), seed, lse_cotangent)
  return _evaluate(x, w, labels, bias, class_weights, *ct,
                   tuple(sorted(kw.items())), lse_output)


def numpy_evaluate(x, w, labels, *, bias=None, class_weights=None, seed=1,
                   lse_cotangent=True, reduction="mean", label_smoothing=0.0,
                   log_partition_penalty=0.0, softcap=None,
                   ignore_index=IGNORE, cotangent=None, **unused):
  """Float64 brute force of ``evaluate``: materialized logits, dL/ds by hand.

  dL_i/ds_ij = (1-a) k_y (p_ij - [j=y]) + (a/V) (K p_ij - k_j)
               + 2 lam lse_i p_ij  (+ h_i p_ij for the lse cotangent h),
  times 1 - tanh^2 for the soft-cap; dx = G w, dw = G^T x, db = sum_i G.
  """
  if cotangent is None:
    cotangent = cotangents(labels, reduction, seed, lse_cotangent)
  ct_loss, ct_lse = (np.asarray(c, np.float64) for c in cotangent)
  shape = np.shape(labels)
  x2 = np.asarray(x, np.float64).reshape(-1, np.shape(x)[-1])
  w64 = np.asarray(w, np.float64)
  y = np.asarray(labels).reshape(-1)
  n, v = len(y), w64.shape[0]
  z = x2 @ w64.T
  if bias is not None:
    z = z + np.asarray(bias, np.float64)
  s = z if softcap is None else softcap * np.tanh(z / softcap)
  lse = logsumexp(s, axis=1) if v else np.zeros(n)
  p = np.exp(s - lse[:, None])
  k = (np.ones(v) if class_weights is None
       else np.asarray(class_weights, np.float64))
  keep = y != ignore_index
  ys = np.where(keep, y, 0)
  rows = np.arange(n)
  a, lam = label_smoothing, log_partition_penalty
  loss_rows = ((1 - a) * k[ys] * (lse - s[rows, ys])
               + (a / v) * (k.sum() * lse - s @ k) + lam * lse ** 2)
  loss_rows = np.where(keep, loss_rows, 0.0)
  denom = (k[ys] * keep).sum()
  if reduction == "none":
    loss = loss_rows.reshape(shape)
    g = ct_loss.reshape(-1).astype(np.float64)
  else:
    loss = loss_rows.sum()
    g = np.full(n, float(ct_loss))
    if reduction == "mean":
      loss = loss / denom if denom > 0 else 0.0
      g = g / denom if denom > 0 else 0.0 * g
  g = g * keep
  onehot = np.zeros((n, v))
  onehot[rows, ys] = 1.0
  dlds = ((1 - a) * k[ys][:, None] * (p - onehot)
          + (a / v) * (k.sum() * p - k[None, :])
          + 2 * lam * lse[:, None] * p)
  dlds = g[:, None] * dlds + ct_lse.reshape(-1).astype(np.float64)[:, None] * p
  if softcap is not None:
    dlds = dlds * (1 - np.tanh(z / softcap) ** 2)
  dx = (dlds @ w64).reshape(np.shape(x))
  dw = dlds.T @ x2
  db = None if bias is None else dlds.sum(0)
  return loss, lse.reshape(shape), dx, dw, db


def assert_tree_close(got, want, rtol, atol, names=("loss", "lse", "dx", "dw",
                                                     "db")):
  for name, g, e in zip(names, got, want):
    if e is None:
      assert g is None, name
      continue
    g = np.asarray(g, np.float64)
    e = np.asarray(e, np.float64)
    assert g.shape == e.shape, (name, g.shape, e.shape)
    assert np.all(np.isfinite(g)), f"{name} has non-finite values"
    np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=name)


def has_platform(platform: str) -> bool:
  """Whether JAX sees a ``platform`` ('gpu', 'tpu') device here."""
  try:
    return bool(jax.devices(platform))
  except RuntimeError:
    return False


def bf16_tolerance(reduction_length: int, scale: float) -> float:
  """Absolute tolerance ~ bf16 eps * sqrt(K) * magnitude."""
  return 2.0 ** -8 * np.sqrt(reduction_length) * scale


# Rows of ``bad_inputs``: 0 holds a NaN in x, 1 and 2 out-of-range labels
# (V + 3 and -1: no wrap-around), 3 is ignored (not bad).
BAD_ROWS = (0, 1, 2)


def bad_inputs(n, d, v, *, seed=0, batch=None):
  """``make_inputs`` with ``BAD_ROWS`` made bad, and the "clean" labels and
  ``x`` a brute force of the other rows can use (bad rows ignored, x row 0
  zeroed): ``(x, w, labels, bias, cw, x_clean, labels_clean)``."""
  x, w, y, bias, cw = make_inputs(n, d, v, seed=seed, ignore_frac=0.0)
  y = np.asarray(y).copy()
  y[1], y[2], y[3] = v + 3, -1, IGNORE
  clean = y.copy()
  clean[list(BAD_ROWS)] = IGNORE
  x_clean = np.asarray(x).copy()
  x_clean[0] = 0.0
  x_bad = np.asarray(x).copy()
  x_bad[0, 0] = np.nan
  shape = (n,) if batch is None else batch
  cast = lambda a, dt: jnp.asarray(a, dt).reshape(shape + a.shape[1:])
  return (cast(x_bad, x.dtype), w, cast(y, jnp.int32), bias, cw,
          cast(x_clean, x.dtype), cast(clean, jnp.int32))


def assert_bad_rows(got, want_clean, rtol, atol):
  """``got`` = ``evaluate(..., reduction='none')`` on ``bad_inputs``;
  ``want_clean`` the same on its clean arrays (a brute force). The bad rows'
  loss and ``dX`` rows are NaN, ``dW`` / ``db`` all NaN (they sum over
  rows: no filter may skip a NaN), every other row as the brute force."""
  loss, lse, dx, dw, db = (None if a is None else np.asarray(a, np.float64)
                           for a in got)
  w_loss, w_lse, w_dx = (np.asarray(a, np.float64) for a in want_clean[:3])
  bad = np.zeros(loss.size, bool)
  bad[list(BAD_ROWS)] = True
  loss, lse, w_loss, w_lse = (a.reshape(-1) for a in (loss, lse, w_loss, w_lse))
  dx, w_dx = dx.reshape(bad.size, -1), w_dx.reshape(bad.size, -1)
  assert np.all(np.isnan(loss[bad])), loss
  np.testing.assert_allclose(loss[~bad], w_loss[~bad], rtol=rtol, atol=atol)
  assert np.isnan(lse[0])                      # lse needs no label
  np.testing.assert_allclose(lse[1:], w_lse[1:], rtol=rtol, atol=atol)
  assert np.all(np.isnan(dx[bad])), "finite dX row of a bad row"
  np.testing.assert_allclose(dx[~bad], w_dx[~bad], rtol=rtol, atol=atol)
  for name, g in (("dw", dw), ("db", db)):
    assert g is None or np.all(np.isnan(g)), f"{name} not all NaN"

