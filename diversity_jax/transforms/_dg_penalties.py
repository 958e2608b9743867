"""Domain-generalization penalties: IRM (v1), V-REx, CORAL, Fishr.

Pure functions over per-domain quantities, used inside a trainer's
``loss_fn``; shapes carry a leading domain axis ``E`` where noted.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from diversity_jax._src import checks
from diversity_jax._src import numerics


def _ce(logits, labels):
  logp = jax.nn.log_softmax(logits, axis=-1)
  return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def irm_penalty(logits, labels):
  r"""IRMv1 penalty of one domain (or of each domain of a stacked batch).

  The squared gradient of the risk w.r.t. a dummy classifier scale ``s`` at
  ``s = 1`` (Arjovsky et al. 2019, the objective labelled "IRMv1"), in
  DomainBed's unbiased form:
  the batch is split into even and odd examples and the two gradients are
  multiplied::

    penalty = d/ds CE(s z[::2], y[::2]) * d/ds CE(s z[1::2], y[1::2]),  s = 1

  Args:
    logits: ``(B, K)`` for one domain or ``(E, B, K)`` for ``E`` domains;
      floating (bf16 computed in f32).
    labels: int labels of shape ``logits.shape[:-1]``.

  Returns:
    Scalar for one domain, or ``(E,)`` per-domain penalties (average them as
    DomainBed does: ``penalty.mean()``).

  Example:
    >>> import jax.numpy as jnp
    >>> p = irm_penalty(jnp.zeros((4, 3)), jnp.array([0, 1, 2, 0]))

  References:
    Arjovsky, Bottou, Gulrajani and Lopez-Paz, `Invariant Risk Minimization
    <https://arxiv.org/abs/1907.02893>`_, 2019, Sec. 3.1, the objective
    labelled "(IRMv1)". Checked line by line against DomainBed
    ``algorithms.IRM._irm_penalty`` (facebookresearch/DomainBed: even/odd
    halves, ``autograd.grad`` w.r.t. a unit scale, product) and by
    ``tests/transforms/test_dg_penalties.py`` (its closed form in NumPy).
  """
  fn = "irm_penalty"
  checks.check_logits_and_labels(logits, labels, fn)
  checks.check_rank(logits, (2, 3), "logits", fn)
  if jnp.shape(logits)[-2] < 2:
    checks._fail(fn, "`logits` needs at least 2 examples per domain (the "
                 "penalty splits them into even and odd halves)")
  logits = numerics.promote_to_f32(logits).astype(jnp.float32)

  def one(z, y):
    def risk(s, zz, yy):
      return _ce(s * zz, yy)
    g1 = jax.grad(risk)(1.0, z[::2], y[::2])
    g2 = jax.grad(risk)(1.0, z[1::2], y[1::2])
    return g1 * g2

  if jnp.ndim(logits) == 3:
    return jax.vmap(one)(logits, labels)
  return one(logits, labels)


def vrex_penalty(domain_losses):
  r"""V-REx penalty: variance of the per-domain risks.

  ``penalty = mean_e (R_e - mean_e R_e)^2`` (population variance; Krueger et
  al. 2021, the V-REx risk; DomainBed ``algorithms.VREx``).

  Args:
    domain_losses: ``(E,)`` per-domain mean losses, floating.

  Returns:
    Scalar penalty (f32).

  Example:
    >>> import jax.numpy as jnp
    >>> vrex_penalty(jnp.array([1.0, 3.0]))
    Array(1., dtype=float32)

  References:
    Krueger et al., `Out-of-Distribution Generalization via Risk
    Extrapolation (REx) <https://arxiv.org/abs/2003.00688>`_, ICML 2021,
    Sec. 3, the V-REx objective ``beta Var(R_1..R_m) + sum_e R_e`` (Eq. 6 of
    arXiv:2003.00688).
    Checked against DomainBed ``VREx.update`` (``((losses - mean) **
    2).mean()``) and by ``tests/transforms/test_dg_penalties.py``.
  """
  fn = "vrex_penalty"
  checks.check_floating(domain_losses, "domain_losses", fn)
  checks.check_rank(domain_losses, 1, "domain_losses", fn)
  if jnp.shape(domain_losses)[0] < 1:
    checks._fail(fn, "`domain_losses` must hold at least one domain")
  r = numerics.promote_to_f32(domain_losses).astype(jnp.float32)
  return jnp.mean(jnp.square(r - jnp.mean(r)))


def coral_penalty(features):
  r"""CORAL penalty: mean and covariance mismatch, averaged over domain pairs.

  For domains ``i < j`` with features ``f_i (B, D)`` (DomainBed
  ``AbstractMMD.mmd`` with ``kernel_type='mean_cov'``)::

    d(i, j) = mean_k (mu_i - mu_j)_k^2 + mean_kl (C_i - C_j)_kl^2
    C_i     = (f_i - mu_i)^T (f_i - mu_i) / (B - 1)
    penalty = mean over pairs i < j of d(i, j)

  Args:
    features: ``(E, B, D)`` features of ``E >= 2`` domains with ``B >= 2``
      examples each.

  Returns:
    Scalar penalty (f32).

  Example:
    >>> import jax.numpy as jnp
    >>> coral_penalty(jnp.zeros((2, 4, 3)))
    Array(0., dtype=float32)

  References:
    Sun and Saenko, `Deep CORAL <https://arxiv.org/abs/1607.01719>`_, ECCV
    2016 workshops, Eq. 1, the CORAL loss ``||C_S - C_T||_F^2 / (4 d^2)``.
    This is DomainBed's variant, checked line by line against
    ``AbstractMMD.mmd`` (``kernel_type='mean_cov'``) and
    ``AbstractMMD.update``: a mean (``/ d^2``, not ``/ 4 d^2``) of the
    covariance difference plus the mean difference, averaged over pairs;
    ``tests/transforms/test_dg_penalties.py`` compares it with that formula
    in NumPy.
  """
  fn = "coral_penalty"
  checks.check_floating(features, "features", fn)
  checks.check_rank(features, 3, "features", fn)
  e, b, _ = jnp.shape(features)
  if e < 2:
    checks._fail(fn, f"`features` needs at least 2 domains, got shape "
                 f"{jnp.shape(features)}")
  if b < 2:
    checks._fail(fn, f"`features` needs at least 2 examples per domain (the "
                 f"covariance divides by B - 1), got shape {jnp.shape(features)}")
  f = numerics.promote_to_f32(features).astype(jnp.float32)
  mu = jnp.mean(f, axis=1)                                   # (E, D)
  c = f - mu[:, None]
  cov = jnp.einsum("ebi,ebj->eij", c, c) / (b - 1)            # (E, D, D)
  ii, jj = jnp.triu_indices(e, k=1)
  mean_diff = jnp.mean(jnp.square(mu[ii] - mu[jj]), axis=-1)
  cov_diff = jnp.mean(jnp.square(cov[ii] - cov[jj]), axis=(-2, -1))
  return jnp.mean(mean_diff + cov_diff)


def fishr_variances(per_example_grads):
  """Per-domain variance of per-example gradients (Fishr, Rame et al. Eq. 4).

  ``v_e = mean_b (g_eb - mean_b g_eb)^2`` per coordinate (DomainBed
  ``Fishr._get_grads_var_per_domain``, without its EMA).

  Args:
    per_example_grads: pytree whose leaves are ``(E, B, ...)`` per-example
      gradients (e.g. of the classifier head) of ``E`` domains.

  Returns:
    Pytree of ``(E, ...)`` variances ``mean_b (g_eb - mean_b g_eb)^2``.

  Example:
    >>> import jax.numpy as jnp
    >>> v = fishr_variances({'w': jnp.ones((2, 4, 3))})

  References:
    Rame, Dancette and Cord, `Fishr: Invariant Gradient Variances for
    Out-of-Distribution Generalization <https://arxiv.org/abs/2109.02934>`_,
    ICML 2022, Eq. 4 of arXiv:2109.02934 (the per-domain gradient
    variances); checked against
    DomainBed ``Fishr._get_grads_var_per_domain``.
  """
  fn = "fishr_variances"
  leaves = jax.tree_util.tree_leaves(per_example_grads)
  if not leaves:
    checks._fail(fn, "`per_example_grads` has no leaves")
  shape0 = jnp.shape(leaves[0])[:2]
  for leaf in leaves:
    checks.check_floating(leaf, "per_example_grads", fn)
    checks.check_min_rank(leaf, 2, "per_example_grads", fn)
    if jnp.shape(leaf)[:2] != shape0:
      checks._fail(fn, "every `per_example_grads` leaf must share the leading "
                   f"(E, B) axes, got {jnp.shape(leaf)[:2]} and {shape0}")

  def var(g):
    g = numerics.promote_to_f32(g).astype(jnp.float32)
    return jnp.mean(jnp.square(g - jnp.mean(g, axis=1, keepdims=True)), axis=1)

  return jax.tree_util.tree_map(var, per_example_grads)


def fishr_penalty_from_variances(variances):
  """Fishr distance of per-domain variances ``(E, ...)`` to their mean.

  ``penalty = mean_e mean_p (v_e,p - mean_e' v_e',p)^2`` over all ``P``
  variance entries (DomainBed ``l2_between_dicts`` is a mean, not a sum).
  Use it on exponential moving averages of :func:`fishr_variances` to
  reproduce DomainBed's ``ema`` option.

  Args:
    variances: pytree of ``(E, ...)`` per-domain variances.

  Returns:
    Scalar penalty (f32).

  Example:
    >>> import jax.numpy as jnp
    >>> fishr_penalty_from_variances({'w': jnp.ones((2, 3))})
    Array(0., dtype=float32)

  References:
    Rame et al., ICML 2022, Eq. 5 of arXiv:2109.02934 (the Fishr penalty);
    checked against
    DomainBed ``Fishr._compute_distance_grads_var`` and
    ``l2_between_dicts``.
  """
  leaves = [jnp.asarray(v, jnp.float32)
            for v in jax.tree_util.tree_leaves(variances)]
  if not leaves:
    checks._fail("fishr_penalty_from_variances", "`variances` has no leaves")
  flat = jnp.concatenate([jnp.reshape(v, (v.shape[0], -1)) for v in leaves],
                         axis=1)                               # (E, P)
  return jnp.mean(jnp.square(flat - jnp.mean(flat, axis=0, keepdims=True)))


def fishr_penalty(per_example_grads):
  r"""Fishr penalty: mismatch of per-domain gradient variances.

  ``v_e = Var_b[g_eb]`` (per coordinate) and
  ``penalty = mean_e || v_e - mean_e v_e ||^2 / P`` (Rame et al. 2022,
  Eqs. 4-5, with DomainBed's mean over the ``P`` coordinates). DomainBed
  additionally smooths ``v_e`` by an EMA; see
  :func:`fishr_penalty_from_variances`.

  Args:
    per_example_grads: pytree of ``(E, B, ...)`` per-example gradients (e.g.
      ``jax.vmap(jax.vmap(jax.grad(per_example_loss)))`` over the head).

  Returns:
    Scalar penalty (f32).

  Example:
    >>> import jax.numpy as jnp
    >>> fishr_penalty({'w': jnp.ones((2, 4, 3))})
    Array(0., dtype=float32)

  References:
    Rame, Dancette and Cord, `Fishr <https://arxiv.org/abs/2109.02934>`_,
    ICML 2022, Eqs. 4-5 of arXiv:2109.02934 (gradient variances and their
    penalty); checked
    against DomainBed ``algorithms.Fishr`` and by
    ``tests/transforms/test_dg_penalties.py`` (NumPy per-example
    gradients).
  """
  return fishr_penalty_from_variances(fishr_variances(per_example_grads))
