"""The algorithm table: algorithm name -> (training rule, DG penalty).

An algorithm is a training rule from :mod:`diversity_jax.transforms` (chained
in front of the base optimizer, ``optax.chain(rule, optimizer)``) and/or a
domain-generalization penalty from :mod:`diversity_jax.transforms` added to
the loss inside ``loss_fn``. Names are resolved at config-validation time
against each subpackage's ``__all__``, so a rule that does not exist fails with
a message listing the valid choices, before anything is compiled.

``hparams`` maps factory keyword -> key of ``config.hparams`` (DomainBed-style
flat hyperparameters, overridable with ``--config.hparams.<key>=...``).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Mapping, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

import diversity_jax


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One row of the table.

  Attributes:
    transform: factory name in ``diversity_jax.transforms`` or None (plain
      optimizer).
    hparams: factory keyword -> ``config.hparams`` key.
    static: fixed factory keywords (e.g. ``method='hgp'``).
    penalty: penalty function name in ``diversity_jax.transforms`` or None.
    penalty_weight: ``config.hparams`` key of the penalty weight.
    penalty_anneal: ``config.hparams`` key of the warm-up length: the weight
      is ``warmup_weight`` before that step and ``penalty_weight`` from it on
      (DomainBed ``algorithms.py``: IRM and VREx use 1 during warm-up, Fishr
      0). As in DomainBed, the optimizer is re-created (its state reset to a
      fresh ``init``) at that step when it is > 0, see
      :func:`reset_optimizer_at` (``config.reset_optimizer_at_anneal``).
    warmup_weight: penalty weight during the warm-up.
    penalty_ema: ``config.hparams`` key of the EMA decay of a stateful
      penalty (Fishr's per-domain gradient variances, DomainBed ``ema``), or
      None for a stateless one.
  """
  transform: Optional[str] = None
  hparams: Mapping[str, str] = dataclasses.field(default_factory=dict)
  static: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  penalty: Optional[str] = None
  penalty_weight: Optional[str] = None
  penalty_anneal: Optional[str] = None
  warmup_weight: float = 1.0
  penalty_ema: Optional[str] = None


ALGORITHMS: Mapping[str, Algorithm] = {
    "erm": Algorithm(),
    "sam": Algorithm(transform="sam", hparams={"rho": "sam_rho"}),
    "udim": Algorithm(transform="udim",
                      hparams={"rho": "udim_rho", "input_rho": "udim_input_rho",
                               "inconsistency_weight": "udim_lambda"}),
    "saf": Algorithm(transform="saf",
                     hparams={"lam": "saf_lambda", "temperature": "saf_tau"}),
    "mesa": Algorithm(transform="mesa",
                      hparams={"lam": "mesa_lambda", "decay": "mesa_decay"}),
    "gnp": Algorithm(transform="gradient_norm_penalty",
                     hparams={"lam": "gnp_lambda"}),
    "hgp": Algorithm(transform="hessian_alignment", static={"method": "hgp"},
                     hparams={"hessian_weight": "hgp_hessian_weight",
                              "grad_weight": "hgp_grad_weight"}),
    "hutchinson": Algorithm(transform="hessian_alignment",
                            static={"method": "hutchinson"},
                            hparams={"hessian_weight":
                                         "hutchinson_hessian_weight",
                                     "grad_weight": "hgp_grad_weight",
                                     "num_probes": "hutchinson_num_probes"}),
    "irm": Algorithm(penalty="irm_penalty", penalty_weight="irm_lambda",
                     penalty_anneal="irm_anneal_steps"),
    "vrex": Algorithm(penalty="vrex_penalty", penalty_weight="vrex_lambda",
                      penalty_anneal="vrex_anneal_steps"),
    "coral": Algorithm(penalty="coral_penalty", penalty_weight="coral_gamma"),
    # Fishr with DomainBed's EMA (0.95) of the per-domain variances.
    "fishr": Algorithm(penalty="fishr_penalty", penalty_weight="fishr_lambda",
                       penalty_anneal="fishr_anneal_steps",
                       warmup_weight=0.0, penalty_ema="fishr_ema"),
}

ALGORITHM_NAMES = tuple(ALGORITHMS)

# Keywords the trainer can supply to a factory that asks for them.
_CONTEXT_KWARGS = ("num_examples", "num_classes", "steps_per_epoch", "head")


def _public(module, name: str, field: str, kind: str):
  names = list(getattr(module, "__all__", ()))
  if name not in names:
    raise ValueError(
        f"{field}: {kind} {name!r} is not in {module.__name__}.__all__; valid "
        f"choices: {sorted(names) or '(none available yet)'}")
  return getattr(module, name)


def get_algorithm(name: str) -> Algorithm:
  if name not in ALGORITHMS:
    raise ValueError(f"config.algorithm: unknown algorithm {name!r}; valid "
                     f"choices: {list(ALGORITHM_NAMES)}")
  return ALGORITHMS[name]


def hparam_keys(name: str) -> tuple:
  """The ``config.hparams`` keys that algorithm ``name`` reads."""
  algo = get_algorithm(name)
  return tuple(algo.hparams.values()) + tuple(
      k for k in (algo.penalty_weight, algo.penalty_anneal, algo.penalty_ema)
      if k)


