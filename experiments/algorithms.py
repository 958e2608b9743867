"""The algorithm table: algorithm name -> (training rule, DG penalty).

An algorithm is a training rule factory of :mod:`diversity_jax.transforms`
(chained in front of the base optimizer, ``optax.chain(rule, optimizer)``)
and/or a domain-generalization penalty adapter of
:mod:`experiments.penalties` added to the loss inside ``loss_fn``. Rows hold
the callables themselves.

Each algorithm's hyperparameters are the sub-dict ``config.hparams.<name>``
(DomainBed-style, overridable with ``--config.hparams.<name>.<key>=...``),
and each key is the keyword of the callable that takes it: a rule's
``config.hparams.sam.rho`` is ``transforms.sam(rho=...)``. A penalty reads
``weight`` and ``anneal_steps`` (the loss's warm-up, :data:`PENALTY_KEYS`);
its other keys are the adapter's keywords (``config.hparams.fishr.ema`` is
``penalties.fishr(..., ema=...)``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import optax

from diversity_jax import transforms
from experiments import penalties

# The loss's keys of a penalty's hparams (the rest go to the adapter).
PENALTY_KEYS = ("weight", "anneal_steps")
# What a run can give a rule factory that asks for it (``Algorithm.context``).
CONTEXT_KEYS = ("num_examples", "num_classes", "steps_per_epoch", "head",
                "learning_rate")


@dataclasses.dataclass(frozen=True)
class Algorithm:
  """One row of the table.

  Attributes:
    rule: a rule factory of :mod:`diversity_jax.transforms`, or None (plain
      optimizer). Called as ``rule(**static, **context, **hparams)``.
    static: fixed factory keywords (e.g. ``method='hgp'``).
    context: factory keywords the run supplies (:data:`CONTEXT_KEYS`:
      ``num_examples``, ``num_classes``, ``steps_per_epoch``, ``head='head'``,
      ``learning_rate``).
    penalty: an adapter of :mod:`experiments.penalties`
      (``penalty(inputs, state, **kw) -> (scalar, state)``), or None.
    penalty_init: ``(num_domains=, head_params=) -> state`` of a stateful
      penalty (Fishr's EMA), or None for a stateless one.
    warmup_weight: penalty weight before ``anneal_steps`` (DomainBed
      ``algorithms.py``: IRM and VREx use 1 during warm-up, Fishr 0); from
      that step on it is ``weight``. As in DomainBed, the optimizer is
      re-created (its state reset to a fresh ``init``) at that step when it
      is > 0, see :func:`reset_optimizer_at`
      (``config.reset_optimizer_at_anneal``).
    every_k: the rule is SAM-family, so ``config.every_k.k > 1`` may run it
      every k steps (:func:`diversity_jax.transforms.every_k_steps`).
  """
  rule: Optional[Callable[..., optax.GradientTransformation]] = None
  static: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  context: Tuple[str, ...] = ()
  penalty: Optional[Callable[..., Any]] = None
  penalty_init: Optional[Callable[..., Any]] = None
  warmup_weight: float = 1.0
  every_k: bool = False


ALGORITHMS: Mapping[str, Algorithm] = {
    "erm": Algorithm(),
    "sam": Algorithm(rule=transforms.sam, every_k=True),
    # GSAM with the run's (constant) learning rate: rho_t = rho_max.
    "gsam": Algorithm(rule=transforms.gsam, context=("learning_rate",),
                      every_k=True),
    "udim": Algorithm(rule=transforms.udim, context=("head",)),
    "saf": Algorithm(rule=transforms.saf,
                     context=("num_examples", "num_classes",
                              "steps_per_epoch")),
    "mesa": Algorithm(rule=transforms.mesa, context=("steps_per_epoch",)),
    "gnp": Algorithm(rule=transforms.gradient_norm_penalty, every_k=True),
    "hgp": Algorithm(rule=transforms.hessian_alignment,
                     static={"method": "hgp"}, context=("head",)),
    "hutchinson": Algorithm(rule=transforms.hessian_alignment,
                            static={"method": "hutchinson"},
                            context=("head",)),
    "irm": Algorithm(penalty=penalties.irm),
    "vrex": Algorithm(penalty=penalties.vrex),
    "coral": Algorithm(penalty=penalties.coral),
    # Fishr with DomainBed's EMA (0.95) of the per-domain variances.
    "fishr": Algorithm(penalty=penalties.fishr,
                       penalty_init=penalties.fishr_init, warmup_weight=0.0),
}

ALGORITHM_NAMES = tuple(ALGORITHMS)


def hparams_of(config) -> dict:
  """``config.hparams.<config.algorithm>`` as a plain dict ({} if absent)."""
  sub = config.hparams.get(config.algorithm)
  return dict(sub) if sub is not None else {}


def build_rule(algo: Algorithm, hparams: Mapping[str, Any],
               context: Mapping[str, Any], every_k=None):
  """The algorithm's rule (None for plain training), built once.

  Args:
    algo: the table row.
    hparams: ``config.hparams.<name>``.
    context: values for :data:`CONTEXT_KEYS` (only ``algo.context`` is read).
    every_k: ``config.every_k`` (``k``, ``between``, ``alpha``): with
      ``k > 1`` the rule runs every ``k`` steps.

  Returns:
    An ``optax.GradientTransformationExtraArgs`` or None.
  """
  if algo.rule is None:
    return None
  kwargs = {**algo.static, **{k: context[k] for k in algo.context},
            **hparams}
  rule = algo.rule(**kwargs)
  if every_k is not None and every_k["k"] > 1:
    rule = transforms.every_k_steps(rule, every_k["k"],
                                    between=every_k["between"],
                                    alpha=every_k["alpha"])
  return rule


def penalty_schedule(algo: Algorithm, hparams: Mapping[str, Any]):
  """(weight, anneal_steps, adapter keywords) of the algorithm's penalty."""
  if algo.penalty is None:
    return 0.0, 0, {}
  kwargs = {k: v for k, v in hparams.items() if k not in PENALTY_KEYS}
  return (float(hparams["weight"]), int(hparams.get("anneal_steps", 0)),
          kwargs)


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
