"""Orthogonality / decorrelation regularizers (PEGO, MSGCoOp, BA-LoRA).

Every function returns a value to be *minimized* (added to the loss with a
caller-chosen weight).
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics


def pego_orthogonality(lora_updates: jax.Array,
                       pretrained_weight: Optional[jax.Array] = None
                       ) -> jax.Array:
  r"""PEGO orthogonal regularizer over a group of LoRA updates of one weight.

  With pre-trained weight :math:`W` and LoRA updates
  :math:`\Delta W_i = B_i A_i` (``i = 1..N``),

  .. math::

    L_o = \sum_{i=1}^{N} \Big[ \lVert W \Delta W_i^\top \rVert_1
      + \sum_{j>i} \lVert \Delta W_i \Delta W_j^\top \rVert_1 \Big],

  with :math:`\lVert\cdot\rVert_1` the entrywise absolute sum (not squared).
  The first term keeps updates orthogonal to the pre-trained weight
  ("preserve"), the second keeps the updates mutually orthogonal
  ("diversify"). Sum over blocks / projections (q, v) and multiply by the
  weight (paper: ``1e-3``) in the caller.

  Args:
    lora_updates: ``(N, d_out, d_in)`` stacked updates ``B_i @ A_i``.
    pretrained_weight: optional ``(d_out, d_in)`` frozen weight ``W``; when
      None only the mutual term is computed.

  Returns:
    Scalar f32 regularizer (subgradient 0 at exact orthogonality).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import pego_orthogonality
    >>> dw = jnp.array([[[1., 0.], [1., 0.]], [[0., 1.], [0., 1.]]])
    >>> float(pego_orthogonality(dw))  # rows of the two updates are orthogonal
    0.0

  References:
    Hu et al., "Learn to Preserve and Diversify: Parameter-Efficient Group
    with Orthogonal Regularization for Domain Generalization", ECCV 2024,
    orthogonal regularization (the formula was checked against the authors'
    code, ``PEGO.update``). Code:
    https://github.com/JudgingH/PEGO (``domainbed/algorithms/algorithms.py``,
    ``class PEGO``).
  """
  fn = "pego_orthogonality"
  checks.check_floating(lora_updates, "lora_updates", fn)
  checks.check_rank(lora_updates, 3, "lora_updates", fn)
  dw = numerics.promote_to_f32(jnp.asarray(lora_updates))
  n = dw.shape[0]
  total = jnp.zeros((), jnp.float32)
  if pretrained_weight is not None:
    checks.check_floating(pretrained_weight, "pretrained_weight", fn)
    checks.check_shape(pretrained_weight, dw.shape[1:], "pretrained_weight", fn)
    w = numerics.promote_to_f32(jnp.asarray(pretrained_weight))
    total = total + jnp.sum(jnp.abs(jnp.einsum("ab,ncb->nac", w, dw)))
  if n >= 2:
    gram = jnp.abs(jnp.einsum("iab,jcb->ijac", dw, dw)).sum(axis=(2, 3))
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    total = total + jnp.sum(jnp.where(upper, gram, 0.0))
  return total


def prompt_cosine_diversity(prompt_features: jax.Array) -> jax.Array:
  r"""MSGCoOp diversity regularizer: mean squared cosine between prompts.

  For ``P`` prompt feature sets :math:`t_{p,c}` (class ``c``),

  .. math::

    L_{div} = \frac1C \sum_c \frac{2}{P(P-1)} \sum_{i<j}
      \big(\hat t_{i,c}^\top \hat t_{j,c}\big)^2,\quad
    \hat t = t / \lVert t \rVert_2 .

  Args:
    prompt_features: ``(P, ..., D)`` features, prompts on axis 0 (the paper
      uses ``(P, C, D)``); every middle index is averaged like a class.

  Returns:
    Scalar f32 in ``[0, 1]`` (0 when ``P = 1``).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import prompt_cosine_diversity
    >>> t = jnp.array([[[1., 0.]], [[0., 2.]]])  # two orthogonal prompts
    >>> float(prompt_cosine_diversity(t))
    0.0

  References:
    "MSGCoOp: Multiple Semantic-Guided Context Optimization for Few-Shot
    Learning", 2025 (arXiv 2507.21786), diversity loss of Sec. 3 (formula
    checked against the authors' code). Code:
    https://github.com/Rain-Bus/MSGCoOp
    (``trainers/msgcoop.py``, ``compute_diversity_loss``).
  """
  fn = "prompt_cosine_diversity"
  checks.check_floating(prompt_features, "prompt_features", fn)
  checks.check_min_rank(prompt_features, 2, "prompt_features", fn)
  t = numerics.promote_to_f32(jnp.asarray(prompt_features))
  p = t.shape[0]
  if p < 2 or t.size == 0:
    return jnp.zeros((), jnp.float32) + 0.0 * jnp.sum(t)
  t = t.reshape(p, -1, t.shape[-1])
  t_hat = numerics.safe_divide(t, numerics.safe_norm(t, axis=-1, keepdims=True))
  cos = jnp.einsum("icd,jcd->ijc", t_hat, t_hat)
  upper = jnp.triu(jnp.ones((p, p), bool), k=1)[..., None]
  per_class = jnp.sum(jnp.where(upper, cos ** 2, 0.0), axis=(0, 1))
  per_class = per_class / (p * (p - 1) / 2)
  return jnp.mean(per_class)


def covariance_decorrelation(features: jax.Array, *,
                             where: Optional[jax.Array] = None) -> jax.Array:
  r"""BA-LoRA diversity regularizer: off-diagonal covariance energy.

  With :math:`C = (Z - \bar Z)^\top (Z - \bar Z) / (B - 1)` over the batch
  (unbiased, as in the reference),

  .. math::

    L_{div} = \frac1D \sum_{i \ne j} C_{ij}^2 .

  Args:
    features: ``(B, D)`` outputs (logits or features) of a batch.
    where: optional ``(B,)`` boolean mask of kept examples.

  Returns:
    Scalar f32 (0 with fewer than two kept examples, where the reference
    divides by zero).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import covariance_decorrelation
    >>> z = jnp.array([[1., 1.], [-1., -1.]])  # perfectly correlated dims
    >>> float(covariance_decorrelation(z))  # C = [[2, 2], [2, 2]]
    4.0

  References:
    Chang et al., "BA-LoRA: Bias-Alleviating Low-Rank Adaptation to Mitigate
    Catastrophic Inheritance in Large Language Models", 2024 (arXiv
    2408.04556), diversity regularizer for NLU, Sec. 3 (formula checked
    against the authors' code). Code:
    https://github.com/cyp-jlu-ai/BA-LoRA (``train.py``,
    ``Trainer.compute_loss``).
  """
  fn = "covariance_decorrelation"
  checks.check_floating(features, "features", fn)
  checks.check_rank(features, 2, "features", fn)
  b, dim = jnp.shape(features)
  checks.check_where(where, (b,), fn)
  if dim == 0:
    checks._fail(fn, f"`features` needs D >= 1, got shape {(b, dim)}")
  z = numerics.promote_to_f32(jnp.asarray(features))
  keep = (jnp.ones((b,), bool) if where is None
          else jnp.broadcast_to(where, (b,)))
  keep_f = keep[:, None].astype(z.dtype)
  count = jnp.sum(keep).astype(z.dtype)
  mean = numerics.safe_divide(jnp.sum(z * keep_f, axis=0), count)
  zc = (z - mean) * keep_f
  cov = numerics.safe_divide(zc.T @ zc, jnp.maximum(count - 1.0, 0.0))
  off = jnp.where(jnp.eye(dim, dtype=bool), 0.0, cov)
  return jnp.sum(off ** 2) / dim


def negative_entropy(logits: jax.Array, *,
                     where: Optional[jax.Array] = None) -> jax.Array:
  r"""BA-LoRA NLG diversity regularizer: negative predictive entropy.

  .. math::

    L(x) = -H(\mathrm{softmax}(z)) = \sum_k p_k \log p_k

  (exact log-softmax, no ``+1e-10``; padding tokens are dropped with
  ``where``, which the reference does not do). Minimizing it raises entropy.

  Args:
    logits: ``(..., K)`` logits.
    where: optional boolean mask broadcastable to ``...`` (e.g. non-padding).

  Returns:
    f32 array of shape ``...`` in ``[-log K, 0]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import negative_entropy
    >>> round(float(negative_entropy(jnp.zeros((1, 4)))[0]), 4)  # -log 4
    -1.3863

  References:
    Chang et al., BA-LoRA, 2024 (arXiv 2408.04556), NLG diversity
    regularizer, Sec. 3 (formula checked against the authors' code). Code:
    https://github.com/cyp-jlu-ai/BA-LoRA (``train.py``).
  """
  fn = "negative_entropy"
  checks.check_floating(logits, "logits", fn)
  checks.check_min_rank(logits, 1, "logits", fn)
  if jnp.shape(logits)[-1] == 0:
    checks._fail(fn, f"`logits` needs K >= 1 classes, got {jnp.shape(logits)}")
  checks.check_where(where, jnp.shape(logits)[:-1], fn)
  log_p = jax.nn.log_softmax(numerics.promote_to_f32(jnp.asarray(logits)), -1)
  out = jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
  return numerics.apply_where(out, where)


def singular_value_energy_regularizer(matrix: jax.Array, *,
                                      k: int = 3) -> jax.Array:
  r"""BA-LoRA SVD regularizer: negative top-k singular-value energy ratio.

  For each matrix with singular values :math:`\sigma_1 \ge \sigma_2 \ge ...`,

  .. math::

    L = -\frac{\sum_{i \le k} \sigma_i}{\sum_i \sigma_i}

  (0 for an all-zero matrix). This is the intended per-matrix form; the
  shipped reference indexes a 1-D singular-value vector as 2-D and never runs.

  Args:
    matrix: ``(..., m, n)`` floating matrices (e.g. per-sequence outputs).
    k: number of leading singular values, a static int ``>= 1``.

  Returns:
    f32 array of shape ``...`` in ``[-1, 0]``.

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import singular_value_energy_regularizer
    >>> float(singular_value_energy_regularizer(jnp.diag(jnp.array([3., 1.])), k=1))
    -0.75

  References:
    Chang et al., BA-LoRA, 2024 (arXiv 2408.04556), SVD regularizer, Sec. 3
    (formula from the authors' code); defaults ``k = 3``,
    weight ``1e-4``. Code:
    https://github.com/cyp-jlu-ai/BA-LoRA (``train.py``,
    ``svd_regularization``).
  """
  fn = "singular_value_energy_regularizer"
  checks.check_floating(matrix, "matrix", fn)
  checks.check_min_rank(matrix, 2, "matrix", fn)
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    checks._fail(fn, f"`k` must be a Python int >= 1, got {k!r}")
  x = numerics.promote_to_f32(jnp.asarray(matrix))
  if min(x.shape[-2:]) == 0:
    return jnp.zeros(x.shape[:-2], jnp.float32)
  s = jnp.linalg.svd(x, compute_uv=False)
  ratio = numerics.safe_divide(jnp.sum(s[..., :k], axis=-1),
                               jnp.sum(s, axis=-1))
  return -ratio
