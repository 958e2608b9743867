"""Public API of `diversity_jax.metric_learning`: one explicit import per public name."""

from diversity_jax.metric_learning._memory import CrossBatchMemoryState
from diversity_jax.metric_learning._memory import cross_batch_memory_init
from diversity_jax.metric_learning._memory import cross_batch_memory_loss
from diversity_jax.metric_learning._memory import cross_batch_memory_update
from diversity_jax.metric_learning._miners import batch_hard_miner
from diversity_jax.metric_learning._miners import multi_similarity_miner
from diversity_jax.metric_learning._miners import pairs_from_triplets
from diversity_jax.metric_learning._miners import triplet_margin_miner
from diversity_jax.metric_learning._retrieval import retrieval_metrics

__all__ = [
    "CrossBatchMemoryState",
    "cross_batch_memory_init",
    "cross_batch_memory_loss",
    "cross_batch_memory_update",
    "batch_hard_miner",
    "multi_similarity_miner",
    "pairs_from_triplets",
    "triplet_margin_miner",
    "retrieval_metrics",
]
