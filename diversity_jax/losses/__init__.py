"""Public API of `diversity_jax.losses`: one explicit import per public name."""

from diversity_jax.losses._bias_loss import bias_loss
from diversity_jax.losses._ensloss import ensloss
from diversity_jax.losses._hl_gauss import hl_gauss_loss
from diversity_jax.losses._hl_gauss import hl_gauss_prediction
from diversity_jax.losses._hl_gauss import hl_gauss_targets
from diversity_jax.losses._logit_adjusted import logit_adjusted_cross_entropy
from diversity_jax.losses._logit_adjusted import mdcs_diversity_loss
from diversity_jax.losses._auc import mw_auc_loss
from diversity_jax.losses._reweighting import loss_reweighting
from diversity_jax.losses._robust_ce import label_smoothed_cross_entropy
from diversity_jax.losses._robust_ce import symmetric_cross_entropy
from diversity_jax.losses._robust_ce import symmetric_label_cross_entropy
from diversity_jax.losses._metric_multi_similarity import multi_similarity_loss
from diversity_jax.losses._metric_normalized_softmax import normalized_softmax_loss
from diversity_jax.losses._metric_opis import opis
from diversity_jax.losses._metric_snr import snr_contrastive_loss
from diversity_jax.losses._metric_snr import snr_distance
from diversity_jax.losses._metric_susana import icnn_loss
from diversity_jax.losses._metric_susana import proto_triplet_loss
from diversity_jax.losses._metric_tcm import threshold_consistent_margin_loss
from diversity_jax.losses._metric_unpg import unpg_loss
from diversity_jax.losses._comp_sum import comp_sum
from diversity_jax.losses._comp_sum import generalized_cross_entropy
from diversity_jax.losses._comp_sum import mean_absolute_error
from diversity_jax.losses._adversarial_comp_sum import smooth_adversarial_comp_sum
from diversity_jax.losses._z_loss import spherical_z_loss
from diversity_jax.losses._z_loss import log_partition_penalty
from diversity_jax.losses._ldr import ldr_kl
from diversity_jax.losses._ldr import aldr_kl
from diversity_jax.losses._anyloss import anyloss

__all__ = [
    "bias_loss",
    "ensloss",
    "hl_gauss_loss",
    "hl_gauss_prediction",
    "hl_gauss_targets",
    "logit_adjusted_cross_entropy",
    "mdcs_diversity_loss",
    "mw_auc_loss",
    "loss_reweighting",
    "label_smoothed_cross_entropy",
    "symmetric_cross_entropy",
    "symmetric_label_cross_entropy",
    "multi_similarity_loss",
    "normalized_softmax_loss",
    "opis",
    "snr_contrastive_loss",
    "snr_distance",
    "icnn_loss",
    "proto_triplet_loss",
    "threshold_consistent_margin_loss",
    "unpg_loss",
    "comp_sum",
    "generalized_cross_entropy",
    "mean_absolute_error",
    "smooth_adversarial_comp_sum",
    "spherical_z_loss",
    "log_partition_penalty",
    "ldr_kl",
    "aldr_kl",
    "anyloss",
]
