"""Quality-weighted Vendi score (Nguyen & Dieng 2024)."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics
from diversity_jax.diversity import _vendi


def quality_weighted_vendi_score(kernel: jax.Array, quality: jax.Array, *,
                                 q: _vendi.Order = 1.0,
                                 weights: Optional[jax.Array] = None,
                                 where: Optional[jax.Array] = None,
                                 normalize: bool = False) -> jax.Array:
  r"""Quality-weighted Vendi score: mean quality times the Vendi score.

  .. math::

    \mathrm{qVS}_q(x_{1:n}) = \Big(\frac{1}{n}\sum_{i=1}^n s(x_i)\Big)\,
    \mathrm{VS}_q(K),

  with :math:`s(x_i)` the ``quality`` of item :math:`i` (the plain mean over
  the kept items, also when ``weights`` are given, as in the authors' code)
  and :math:`\mathrm{VS}_q` the Vendi score of :func:`vendi_score`. A set of
  few high-quality distinct items and a set of many mediocre ones can score
  alike: maximizing qVS trades one for the other.

  Args:
    kernel: ``(n, n)`` symmetric PSD similarity matrix with unit diagonal
      (see :func:`vendi_score`).
    quality: ``(n,)`` floating quality scores :math:`s(x_i)`, usually
      non-negative (higher is better).
    q: order (see :func:`vendi_score`).
    weights: optional ``(n,)`` non-negative sample weights of the Vendi
      score.
    where: optional ``(n,)`` boolean mask of kept items (dropped from both
      factors).
    normalize: rescale ``K`` to unit diagonal first.

  Returns:
    Scalar f32 score (0 when every item is masked out or ``n = 0``; NaN when
    a kept quality or kernel entry is NaN or inf).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import quality_weighted_vendi_score
    >>> k = jnp.array([[1., 1., 0.], [1., 1., 0.], [0., 0., 1.]])
    >>> s = jnp.array([0.5, 0.5, 0.8])
    >>> round(float(quality_weighted_vendi_score(k, s, q=2)), 4)  # 0.6 * 1.8
    1.08

  References:
    Nguyen & Dieng, "Quality-Weighted Vendi Scores And Their Application To
    Diverse Experimental Design", ICML 2024 (arXiv 2405.02449), Sec. 3
    (the definition of qVS).
    Checked against the ``vendi-score`` package with the authors' qVS
    product (golden file). Code:
    https://github.com/vertaix/Quality-Weighted-Vendi-Score
    (``q_vendi_score/q_vendi.py``, ``score``).
  """
  fn = "quality_weighted_vendi_score"
  checks.check_floating(quality, "quality", fn)
  n = jnp.shape(kernel)[0] if jnp.ndim(kernel) == 2 else None
  score = _vendi.vendi_score(kernel, q=q, weights=weights, where=where,
                             normalize=normalize)
  checks.check_shape(quality, (n,), "quality", fn)
  s = numerics.promote_to_f32(jnp.asarray(quality))
  if where is not None:
    s = jnp.where(where, s, 0.0)
  return numerics.masked_mean(s, where) * score
