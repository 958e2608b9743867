"""Bias loss (Abrahamyan et al. 2021): CE weighted by feature-map variance."""

from __future__ import annotations

from typing import Optional, Tuple

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics

BIAS_LOSS_NORMALIZATIONS = ("global", "local")


def bias_loss(logits: jax.Array, labels: jax.Array, features: jax.Array,
              global_min: Optional[jax.Array] = None, *, alpha: float = 0.3,
              beta: float = 0.3, normalization: str = "global",
              where=None) -> Tuple[jax.Array, jax.Array]:
  r"""Cross-entropy weighted by the normalized variance of each feature map.

  .. math::
    v_i = \mathrm{Var}_{ddof=1}(\mathrm{flatten}(F_i)),\quad
    \hat v_i = \frac{v_i - m}{\max_j v_j - \min_j v_j},\quad
    \ell_i = \big(e^{\alpha \hat v_i} - \beta\big)\,
             \mathrm{CE}(z_i, y_i)

  with :math:`m = \min_j v_j` (``"local"``) or the running minimum over all
  batches seen so far including this one (``"global"``, the default). The
  features are treated as constants (no gradient). Where the batch range
  is 0 (one example, equal variances) :math:`\hat v = 0` instead of the
  reference's 0/0 = NaN.

  The running minimum is explicit state: pass the previous ``global_min``
  (``None`` or ``jnp.inf`` at the first step; the reference starts from
  ``1e5``, which differs only if every variance ever seen exceeds 1e5) and
  carry the returned one. ``"local"`` returns it updated as well.

  Args:
    logits: ``(B, K)`` floating logits.
    labels: ``(B,)`` integer labels.
    features: ``(B, ...)`` floating feature maps of the last convolutional
      block (before pooling), at least 2 values per example.
    global_min: scalar running minimum of the variances, or ``None``.
    alpha: exponent scale (paper: 0.3).
    beta: offset (paper: 0.3); ``beta < 1`` keeps every weight positive.
    normalization: ``"global"`` or ``"local"``.
    where: optional ``(B,)`` boolean; masked examples get loss 0 and are
      excluded from the min / max and from the running minimum.

  Returns:
    ``(loss, new_global_min)``: the per-example loss ``(B,)`` float32 and the
    updated scalar float32 running minimum.

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> k1, k2 = jax.random.split(jax.random.key(0))
    >>> logits = jax.random.normal(k1, (4, 10))
    >>> feats = jax.random.normal(k2, (4, 8, 3, 3))
    >>> loss, gmin = losses.bias_loss(logits, jnp.arange(4), feats)
    >>> loss, gmin = losses.bias_loss(logits, jnp.arange(4), feats, gmin)
    >>> loss.shape, gmin.shape
    ((4,), ())

  References:
    Abrahamyan, Ziatchin, Chen, Deligiannis, "Bias Loss for Mobile Neural
    Networks", ICCV 2021 (arXiv 2107.11170), Sec. 3: the bias loss, CE scaled
    by ``z(v) = exp(alpha v) - beta`` of the normalized feature-map variance.
    The formula, the defaults
    ``alpha = beta = 0.3`` and both normalizations are checked against the
    authors' code (golden values from
    ``tests/golden/make_bias_loss.py``)
    ``lusinlu/biasloss_skipblocknet@b557bca: bias_loss/biasloss.py``
    (``BiasLoss.forward``, ``norm_global`` / ``norm_local``).
  """
  fn = "bias_loss"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_rank(logits, 2, "logits", fn)
  checks.check_floating(features, "features", fn)
  checks.check_min_rank(features, 2, "features", fn)
  batch = jnp.shape(logits)[0]
  if jnp.shape(features)[0] != batch:
    raise ValueError(f"{fn}: `features` must have batch size {batch} (that of "
                     f"`logits`) on axis 0, got shape {jnp.shape(features)}")
  per_example = 1
  for d in jnp.shape(features)[1:]:
    per_example *= d
  if per_example < 2:
    raise ValueError(f"{fn}: `features` must hold at least 2 values per "
                     f"example (unbiased variance), got shape "
                     f"{jnp.shape(features)}")
  if global_min is not None:
    checks.check_floating(global_min, "global_min", fn)
    checks.check_rank(global_min, 0, "global_min", fn)
  checks.check_finite_scalar(alpha, "alpha", fn)
  checks.check_finite_scalar(beta, "beta", fn)
  checks.check_choice(normalization, BIAS_LOSS_NORMALIZATIONS,
                      "normalization", fn)
  checks.check_where(where, (batch,), fn)

  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits, features = numerics.promote_to_f32(logits, features)
  features = jax.lax.stop_gradient(features).reshape(batch, per_example)
  features = features.astype(jnp.float32)
  variance = jnp.var(features, axis=1, ddof=1)
  keep = (jnp.ones((batch,), bool) if where is None
          else jnp.broadcast_to(where, (batch,)))
  any_kept = jnp.any(keep)
  vmin = jnp.min(jnp.where(keep, variance, jnp.inf), initial=jnp.inf)
  vmax = jnp.max(jnp.where(keep, variance, -jnp.inf), initial=-jnp.inf)
  span = jnp.where(any_kept, vmax - vmin, 0.0)
  old_min = (jnp.asarray(jnp.inf, jnp.float32) if global_min is None
             else jnp.asarray(global_min, jnp.float32))
  new_min = jnp.minimum(old_min, vmin)  # vmin = +inf when nothing is kept
  offset = new_min if normalization == "global" else vmin
  centered = jnp.where(keep, variance - offset, 0.0)
  normalized = numerics.safe_divide(centered, span)
  weights = jax.lax.stop_gradient(jnp.exp(alpha * normalized) - beta)

  ce = (jax.nn.logsumexp(logits, axis=-1)
        - jnp.take_along_axis(logits, labels[:, None], axis=-1)[:, 0])
  loss = numerics.apply_where(weights * ce, where, invalid)
  return loss, jax.lax.stop_gradient(new_min)
