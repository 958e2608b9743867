"""EnsLoss: random calibrated loss-derivatives for binary classification."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def _check_key(key, fn: str):
  dtype = jnp.result_type(key)
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if jnp.ndim(key) != 0:
      raise ValueError(f"{fn}: `key` must be a single PRNG key, got shape "
                       f"{jnp.shape(key)}")
    return
  if dtype != jnp.uint32 or jnp.shape(key) != (2,):
    raise TypeError(f"{fn}: `key` must be a PRNG key (jax.random.key or "
                    f"PRNGKey), got dtype {dtype} and shape {jnp.shape(key)}")


def _inverse_box_cox(xi: jax.Array, lam: float) -> jax.Array:
  """``exp(xi)`` for ``lam == 0`` else ``max(1 + lam xi, 0) ** (1 / lam)``.

  Where the base is 0 the result is 0 for ``lam > 0`` and ``+inf`` for
  ``lam < 0``; both are returned without producing NaN.
  """
  if isinstance(lam, (int, float)) and lam == 0:
    return jnp.exp(xi)
  lam = jnp.asarray(lam, jnp.float32)
  safe_lam = jnp.where(lam == 0, 1.0, lam)
  base = 1.0 + safe_lam * xi
  positive = base > 0
  powered = jnp.power(jnp.where(positive, base, 1.0), 1.0 / safe_lam)
  zero_base = jnp.where(safe_lam > 0, 0.0, jnp.inf)
  out = jnp.where(positive, powered, zero_base)
  return jnp.where(lam == 0, jnp.exp(xi), out)


def ensloss(logits: jax.Array, labels: jax.Array, *, key: jax.Array,
            lam: float = 0.0, where=None) -> jax.Array:
  r"""EnsLoss surrogate: a fresh random convex calibrated loss every batch.

  With margins :math:`s_i = z_i (2 y_i - 1)` over the batch, draw
  :math:`\xi_i \sim \mathcal{N}(0, 1)` and derivatives
  :math:`\tilde g = \max(-\mathrm{BC}^{-1}_\lambda(\xi), -1)`, where
  :math:`\mathrm{BC}^{-1}_0(\xi) = e^\xi` and
  :math:`\mathrm{BC}^{-1}_\lambda(\xi) = \max(1 + \lambda\xi, 0)^{1/\lambda}`
  (inverse Box-Cox). Sorting the draws and assigning them by the rank of
  the margins (smallest margin gets the most negative derivative) makes the
  implied loss derivative non-decreasing, i.e. the loss convex; then

  .. math::
    g_i = \frac{\tilde g_{(r_i)}}{\max(s_i, 1)} - 10^{-6}
    \ (\text{superlinear tail, and } \partial\phi(0) < 0 \text{ for
    calibration}), \qquad
    \ell_i = \mathrm{sg}(g_i)\, s_i .

  The returned value is a surrogate whose gradient with respect to
  ``logits`` is :math:`g_i (2 y_i - 1)` per example; the value itself has no
  meaning (only its gradient). ``jnp.mean`` of it reproduces the
  reference's loss. Masked examples take no part in the ranking.

  Args:
    logits: ``(B,)`` floating binary scores ``f(x)``.
    labels: ``(B,)`` integer labels in ``{0, 1}``.
    key: PRNG key for the derivative draws (new key every step).
    lam: inverse Box-Cox parameter; 0 gives negative log-normal
      derivatives. The reference keeps 0 (``period=-1``) or redraws it every
      ``period`` epochs, ``lam ~ U(-1, 1)`` (images) / ``U(0, 1)`` (text),
      e.g. ``jax.random.uniform(k, minval=-1.0, maxval=1.0)``; it may be
      traced.
    where: optional ``(B,)`` boolean mask; masked examples get 0 and are
      excluded from the ranking.

  Returns:
    The per-example surrogate, shape ``(B,)``, float32.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> z = jnp.array([0.3, -1.2, 2.0, 0.1])
    >>> y = jnp.array([1, 0, 1, 0])
    >>> g = jax.grad(lambda z: losses.ensloss(
    ...     z, y, key=jax.random.key(0)).mean())(z)
    >>> bool(jnp.all(g * (2 * y - 1) < 0))
    True

  References:
    B. Dai, "EnsLoss: Stochastic Calibrated Loss Ensembles for Preventing
    Overfitting in Classification", ICML 2025 (PMLR 267:12001-12021;
    arXiv 2409.00908): generation of random calibrated loss-derivatives
    through the inverse Box-Cox transform. The steps above follow the
    authors' code ``statmlben/ensLoss@fd37682: losses.py``
    (``ensLoss.forward``, ``BC_inv``: sort the draws, clip at -1,
    assign by margin rank, divide by the margin where it exceeds 1,
    subtract ``1e-6``, loss ``mean(g * s)``).
  """
  fn = "ensloss"
  checks.check_floating(logits, "logits", fn)
  checks.check_rank(logits, 1, "logits", fn)
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, jnp.shape(logits), "labels", fn)
  checks.check_label_range(labels, 2, fn)
  _check_key(key, fn)
  checks.check_finite_scalar(lam, "lam", fn)
  n = jnp.shape(logits)[0]
  checks.check_where(where, (n,), fn)
  labels, invalid = label_range.sanitize(labels, 2)
  logits = numerics.promote_to_f32(logits)
  keep = (jnp.ones((n,), bool) if where is None
          else jnp.broadcast_to(where, (n,)))
  sign = 2.0 * labels.astype(jnp.float32) - 1.0
  margins = logits * sign
  s = jax.lax.stop_gradient(margins)

  xi = jax.random.normal(key, (n,), jnp.float32)
  draws = jnp.maximum(-_inverse_box_cox(xi, lam), -1.0)
  # Masked entries: largest derivative and largest margin, so they rank last
  # and the kept examples get exactly the sorted kept draws.
  draws = jnp.where(keep, draws, 1.0)
  sorted_draws = jnp.sort(draws)
  order = jnp.argsort(jnp.where(keep, s, jnp.inf))
  g = jnp.zeros((n,), jnp.float32).at[order].set(sorted_draws)
  g = jnp.where(s > 1.0, g / jnp.where(s > 1.0, s, 1.0), g)
  g = jax.lax.stop_gradient(g) - 1e-6
  loss = jnp.where(keep, g * margins, 0.0)
  # Every derivative depends on the ranks of all kept margins, hence on every
  # kept label and margin: one bad label or NaN margin makes all of them NaN.
  bad = jnp.any(keep & (invalid | jnp.isnan(s)))
  return numerics.apply_where(loss, where, jnp.broadcast_to(bad, (n,)))
