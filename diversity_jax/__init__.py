"""diversity_jax: JAX-native tools for models that generalize.

Subpackages (each re-exports its public names explicitly):

* :mod:`diversity_jax.losses`: per-example losses (classification, robust,
  metric learning, ranking), optax-style.
* :mod:`diversity_jax.metric_learning`: miners (as masks), blocked retrieval
  metrics and a cross-batch memory for the metric-learning losses.
* :mod:`diversity_jax.diversity`: diversity measures and regularizers.
* :mod:`diversity_jax.transforms`: optax gradient transformations for rules that
  need more than one gradient (SAM family, UDIM, SAF, Hessian alignment, ...).
* :mod:`diversity_jax.kernels`: fused kernels (linear + cross-entropy).
* :mod:`diversity_jax.selection`: diversity-driven selection of data, batches
  and tokens (k-center, DivPrune, DPP MAP, Vendi, k-means), static ``k``.
"""

from diversity_jax import diversity
from diversity_jax import kernels
from diversity_jax import losses
from diversity_jax import metric_learning
from diversity_jax import selection
from diversity_jax import transforms

__version__ = "0.1.0"

__all__ = ["diversity", "kernels", "losses", "metric_learning", "selection",
           "transforms"]
