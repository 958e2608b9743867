"""LossSpecs of the robust / classification losses (task B) for test_common."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.losses.spec import LossSpec

K = 5
COUNTS = np.array([50.0, 20.0, 8.0, 3.0, 1.0], np.float32)
SUPPORT = np.linspace(-3.0, 3.0, 9).astype(np.float32)  # 8 bins
CENTERS = 0.5 * (SUPPORT[1:] + SUPPORT[:-1])


def _logits_labels(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  return (jax.random.normal(k1, (batch, K), dtype),
          jax.random.randint(k2, (batch,), 0, K))


def _two_logits(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  return (jax.random.normal(k1, (batch, K), dtype),
          jax.random.normal(k2, (batch, K), dtype))


def _experts(key, batch, dtype):
  # Batch-major (B, E, K) so that every positional argument has the batch
  # on axis 0; the call moves the expert axis in front as the API expects.
  k1, k2 = jax.random.split(key)
  return (jax.random.normal(k1, (batch, 3, K), dtype),
          jax.random.randint(k2, (batch,), 0, K))


def _call_mdcs(fn, expert_logits, labels, **kwargs):
  return fn(jnp.moveaxis(expert_logits, -2, 0), labels, **kwargs)


def _hl_args(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  return (jax.random.normal(k1, (batch, len(CENTERS)), dtype),
          jax.random.uniform(k2, (batch,), jnp.float32, -2.5, 2.5))


def _bins_logits(key, batch, dtype):
  return (jax.random.normal(key, (batch, len(CENTERS)), dtype),)


def _values(key, batch, dtype):
  return (jax.random.uniform(key, (batch,), jnp.float32, -2.5, 2.5)
          .astype(dtype),)


def _call_targets(fn, values, **kwargs):
  # Per-example scalar: the mean of each target histogram over bin centres.
  return fn(values, SUPPORT, **kwargs) @ CENTERS


def _binary(key, batch, dtype):
  k1, _ = jax.random.split(key)
  return (jax.random.normal(k1, (batch,), dtype),
          jnp.arange(batch, dtype=jnp.int32) % 2)


def _losses(key, batch, dtype):
  return (jnp.abs(jax.random.normal(key, (batch,), dtype)) + 0.1,)


def _bias_args(key, batch, dtype):
  k1, k2, k3 = jax.random.split(key, 3)
  return (jax.random.normal(k1, (batch, K), dtype),
          jax.random.randint(k2, (batch,), 0, K),
          jax.random.normal(k3, (batch, 4, 3), dtype))


def _call_bias(fn, logits, labels, features, **kwargs):
  loss, _ = fn(logits, labels, features, **kwargs)
  return loss


# Batch-coupled per-example outputs (bias_loss, loss_reweighting, ensloss):
# `where` drops examples from the batch statistics (min / max / ranking /
# normalization), so the kept outputs equal a call on the kept subset, not the
# unmasked outputs that test_common compares them with. Their `where` is
# tested against the kept subset in test_bias_loss.py, test_reweighting.py and
# test_ensloss.py instead, hence supports_where=False below.
_BATCH_COUPLED = dict(supports_where=False)


SPECS = [
    LossSpec("label_smoothed_cross_entropy", _logits_labels,
             kwargs=dict(smoothing=0.1), labels="classes"),
    LossSpec("symmetric_cross_entropy", _two_logits, kwargs=dict(alpha=0.5)),
    LossSpec("symmetric_label_cross_entropy", _logits_labels,
             kwargs=dict(alpha=0.1, beta=1.0), labels="classes"),
    LossSpec("logit_adjusted_cross_entropy", _logits_labels,
             kwargs=dict(class_counts=COUNTS, tau=1.0), labels="classes"),
    LossSpec("mdcs_diversity_loss", _experts,
             kwargs=dict(class_counts=COUNTS), call=_call_mdcs,
             labels="classes"),
    LossSpec("hl_gauss_loss", _hl_args, kwargs=dict(support=SUPPORT)),
    LossSpec("hl_gauss_prediction", _bins_logits,
             kwargs=dict(support=SUPPORT), supports_where=False),
    LossSpec("hl_gauss_targets", _values, call=_call_targets,
             supports_where=False),
    LossSpec("mw_auc_loss", _binary, per_example=False, min_batch=2,
             labels="classes"),
    LossSpec("loss_reweighting", _losses,
             kwargs=dict(strategy="quadratic", temperature=1.0),
             nan_scope="batch", **_BATCH_COUPLED),
    LossSpec("ensloss", _binary,
             kwargs=dict(key=jax.random.key(0), lam=0.0), **_BATCH_COUPLED,
             labels="classes", nan_scope="batch",
             skip_reason=(
                 "finite differences: the EnsLoss output is a surrogate "
                 "sg(g(s)) * s whose gradient is the sampled derivative g, "
                 "while its value is meaningless (g depends on s through "
                 "ranks and the 1/s tail), so check_grads cannot match; the "
                 "gradient is checked against a numpy port of the reference "
                 "algorithm in test_ensloss.py")),
    LossSpec("bias_loss", _bias_args, kwargs=dict(normalization="global"),
             call=_call_bias, labels="classes", **_BATCH_COUPLED),
]
