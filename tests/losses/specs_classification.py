"""LossSpecs of the classification losses (comp-sum, z-losses, LDR, AnyLoss)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tests.losses.spec import LossSpec

K = 5
D_IN = 3
# Fixed linear model of the adversarial spec: inputs (B, 3) -> logits (B, 5).
W_ADV = np.random.default_rng(0).standard_normal((D_IN, K)).astype(np.float32)


def _logits_labels(key, batch, dtype):
  k1, k2 = jax.random.split(key)
  return (jax.random.normal(k1, (batch, K), dtype),
          jax.random.randint(k2, (batch,), 0, K))


def _logits_only(key, batch, dtype):
  return (jax.random.normal(key, (batch, K), dtype),)


def _aldr_args(key, batch, dtype):
  logits, labels = _logits_labels(key, batch, dtype)
  return logits, labels, jnp.full((batch,), 1.0, jnp.float32)


def _call_aldr(fn, logits, labels, temperatures, **kwargs):
  loss, _ = fn(logits, labels, temperatures, **kwargs)
  return loss


def _binary(key, batch, dtype):
  # Alternating labels: every batch of >= 2 has positives and negatives; a
  # batch of 1 has none (the no-positive path).
  return (jax.random.normal(key, (batch,), dtype),
          jnp.arange(batch, dtype=jnp.int32) % 2)


def _adv_args(key, batch, dtype):
  k1, k2, k3 = jax.random.split(key, 3)
  return (jax.random.normal(k1, (batch, D_IN), dtype),
          jax.random.randint(k2, (batch,), 0, K), k3)


def _call_adv(fn, inputs, labels, key, **kwargs):
  # A linear model: the PGD maximizer does not depend on the clean input, so
  # finite differences on `inputs` see the same (stop-gradient) perturbation.
  return fn(lambda x: x @ W_ADV.astype(x.dtype), inputs, labels, key, **kwargs)


SPECS = [
    # tau < 1 exercises the exponential branch (and its overflow guard).
    LossSpec("comp_sum", _logits_labels, kwargs=dict(tau=0.5), labels="classes"),
    LossSpec("generalized_cross_entropy", _logits_labels, kwargs=dict(q=0.7),
             labels="classes"),
    LossSpec("mean_absolute_error", _logits_labels, labels="classes"),
    LossSpec("smooth_adversarial_comp_sum", _adv_args, call=_call_adv,
             kwargs=dict(tau=1.0, nu=1.0, radius=0.1, steps=3),
             labels="classes"),
    LossSpec("spherical_z_loss", _logits_labels, kwargs=dict(a=2.0, b=1.0),
             labels="classes"),
    LossSpec("log_partition_penalty", _logits_only, kwargs=dict(coeff=1e-2)),
    LossSpec("ldr_kl", _logits_labels,
             kwargs=dict(margin=0.1, temperature=1.0,
                         logit_transform="softplus"), labels="classes"),
    # The new temperatures are stop-gradient functions of the logits (as in
    # the reference); a large alpha pins them to [lambda0 (1 - 1e-4),
    # lambda0] so that finite differences agree with the (documented)
    # stop-gradient derivative. test_ldr.py checks the alpha=2 gradient
    # against finite differences with the temperatures held fixed.
    LossSpec("aldr_kl", _aldr_args, call=_call_aldr,
             kwargs=dict(margin=0.1, temperature=1.0, alpha=1e4,
                         logit_transform="l1"), labels="classes"),
    LossSpec("anyloss", _binary, per_example=False,
             kwargs=dict(metric="g_mean", amplification=10.0),
             labels="classes"),
]
