"""The losses the label-noise study compares: one name per (loss, hparams).

Every entry has one signature, so a single training step serves them all::

  batch_loss, new_state = entry.loss(logits, labels, features, index, state)

``features`` are the model's penultimate activations (``bias_loss`` weights
examples by their variance), ``index`` the training-set ids of the batch
(``aldr_kl`` keeps one temperature per training example) and ``state`` the
loss's explicit state, ``entry.init_state(num_train)`` at step 0 (``()`` for
the stateless losses). The batch loss is the mean of the per-example losses,
or the weighted sum for ``loss_reweighting`` (weights from stop-gradient
losses, as Sow et al.).

Hyperparameters are the papers' (each named in the entry's name): GCE q = 0.7
(Zhang & Sabuncu 2018); SCE alpha = 0.1, beta = 1, A = -4 (Wang et al. 2019,
their CIFAR-10 setting); label smoothing 0.1 (Szegedy et al. 2016); comp-sum
tau in {0.5, 1.5} around CE (tau = 1), next to GCE (tau = 1.7) and MAE
(tau = 2) (Mao et al. 2023); LDR-KL / ALDR-KL margin 0.1, lambda_0 = 1,
alpha = 2 (Zhu et al. 2023); bias loss alpha = beta = 0.3 (Abrahamyan et al.
2021); loss reweighting with the LinUpper (default) and Quadratic strategies,
temperature 1 (Sow et al. 2025), over CE.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp
import optax

from diversity_jax import losses


class StudyLoss(NamedTuple):
  """A loss of the study: ``loss(logits, labels, features, index, state)``."""

  loss: Callable[..., Any]
  init_state: Callable[[int], Any]


def _no_state(num_train):
  del num_train
  return ()


def _mean_of(per_example_fn, **kwargs) -> StudyLoss:
  def loss(logits, labels, features, index, state):
    del features, index
    return jnp.mean(per_example_fn(logits, labels, **kwargs)), state
  return StudyLoss(loss, _no_state)


def _aldr_kl(**kwargs) -> StudyLoss:
  lam0 = kwargs.get("temperature", 1.0)

  def loss(logits, labels, features, index, temperatures):
    del features
    per_example, new = losses.aldr_kl(logits, labels, temperatures[index],
                                      **kwargs)
    return jnp.mean(per_example), temperatures.at[index].set(new)
  return StudyLoss(loss, lambda n: jnp.full((n,), lam0, jnp.float32))


def _bias_loss(**kwargs) -> StudyLoss:
  def loss(logits, labels, features, index, global_min):
    del index
    per_example, new_min = losses.bias_loss(
        logits, labels, jax.lax.stop_gradient(features), global_min, **kwargs)
    return jnp.mean(per_example), new_min
  return StudyLoss(loss, lambda n: jnp.asarray(jnp.inf, jnp.float32))


def _reweighted_ce(**kwargs) -> StudyLoss:
  def loss(logits, labels, features, index, state):
    del features, index
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    w = losses.loss_reweighting(jax.lax.stop_gradient(ce), **kwargs)
    return jnp.sum(w * ce), state
  return StudyLoss(loss, _no_state)


_ce = optax.softmax_cross_entropy_with_integer_labels

#: name -> StudyLoss, in the order of the table's rows.
LOSSES: Dict[str, StudyLoss] = {
    "ce": _mean_of(_ce),
    "label_smoothing(0.1)": _mean_of(losses.label_smoothed_cross_entropy,
                                     smoothing=0.1),
    "gce(q=0.7)": _mean_of(losses.generalized_cross_entropy, q=0.7),
    "sce(a=0.1,b=1,A=-4)": _mean_of(losses.symmetric_label_cross_entropy,
                                    alpha=0.1, beta=1.0, log_zero=-4.0),
    "mae": _mean_of(losses.mean_absolute_error),
    "comp_sum(tau=0.5)": _mean_of(losses.comp_sum, tau=0.5),
    "comp_sum(tau=1.5)": _mean_of(losses.comp_sum, tau=1.5),
    "ldr_kl(c=0.1)": _mean_of(losses.ldr_kl, margin=0.1, temperature=1.0),
    "aldr_kl(c=0.1,a=2)": _aldr_kl(margin=0.1, temperature=1.0, alpha=2.0),
    "bias_loss(0.3,0.3)": _bias_loss(alpha=0.3, beta=0.3,
                                     normalization="global"),
    "reweight(linupper)": _reweighted_ce(strategy="linupper",
                                         temperature=1.0),
    "reweight(quadratic)": _reweighted_ce(strategy="quadratic",
                                          temperature=1.0),
}

NAMES = tuple(LOSSES)
