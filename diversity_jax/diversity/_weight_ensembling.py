"""Weight-space ensembling: WiSE-FT interpolation and balanced averaging.

Both functions combine parameter pytrees leaf by leaf in f32 and return leaves
in their original dtypes (a bf16 model stays bf16).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from diversity_jax._src import checks


def _check_same_trees(trees: Sequence[Any], names: Sequence[str], fn: str):
  ref_def = jax.tree_util.tree_structure(trees[0])
  ref_leaves = jax.tree_util.tree_leaves(trees[0])
  for tree, name in zip(trees[1:], names[1:]):
    tdef = jax.tree_util.tree_structure(tree)
    if tdef != ref_def:
      checks._fail(fn, f"`{name}` must have the same tree structure as "
                   f"`{names[0]}`, got {tdef} vs {ref_def}")
    for a, b in zip(ref_leaves, jax.tree_util.tree_leaves(tree)):
      if jnp.shape(a) != jnp.shape(b):
        checks._fail(fn, f"`{name}` has a leaf of shape {jnp.shape(b)} where "
                     f"`{names[0]}` has {jnp.shape(a)}")
  for leaf in ref_leaves:
    checks.check_floating(leaf, f"{names[0]} leaves", fn)


def _compute_dtype(leaf):
  """f32 for narrow floats (bf16/f16), the leaf's own dtype otherwise."""
  return jnp.promote_types(jnp.result_type(leaf), jnp.float32)


def interpolate_params(params_a: Any, params_b: Any, *,
                       alpha: float = 0.5) -> Any:
  r"""WiSE-FT weight-space ensemble: linear interpolation of two param trees.

  .. math::

    \theta_\alpha = (1 - \alpha)\, \theta_a + \alpha\, \theta_b

  ``theta_a`` is typically the zero-shot / pre-trained model and ``theta_b``
  the fine-tuned one (``alpha = 1`` is plain fine-tuning). ``alpha`` may be
  traced (e.g. swept under ``jax.vmap``).

  Args:
    params_a: pytree of floating arrays.
    params_b: pytree with the same structure and leaf shapes.
    alpha: mixing coefficient, finite (usually in ``[0, 1]``).

  Returns:
    Pytree like ``params_a`` (leaf dtypes of ``params_a``).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import interpolate_params
    >>> out = interpolate_params({'w': jnp.zeros(2)}, {'w': jnp.ones(2)}, alpha=0.25)
    >>> out['w'].tolist()
    [0.25, 0.25]

  References:
    Wortsman et al., "Robust fine-tuning of zero-shot models", CVPR 2022
    (arXiv 2109.01903), Sec. 2 (weight-space ensemble). Checked against the
    authors' code: https://github.com/mlfoundations/wise-ft (``wise_ft``:
    ``(1 - alpha) * theta_0 + alpha * theta_1`` per parameter).
  """
  fn = "interpolate_params"
  _check_same_trees([params_a, params_b], ["params_a", "params_b"], fn)
  checks.check_finite_scalar(alpha, "alpha", fn)

  def mix(a, b):
    dtype = _compute_dtype(a)
    a32, b32 = jnp.asarray(a).astype(dtype), jnp.asarray(b).astype(dtype)
    t = jnp.asarray(alpha).astype(dtype)
    return ((1.0 - t) * a32 + t * b32).astype(jnp.result_type(a))

  return jax.tree_util.tree_map(mix, params_a, params_b)


def balanced_average(param_trees: Sequence[Any], *,
                     weights: Optional[Sequence[float]] = None) -> Any:
  r"""Balanced (weighted) average of several parameter trees.

  .. math::

    \bar\theta = \sum_{m=1}^{M} w_m \theta_m,\quad
    w_m \ge 0,\ \textstyle\sum_m w_m = 1 \ (\text{uniform by default})

  BANG (BAlaNced averaGing, Lin et al. 2024) targets one failure of WiSE-FT:
  the fine-tuned model is over-confident out of distribution, so in the
  average its wrong predictions outweigh the pre-trained model's: the
  paper's abstract (arXiv:2309.17230) states that over-confidence of the
  fine-tuned model "magnifies the fine-tuned model's incorrect prediction"
  in the ensemble and that BANG remedies it. This function is the
  parameter average of such an ensemble; reducing the fine-tuned model's
  confidence is the fine-tuning loss's job (e.g. label smoothing or mixup,
  see :mod:`diversity_jax.losses`), and no other BANG-specific step is
  applied. ``weights=None`` gives the
  equal-weight average, two trees with ``weights=(1 - a, a)`` equal
  :func:`interpolate_params`, many fine-tuned trees give a uniform model soup.

  Args:
    param_trees: non-empty sequence of pytrees with identical structure.
    weights: optional non-negative weights, one per tree (normalized here);
      static Python / numpy values.

  Returns:
    Pytree like ``param_trees[0]`` (its leaf dtypes).

  Example:
    >>> import jax.numpy as jnp
    >>> from diversity_jax.diversity import balanced_average
    >>> trees = [{'w': jnp.zeros(2)}, {'w': jnp.ones(2)}, {'w': 2 * jnp.ones(2)}]
    >>> balanced_average(trees)['w'].tolist()
    [1.0, 1.0]

  References:
    Lin et al., "Spurious Feature Diversification Improves Out-of-distribution
    Generalization", ICLR 2024 (arXiv 2309.17230), abstract and Sec. 5
    (BANG);
    Wortsman et al., "Model soups", ICML 2022 (arXiv 2203.05482) (uniform
    soup).
  """
  fn = "balanced_average"
  if isinstance(param_trees, dict) or not isinstance(param_trees, (list, tuple)):
    checks._fail(fn, "`param_trees` must be a list or tuple of pytrees",
                 TypeError)
  if len(param_trees) == 0:
    checks._fail(fn, "`param_trees` must contain at least one tree")
  names = [f"param_trees[{i}]" for i in range(len(param_trees))]
  _check_same_trees(list(param_trees), names, fn)
  n = len(param_trees)
  if weights is None:
    w = np.full((n,), 1.0 / n)
  else:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
      checks._fail(fn, f"`weights` must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
      checks._fail(fn, f"`weights` must be finite, non-negative and not all "
                   f"zero, got {w.tolist()}")
    w = w / w.sum()

  def avg(*leaves):
    dtype = _compute_dtype(leaves[0])
    total = sum(float(wi) * jnp.asarray(l).astype(dtype)
                for wi, l in zip(w, leaves))
    return total.astype(jnp.result_type(leaves[0]))

  return jax.tree_util.tree_map(avg, *param_trees)
