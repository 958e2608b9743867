"""Public API of `diversity_jax.diversity`: one explicit import per public name.

Diversity. Measures and regularizers of diversity, all pure ``jax.jit``-able
functions with f32 compute for bf16 inputs and finite values and gradients:

* Vendi score of any order (0, fractional, 1, 2, inf), weighted or masked,
  from a kernel (:func:`vendi_score`), from features with the linear kernel
  (:func:`vendi_score_from_features`) or in the ``d x d`` dual form
  (:func:`vendi_score_dual`); gradients stay finite at repeated eigenvalues.
* Vendi score of the Gaussian kernel at scale (``n`` up to ``10^6``) from
  random Fourier features (:func:`vendi_score_rff`, FKEA) or Nystrom
  features (:func:`vendi_score_nystrom`); the quality-weighted Vendi score
  (:func:`quality_weighted_vendi_score`); the Renyi kernel entropy mode count
  (:func:`rke_mode_count`).
* Orthogonality / decorrelation regularizers: PEGO
  (:func:`pego_orthogonality`), MSGCoOp (:func:`prompt_cosine_diversity`),
  BA-LoRA (:func:`covariance_decorrelation`, :func:`negative_entropy`,
  :func:`singular_value_energy_regularizer`).
* Ensemble predictive diversity, per example: :func:`pairwise_disagreement`,
  :func:`pairwise_kl_divergence`, :func:`pairwise_js_divergence`,
  :func:`ensemble_ambiguity` (average member CE - ensemble CE).
* :func:`matrix_nuclear_norm` of hidden states (approximate or exact).
* DVERGE: :func:`feature_distillation` and :func:`dverge_cross_entropy` over
  any ``apply_fn(params, x)`` (flax ``model.apply``).
* Weight-space ensembling: :func:`interpolate_params` (WiSE-FT) and
  :func:`balanced_average` (BANG / uniform soups).
"""

from diversity_jax.diversity._dverge import dverge_cross_entropy
from diversity_jax.diversity._dverge import feature_distillation
from diversity_jax.diversity._ensemble import ensemble_ambiguity
from diversity_jax.diversity._ensemble import pairwise_disagreement
from diversity_jax.diversity._ensemble import pairwise_js_divergence
from diversity_jax.diversity._ensemble import pairwise_kl_divergence
from diversity_jax.diversity._nuclear_norm import matrix_nuclear_norm
from diversity_jax.diversity._orthogonality import covariance_decorrelation
from diversity_jax.diversity._orthogonality import negative_entropy
from diversity_jax.diversity._orthogonality import pego_orthogonality
from diversity_jax.diversity._orthogonality import prompt_cosine_diversity
from diversity_jax.diversity._orthogonality import singular_value_energy_regularizer
from diversity_jax.diversity._quality_vendi import quality_weighted_vendi_score
from diversity_jax.diversity._rke import relative_rke
from diversity_jax.diversity._rke import rke_mode_count
from diversity_jax.diversity._vendi import vendi_score
from diversity_jax.diversity._vendi import vendi_score_dual
from diversity_jax.diversity._vendi import vendi_score_from_features
from diversity_jax.diversity._vendi_scale import vendi_score_nystrom
from diversity_jax.diversity._vendi_scale import vendi_score_rff
from diversity_jax.diversity._weight_ensembling import balanced_average
from diversity_jax.diversity._weight_ensembling import interpolate_params

__all__ = [
    "balanced_average",
    "covariance_decorrelation",
    "dverge_cross_entropy",
    "ensemble_ambiguity",
    "feature_distillation",
    "interpolate_params",
    "matrix_nuclear_norm",
    "negative_entropy",
    "pairwise_disagreement",
    "pairwise_js_divergence",
    "pairwise_kl_divergence",
    "pego_orthogonality",
    "prompt_cosine_diversity",
    "quality_weighted_vendi_score",
    "relative_rke",
    "rke_mode_count",
    "singular_value_energy_regularizer",
    "vendi_score",
    "vendi_score_dual",
    "vendi_score_from_features",
    "vendi_score_nystrom",
    "vendi_score_rff",
]