def hparam_users(key: str) -> list:
  """The algorithms that read ``config.hparams.<key>`` (table order)."""
  return [name for name in ALGORITHM_NAMES if key in hparam_keys(name)]


def resolve_transform_factory(algo_name: str) -> Optional[Callable[..., Any]]:
  """The rule factory of ``algo_name`` (None for plain ERM-style training)."""
  algo = get_algorithm(algo_name)
  if algo.transform is None:
    return None
  return _public(diversity_jax.transforms, algo.transform,
                 f"config.algorithm={algo_name!r}", "training rule")


def resolve_penalty(algo_name: str) -> Optional[Callable[..., Any]]:
  algo = get_algorithm(algo_name)
  if algo.penalty is None:
    return None
  return _public(diversity_jax.transforms, algo.penalty,
                 f"config.algorithm={algo_name!r}", "penalty function")


def transform_kwargs(algo_name: str, hparams: Mapping[str, Any],
                     context: Mapping[str, Any]) -> dict:
  """Keyword arguments for the rule factory of ``algo_name``.

  ``context`` holds what only the trainer knows (``num_examples``,
  ``head_params`` selector, ...); an entry is passed only if the factory's
  signature accepts it.
  """
  algo = get_algorithm(algo_name)
  factory = resolve_transform_factory(algo_name)
  kwargs = dict(algo.static)
  for kw, key in algo.hparams.items():
    kwargs[kw] = hparams[key]
  if factory is not None:
    params = inspect.signature(factory).parameters
    has_var_kw = any(p.kind is p.VAR_KEYWORD for p in params.values())
    for kw in _CONTEXT_KWARGS:
      if kw in context and (kw in params or has_var_kw) and kw not in kwargs:
        kwargs[kw] = context[kw]
  return kwargs


def penalty_hparams(algo_name: str, hparams: Mapping[str, Any]):
  """(weight, anneal_steps) of the algorithm's penalty (anneal 0: none)."""
  algo = get_algorithm(algo_name)
  weight = float(hparams[algo.penalty_weight]) if algo.penalty_weight else 0.0
  anneal = int(hparams[algo.penalty_anneal]) if algo.penalty_anneal else 0
  return weight, anneal


def penalty_ema(algo_name: str, hparams: Mapping[str, Any]) -> Optional[float]:
  """EMA decay of the algorithm's stateful penalty, or None (stateless)."""
  algo = get_algorithm(algo_name)
  return float(hparams[algo.penalty_ema]) if algo.penalty_ema else None


class ResetState(NamedTuple):
  """State of :func:`reset_optimizer_at`.

  Attributes:
    count: number of updates applied so far (int32), checkpointed with the
      rest of the state so a resumed run resets at the same step.
    inner_state: the wrapped optimizer's state.
  """
  count: jax.Array
  inner_state: Any


def reset_optimizer_at(inner: optax.GradientTransformation,
                       reset_step: int) -> optax.GradientTransformationExtraArgs:
  r"""Re-creates ``inner`` (fresh ``init`` state) at update ``reset_step``.

  DomainBed's IRM, VREx and Fishr build a new ``torch.optim.Adam`` when
  ``update_count == penalty_anneal_iters``, just before that update's
  ``optimizer.step()`` ("Reset Adam, because it doesn't like the sharp jump
  in gradient magnitudes that happens at this step"). The new Adam starts
  with zero moments and step 0, so its bias correction restarts too. Here,
  with ``t`` the number of updates applied before the current one::

    s_in = inner.init(params) if t == reset_step else s_{t}
    u_t, s_{t+1} = inner.update(g_t, s_in, params)

  so the update of step ``reset_step`` is the first update of a fresh
  optimizer. The choice is a ``jnp.where`` over the state tree keyed on a
  counter kept in the state: one trace, no retrace, resume-safe.

  Args:
    inner: the optimizer to reset (e.g. ``optax.adam(lr)``).
    reset_step: the 0-based update index at which the state is reset; ``0``
      is a no-op (the state is fresh then anyway).

  Returns:
    An ``optax.GradientTransformationExtraArgs`` with state
    :class:`ResetState`; extra arguments are passed on to ``inner``.

  Example:
    >>> tx = reset_optimizer_at(optax.adam(1e-3), 500)
    >>> state = tx.init({'w': jnp.zeros(3)})

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021, ``domainbed/algorithms.py`` (``IRM.update``, ``VREx.update``,
    ``Fishr.update``); Arjovsky et al. 2019, Sec. 5 / Eq. 5 (IRMv1 penalty
    annealing).
  """
  if isinstance(reset_step, bool) or not isinstance(reset_step, int) or (
      reset_step < 0):
    raise ValueError("reset_optimizer_at: `reset_step` must be an int >= 0, "
                     f"got {reset_step!r}")
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    return ResetState(jnp.zeros([], jnp.int32), inner.init(params))

  def update_fn(updates, state, params=None, **extra_args):
    fresh = inner.init(params if params is not None else updates)
    reset = state.count == reset_step
    inner_state = jax.tree.map(lambda f, s: jnp.where(reset, f, s), fresh,
                               state.inner_state)
    updates, inner_state = inner.update(updates, inner_state, params,
                                        **extra_args)
    return updates, ResetState(optax.safe_int32_increment(state.count),
                               inner_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
