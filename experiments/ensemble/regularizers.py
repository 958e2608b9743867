r"""The diversity regularizers of the ensemble study, by name.

Each row of ``REGULARIZERS`` holds the penalty (a callable on the step's
``Context``, to be *minimized*) and its hyperparameters with their defaults;
``configs/ensemble.py`` has one sub-dict per row,
``config.diversity.<name>.<hparam>`` (``weight`` plus the row's own), so each
hyperparameter has exactly one name. The training objective of the stacked
members is

.. math::

  L = M \Big( \frac1M \sum_{m=1}^{M} \mathrm{CE}_m + w\, R \Big),

(the factor ``M`` keeps every member's cross-entropy gradient equal to its
own training's), where ``R`` is the row's penalty. Every penalty calls
:mod:`diversity_jax.diversity`; diversity measures enter negated (maximized).
``pairwise_disagreement`` is piecewise constant (zero gradient): it is a
reported measure, not a regularizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, NamedTuple

import jax
import jax.numpy as jnp

from diversity_jax import diversity


class Context(NamedTuple):
  """What a penalty may read in one step (members stacked on axis 0).

  Attributes:
    logits: ``(M, N, K)`` member logits on the batch.
    features: ``(M, N, D)`` member penultimate features.
    labels: ``(N,)`` integer labels.
    inputs: ``(N, ...)`` batch inputs.
    params: stacked member params (leading axis ``M``).
    init_params: the members' params at the start of training (stacked).
    apply_fn: ``apply_fn(member_params, x) -> logits``.
    feature_fn: ``feature_fn(member_params, x) -> features``.
  """
  logits: jax.Array
  features: jax.Array
  labels: jax.Array
  inputs: jax.Array
  params: Any
  init_params: Any
  apply_fn: Callable
  feature_fn: Callable


@dataclasses.dataclass(frozen=True)
class Regularizer:
  """A penalty ``penalty(ctx, **hparams) -> scalar`` and its defaults.

  ``weight`` (the ``w`` of the objective) is every row's first hparam.
  """
  penalty: Callable[..., jax.Array]
  hparams: Dict[str, Any]
  reference: str


def _none(ctx: Context) -> jax.Array:
  return jnp.zeros((), jnp.float32)


def _pairwise_kl(ctx: Context) -> jax.Array:
  return -jnp.mean(diversity.pairwise_kl_divergence(ctx.logits))


def _pairwise_js(ctx: Context) -> jax.Array:
  return -jnp.mean(diversity.pairwise_js_divergence(ctx.logits))


def _ambiguity(ctx: Context) -> jax.Array:
  return -jnp.mean(diversity.ensemble_ambiguity(ctx.logits, ctx.labels))


def _per_example_vendi(stacked: jax.Array, q) -> jax.Array:
  """Mean over examples of the Vendi score of the M members' vectors."""
  score = jax.vmap(lambda v: diversity.vendi_score_from_features(v, q=q),
                   in_axes=1)
  return jnp.mean(score(stacked))


def _vendi_predictions(ctx: Context, q: float) -> jax.Array:
  return -_per_example_vendi(jax.nn.softmax(ctx.logits, axis=-1), q)


def _vendi_features(ctx: Context, q: float) -> jax.Array:
  return -_per_example_vendi(ctx.features, q)


def _feature_cosine(ctx: Context) -> jax.Array:
  return diversity.prompt_cosine_diversity(ctx.features)


def _orthogonal_updates(ctx: Context) -> jax.Array:
  """PEGO's mutual term on the members' head updates ``W_m - W_m^init``."""
  delta = ctx.params["head"]["kernel"] - ctx.init_params["head"]["kernel"]
  return diversity.pego_orthogonality(jnp.swapaxes(delta, 1, 2))


def _dverge(ctx: Context, epsilon: float, step_size: float, num_steps: int,
            momentum: float) -> jax.Array:
  """Mean over members i and examples of the DVERGE cross-training CE.

  Sources ``x_s`` are the batch shifted by one example (another digit of,
  usually, another class), as DVERGE draws a random source batch.
  """
  sources = jnp.roll(ctx.inputs, 1, axis=0)
  distill = lambda p: diversity.feature_distillation(
      ctx.feature_fn, p, ctx.inputs, sources, epsilon=epsilon,
      step_size=step_size, num_steps=num_steps, momentum=momentum)
  distilled = jax.vmap(distill)(ctx.params)                 # (M, N, ...)
  cross = diversity.dverge_cross_entropy(ctx.apply_fn, ctx.params, distilled,
                                         ctx.labels)        # (M, N)
  m = ctx.logits.shape[0]
  return jnp.mean(cross) / max(m - 1, 1)


REGULARIZERS: Dict[str, Regularizer] = {
    "none": Regularizer(_none, {"weight": 0.0},
                        "Lakshminarayanan et al. 2017 (independent members)"),
    "pairwise_kl": Regularizer(
        _pairwise_kl, {"weight": 0.05},
        "Abe et al. 2023, Sec. 2 (pairwise KL)"),
    "pairwise_js": Regularizer(
        _pairwise_js, {"weight": 0.5},
        "Abe et al. 2023, Sec. 2 (pairwise JS)"),
    "ambiguity": Regularizer(
        _ambiguity, {"weight": 0.5},
        "Krogh & Vedelsby 1994; Abe et al. 2023; Jeffares et al. 2023"),
    "vendi_predictions": Regularizer(
        _vendi_predictions, {"weight": 0.1, "q": 1.0},
        "Friedman & Dieng 2023 (Vendi of member predictions)"),
    "vendi_features": Regularizer(
        _vendi_features, {"weight": 0.1, "q": 1.0},
        "Friedman & Dieng 2023 (Vendi of member features)"),
    "feature_cosine": Regularizer(
        _feature_cosine, {"weight": 0.1},
        "MSGCoOp 2025 (mean squared cosine between members' features)"),
    "orthogonal_updates": Regularizer(
        _orthogonal_updates, {"weight": 1e-3},
        "Hu et al. 2024, PEGO (mutual orthogonality of updates)"),
    "dverge": Regularizer(
        _dverge, {"weight": 1.0, "epsilon": 0.07, "step_size": 0.007,
                  "num_steps": 10, "momentum": 1.0},
        "Yang et al. 2020, DVERGE (feature distillation, cross-training)"),
}

NAMES = tuple(REGULARIZERS)


def penalty_fn(name: str, hparams: Dict[str, Any]):
  """``(weight, penalty(ctx) -> scalar)`` of row ``name`` with ``hparams``."""
  row = REGULARIZERS[name]
  kwargs = {k: hparams.get(k, v) for k, v in row.hparams.items()}
  weight = float(kwargs.pop("weight"))
  return weight, lambda ctx: row.penalty(ctx, **kwargs)
