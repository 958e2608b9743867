"""Loss-based sample reweighting (Sow et al., ICLR 2025): losses -> weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics

#: Strategies: the paper's LinUpper, Quadratic and Extremes, the trainer's
#: "upper" (linear), and "uniform" (no reweighting).
REWEIGHTING_STRATEGIES = ("linupper", "quadratic", "extremes", "upper",
                          "uniform")


def loss_reweighting(losses: jax.Array, *, strategy: str = "linupper",
                     temperature: float = 1.0, delta: float = 1.0,
                     where=None) -> jax.Array:
  r"""Per-example weights from per-example losses (softmax over a score).

  .. math::
    h_i = \frac{2\delta\,\ell_i - \delta(\ell_{max} + \ell_{min})}
               {\max(\ell_{max} - \ell_{min}, 10^{-6})} \in [-\delta, \delta],
    \qquad
    w_i = \frac{\exp\big((f(h_i) - \max_j f(h_j)) / r\big)}
               {\sum_j \exp\big((f(h_j) - \max_k f(h_k)) / r\big)}

  with the strategy :math:`f`: ``linupper`` :math:`\min(h + \delta, \delta)`
  (down-weights low-loss, flat for high-loss samples), ``quadratic``
  :math:`1 - h^2/\delta^2` (favours medium losses), ``extremes`` :math:`|h|`
  (favours both ends), ``upper`` :math:`h/2 + \delta/2`, and ``uniform``
  (equal weights). ``r = temperature``; as ``r -> inf`` weights become
  uniform. Minimum and maximum are taken over the kept examples.

  The reference computes the weights without gradient: pass
  ``jax.lax.stop_gradient(losses)`` to get the same training signal (this
  function itself is differentiable). The weights sum to 1 over kept
  examples, so the reweighted batch loss is ``jnp.sum(w * losses)``.

  Args:
    losses: ``(N,)`` floating per-example losses (e.g. mean token CE of each
      sequence, gathered over the whole global batch).
    strategy: one of ``REWEIGHTING_STRATEGIES``.
    temperature: softmax temperature ``r > 0`` (paper: 1.0; 0.4 with LinUpper
      combined with domain reweighting).
    delta: half-width ``delta > 0`` of the normalized loss range.
    where: optional ``(N,)`` boolean; dropped examples get weight 0 and do not
      enter the min / max / normalization.

  Returns:
    ``(N,)`` float32 weights, >= 0, summing to 1 over kept examples (all 0
    when nothing is kept).

  Example:
    >>> import jax, jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> per_example = jnp.array([0.5, 1.0, 2.0, 4.0])
    >>> w = losses.loss_reweighting(jax.lax.stop_gradient(per_example),
    ...                             strategy="extremes", temperature=1.0)
    >>> round(float(w.sum()), 5)
    1.0

  References:
    Sow et al., "Dynamic Loss-Based Sample Reweighting for Improved Large
    Language Model Pretraining", ICLR 2025 (arXiv 2502.06733): KL-regularized
    weights in closed form (a softmax) with the LinUpper / Quadratic /
    Extremes strategies. Checked against the authors' code ``sowmaster/Sample-Level-Loss-Reweighting-ICLR-2025@edd6f15:
    src/trainer.py`` (``h_func``, ``f_func_*``, ``g_func``) and
    ``README.md`` (``normalize_losses``, ``apply_strategy``, default
    strategy ``"linupper"``).
  """
  fn = "loss_reweighting"
  checks.check_floating(losses, "losses", fn)
  checks.check_rank(losses, 1, "losses", fn)
  checks.check_choice(strategy, REWEIGHTING_STRATEGIES, "strategy", fn)
  checks.check_positive(temperature, "temperature", fn)
  checks.check_positive(delta, "delta", fn)
  n = jnp.shape(losses)[0]
  checks.check_where(where, (n,), fn)
  losses = numerics.promote_to_f32(losses)
  keep = (jnp.ones((n,), bool) if where is None
          else jnp.broadcast_to(where, (n,)))
  any_kept = jnp.any(keep)
  lmax = jnp.max(jnp.where(keep, losses, -jnp.inf), initial=-jnp.inf)
  lmin = jnp.min(jnp.where(keep, losses, jnp.inf), initial=jnp.inf)
  lmax = jnp.where(any_kept, lmax, 0.0)
  lmin = jnp.where(any_kept, lmin, 0.0)
  span = jnp.maximum(lmax - lmin, 1e-6)
  h = (2.0 * delta * losses - delta * (lmax + lmin)) / span
  h = jnp.where(keep, h, 0.0)
  if strategy == "linupper":
    f = jnp.minimum(h + delta, delta)
  elif strategy == "quadratic":
    f = 1.0 - jnp.square(h) / delta**2
  elif strategy == "extremes":
    f = jnp.abs(h)
  elif strategy == "upper":
    f = 0.5 * h + 0.5 * delta
  else:
    f = jnp.zeros_like(h)
  logits = jnp.where(keep, f / temperature, -jnp.inf)
  logits = jnp.where(any_kept, logits, 0.0)
  weights = jax.nn.softmax(logits)
  return jnp.where(keep, weights, 0.0)
