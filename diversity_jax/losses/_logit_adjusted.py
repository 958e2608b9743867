"""Logit-adjusted cross-entropy and the MDCS multi-expert diversity loss.

The MDCS diversity loss trains each expert of a multi-expert long-tail model on
the same labels with a different logit adjustment strength, so the experts
specialise on head, medium and tail classes.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diversity_jax._src import checks
from diversity_jax._src import label_range
from diversity_jax._src import numerics


def _check_counts(class_counts, num_classes: int, fn: str):
  checks.check_rank(class_counts, 1, "class_counts", fn)
  checks.check_shape(class_counts, (num_classes,), "class_counts", fn)
  if checks.is_concrete(class_counts):
    counts = np.asarray(class_counts)
    if not np.all(np.isfinite(counts)) or np.any(counts <= 0):
      raise ValueError(f"{fn}: `class_counts` must be finite and > 0, got "
                       f"min {counts.min()}")


def _ce(logits, labels):
  lse = jax.nn.logsumexp(logits, axis=-1)
  return lse - jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]


def logit_adjusted_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                                 class_counts, tau: float = 1.0,
                                 where=None) -> jax.Array:
  r"""Softmax cross-entropy on prior-adjusted logits.

  .. math::
    \ell(z, y) = -\log \mathrm{softmax}(z + \tau \log \pi)_y,
    \qquad \pi_k \propto n_k

  ``tau > 0`` favours the tail at test time (Menon et al.); ``tau < 0`` favours
  the head. Using unnormalized counts only shifts every logit of a row by the
  same constant, which cross-entropy ignores.

  Args:
    logits: ``(..., K)`` floating logits.
    labels: ``(...)`` integer labels.
    class_counts: ``(K,)`` positive training-set class counts (or priors).
    tau: adjustment strength (any real).
    where: optional boolean mask broadcastable to ``labels.shape``.

  Returns:
    The per-example loss, shape ``labels.shape``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> losses.logit_adjusted_cross_entropy(
    ...     jnp.zeros((2, 3)), jnp.array([0, 2]),
    ...     class_counts=jnp.array([100., 10., 1.]), tau=1.0).shape
    (2,)

  References:
    Menon et al., "Long-tail learning via logit adjustment", ICLR 2021
    (arXiv:2007.07314), the logit-adjusted softmax cross-entropy. The loss
    and the default
    ``tau = 1`` are checked against the authors' code,
    ``google-research/google-research: logit_adjustment/utils.py``
    (``build_loss_fn``: ``logits + log(base_probs**tau + 1e-12)`` then
    sparse softmax CE; ``main.py`` flag ``tau`` default 1.0).
  """
  fn = "logit_adjusted_cross_entropy"
  checks.check_logits_and_labels(logits, labels, fn)
  _check_counts(class_counts, jnp.shape(logits)[-1], fn)
  checks.check_finite_scalar(tau, "tau", fn)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, jnp.shape(logits)[-1])
  logits = numerics.promote_to_f32(logits)
  log_prior = jnp.log(jnp.asarray(class_counts, jnp.float32))
  loss = _ce(logits + tau * log_prior, labels)
  return numerics.apply_where(loss, where, invalid)


def mdcs_diversity_loss(expert_logits: jax.Array, labels: jax.Array, *,
                        class_counts,
                        taus: Sequence[float] = (-0.5, 1.0, 2.5),
                        where=None) -> jax.Array:
  r"""MDCS diversity loss: logit-adjusted CE summed over experts.

  .. math::
    \mathcal{L}_{DL}(x, y) = \sum_{e=1}^{E}
      -\log \mathrm{softmax}\big(z^{(e)} + \lambda_e \log \pi\big)_y

  with one strength :math:`\lambda_e` per expert: the defaults
  ``(-0.5, 1.0, 2.5)`` are the head / medium / few-shot experts of MDCS.
  The reference adds ``log(n^lambda + 1e-9)``; for counts >= 1 the ``1e-9``
  changes the loss by < 1e-8 and is dropped here (it would make a zero count
  with negative lambda infinite), so counts must be positive.

  Args:
    expert_logits: ``(E, ..., K)`` floating logits, one slice per expert.
    labels: ``(...)`` integer labels shared by all experts.
    class_counts: ``(K,)`` positive training-set class counts.
    taus: ``E`` per-expert adjustment strengths (static Python floats).
    where: optional boolean mask broadcastable to ``labels.shape``.

  Returns:
    The per-example loss summed over experts, shape ``labels.shape``, float32.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax import losses
    >>> z = jnp.zeros((3, 4, 5))               # 3 experts, batch 4, 5 classes
    >>> losses.mdcs_diversity_loss(z, jnp.arange(4), class_counts=jnp.arange(
    ...     1., 6.)).shape
    (4,)

  References:
    Zhao et al., "MDCS: More Diverse Experts with Consistency Self-distillation
    for Long-tailed Recognition", ICCV 2023, the diversity loss. Checked
    against the authors' code (the strengths ``(-0.5, 1, 2.5)`` and the
    ``log(n^lambda + 1e-9)`` form) ``fistyee/MDCS@1a1d54e: model/loss.py`` (``MDCSLoss.forward``: plain
    CE of each adjusted expert, summed over the three experts).
  """
  fn = "mdcs_diversity_loss"
  checks.check_floating(expert_logits, "expert_logits", fn)
  checks.check_min_rank(expert_logits, 2, "expert_logits", fn)
  checks.check_has_classes(expert_logits, "expert_logits", fn)
  checks.check_integer(labels, "labels", fn)
  checks.check_shape(labels, jnp.shape(expert_logits)[1:-1], "labels", fn)
  num_classes = jnp.shape(expert_logits)[-1]
  checks.check_label_range(labels, num_classes, fn)
  _check_counts(class_counts, num_classes, fn)
  taus = tuple(taus)
  num_experts = jnp.shape(expert_logits)[0]
  if len(taus) != num_experts:
    raise ValueError(f"{fn}: `taus` must have one entry per expert "
                     f"({num_experts}, the leading axis of `expert_logits`), "
                     f"got {len(taus)}")
  for i, t in enumerate(taus):
    checks.check_finite_scalar(t, f"taus[{i}]", fn)
  checks.check_where(where, jnp.shape(labels), fn)
  labels, invalid = label_range.sanitize(labels, num_classes)
  expert_logits = numerics.promote_to_f32(expert_logits)
  log_prior = jnp.log(jnp.asarray(class_counts, jnp.float32))
  strengths = jnp.asarray(taus, jnp.float32).reshape(
      (num_experts,) + (1,) * (expert_logits.ndim - 1))
  per_expert = _ce(expert_logits + strengths * log_prior,
                   jnp.broadcast_to(labels, expert_logits.shape[:-1]))
  loss = jnp.sum(per_expert, axis=0)
  return numerics.apply_where(loss, where, invalid)
