"""Public API of `diversity_jax.selection`: one explicit import per public name.

Selection. Choose a diverse (or useful and diverse) subset of items, tokens or
examples. Every selector is pure and ``jax.jit``-able with a static number of
picks ``k``: it returns ``k`` indices (``-1`` for an unfilled slot), never a
data-dependent shape; :func:`selection_mask` turns them into a mask.

* Greedy max-min (k-center): :func:`k_center_greedy`; DivPrune token pruning
  with the cosine distance: :func:`divprune`.
* Greedy on a kernel: DPP MAP by incremental Cholesky (:func:`greedy_log_det`)
  and greedy Vendi score (:func:`greedy_vendi`).
* k-means on device, blocked over items: :func:`kmeans_plus_plus_init` and a
  fixed number of Lloyd steps (:func:`kmeans`, returning a
  :class:`KMeansResult`).
* Sampling across clusters (Diversify and Conquer): a budget shared by the
  clusters and drawn by quality within each (:func:`cluster_sample`, kMQ),
  and the cluster weights of the next iteration from the training signal
  (:func:`reweight_clusters`).
* Online batch selection by utility and diversity (UDS): :func:`uds_select`
  with an explicit FIFO memory (:func:`uds_init_memory`, :class:`UDSMemory`).
* Quality-and-domain data sampling (QuaDMix): expected copies per item
  (:func:`quadmix_sampling_values`) and a draw of them under a static quota
  (:func:`quadmix_sample`).
"""

from diversity_jax.selection._cluster_sampling import cluster_sample
from diversity_jax.selection._cluster_sampling import reweight_clusters
from diversity_jax.selection._common import selection_mask
from diversity_jax.selection._greedy_kernel import greedy_log_det
from diversity_jax.selection._greedy_kernel import greedy_vendi
from diversity_jax.selection._kmeans import KMeansResult
from diversity_jax.selection._kmeans import kmeans
from diversity_jax.selection._kmeans import kmeans_plus_plus_init
from diversity_jax.selection._max_min import divprune
from diversity_jax.selection._max_min import k_center_greedy
from diversity_jax.selection._online_batch import UDSMemory
from diversity_jax.selection._online_batch import uds_init_memory
from diversity_jax.selection._online_batch import uds_select
from diversity_jax.selection._quadmix import quadmix_sample
from diversity_jax.selection._quadmix import quadmix_sampling_values

__all__ = [
    "KMeansResult",
    "UDSMemory",
    "cluster_sample",
    "divprune",
    "greedy_log_det",
    "greedy_vendi",
    "k_center_greedy",
    "kmeans",
    "kmeans_plus_plus_init",
    "quadmix_sample",
    "quadmix_sampling_values",
    "reweight_clusters",
    "selection_mask",
    "uds_init_memory",
    "uds_select",
]
