"""Adapters from the trainer's loss_fn to the DG penalty functions.

The penalty functions themselves (IRM, V-REx, CORAL, Fishr) live in
:mod:`diversity_jax.transforms` and are resolved by name (see
``experiments.algorithms``); this module only feeds each one the quantities
it needs from a stacked multi-domain batch: logits (E, B, K), labels (E, B),
per-domain mean losses (E,), head-input features (E, B, F), and per-example
gradients of the classifier head (Fishr; DomainBed computes them with BackPACK
on the last linear layer, here with ``jax.vmap(jax.grad)`` over examples).

Fishr is stateful in DomainBed: each domain's gradient variance is smoothed
by an exponential moving average across steps (``MovingAverage(ema=0.95,
oneminusema_correction=True)``, ``domainbed/lib/misc.py``). The EMA is an
explicit state here (:func:`init_state`, returned by :func:`compute`), which
the trainer carries in its ``TrainState`` (checkpointed with it).

References:
  Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021,
  ``domainbed/algorithms.py`` (IRM, VREx, CORAL, Fishr classes); Arjovsky et
  al. 2019, Eq. 5 (IRMv1); Krueger et al. 2021, Eq. 6 (V-REx); Sun & Saenko
  2016, Eq. 1 (CORAL); Rame et al. 2022, Eqs. 4-5 (Fishr).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

import diversity_jax

# Penalties that carry state across steps (an EMA needs a decay hparam).
STATEFUL = ("fishr_penalty",)


class FishrEMAState(NamedTuple):
  """DomainBed's ``MovingAverage.ema_data`` of every training domain.

  Attributes:
    ema: ``(E, P)`` f32, the (uncorrected) running average of each domain's
      per-coordinate head-gradient variance; zeros before the first update
      (DomainBed's ``previous_data = zeros_like(data)`` when ``_updates == 0``).
  """
  ema: jax.Array


def moving_average(previous, data, ema: float):
  r"""One DomainBed ``MovingAverage.update`` with ``oneminusema_correction``.

  .. math::
     m_t = \beta\, m_{t-1} + (1 - \beta)\, x_t, \qquad
     \text{value}_t = m_t / (1 - \beta), \qquad m_0 = 0

  ``m_{t-1}`` enters as a constant (DomainBed stores it detached), so
  ``d value_t / d x_t = 1`` whatever ``beta``; on the first update
  ``value_1 = x_1`` exactly.

  Args:
    previous: ``m_{t-1}`` (zeros before the first update).
    data: ``x_t``, same shape.
    ema: the decay ``beta`` in ``[0, 1)``.

  Returns:
    ``(value_t, m_t)``: the corrected average (what the penalty uses) and the
    new state.

  Example:
    >>> value, m = moving_average(jnp.zeros(2), jnp.ones(2), 0.95)

  References:
    Rame, Dancette and Cord, "Fishr: Invariant Gradient Variances for
    Out-of-Distribution Generalization", ICML 2022, Eqs. 4-5 (the variances
    it smooths; the EMA itself, ``ema=0.95``, is in the authors' code:
    ``Fishr`` in ``domainbed/algorithms.py`` and ``MovingAverage`` in
    ``domainbed/lib/misc.py``, facebookresearch/DomainBed).
  """
  previous = jax.lax.stop_gradient(jnp.asarray(previous, jnp.float32))
  data = jnp.asarray(data, jnp.float32)
  new = ema * previous + (1.0 - ema) * data
  return new / (1.0 - ema), jax.lax.stop_gradient(new)


def _head_size(head_params) -> int:
  return int(sum(jnp.size(head_params[k]) for k in ("kernel", "bias")))


def init_state(name: str, *, num_domains: int, head_params):
  """Initial state of penalty ``name``: ``()`` for a stateless one.

  Fishr: :class:`FishrEMAState` of zeros ``(num_domains, P)`` with ``P`` the
  number of head parameters (kernel then bias, as flattened by
  :func:`compute`).
  """
  if name == "fishr_penalty":
    return FishrEMAState(
        jnp.zeros((num_domains, _head_size(head_params)), jnp.float32))
  return ()


def _head_per_example_grads(head_params, features, labels, per_example_loss):
  """Per-example gradients of the loss w.r.t. the head, flattened: (E, B, P).

  For a linear head ``z = f W + b`` and loss ``l(z, y)``:
  ``g_i = [vec(f_i (dl/dz_i)^T), dl/dz_i]`` (Rame et al. 2022, Sec. 3.2: Fishr
  uses the classifier's per-example gradients).
  """

  def one(f, y):
    def loss(hp):
      logits = f @ hp["kernel"] + hp["bias"]
      return per_example_loss(logits[None], y[None])[0]
    g = jax.grad(loss)(head_params)
    return jnp.concatenate([jnp.ravel(g["kernel"]), jnp.ravel(g["bias"])])

  return jax.vmap(jax.vmap(one))(features, labels)


def compute(name: str, fn: Callable[..., Any], *, logits, labels,
            domain_losses, features, head_params, per_example_loss,
            state=(), ema: Optional[float] = None) -> Tuple[jax.Array, Any]:
  r"""Scalar penalty ``name`` (implemented by ``fn``) on a stacked batch.

  Fishr with an ``ema`` (DomainBed's default 0.95): the per-domain variances
  ``v_e`` of the head's per-example gradients (Rame et al. 2022, Eq. 4) are
  replaced by :func:`moving_average` of them before the distance (Eq. 5)::

    m_e <- ema m_e + (1 - ema) v_e;  penalty = mean_e mean_p (m_e/(1-ema) - mean_e' m_e'/(1-ema))^2

  With ``ema=None`` (or a state of ``()``) it is the stateless ``fn``.

  Args:
    name: penalty name in ``diversity_jax.transforms`` (irm_penalty,
      vrex_penalty, coral_penalty, fishr_penalty).
    fn: the resolved function.
    logits: (E, B, K); labels: (E, B); domain_losses: (E,); features:
      (E, B, F) head inputs; head_params: the ``'head'`` Dense params;
      per_example_loss: ``(logits (N, K), labels (N,)) -> (N,)``.
    state: the penalty's state from :func:`init_state` (or the previous
      call); ``()`` for a stateless penalty.
    ema: the EMA decay in ``[0, 1)`` of a stateful penalty.

  Returns:
    ``(penalty, new_state)``: the scalar penalty (IRM's per-domain values are
    averaged, as DomainBed does) and the state for the next step (``state``
    unchanged for stateless penalties).

  Example:
    >>> value, state = compute('vrex_penalty',
    ...                        diversity_jax.transforms.vrex_penalty,
    ...                        logits=None, labels=None,
    ...                        domain_losses=jnp.array([1., 2.]), features=None,
    ...                        head_params=None, per_example_loss=None)

  References:
    Arjovsky et al. 2019, Eq. 5; Krueger et al. 2021, Eq. 6; Sun & Saenko
    2016, Eq. 1; Rame et al. 2022, Eqs. 4-5 and ``Fishr`` /
    ``MovingAverage`` in DomainBed (``algorithms.py``, ``lib/misc.py``).
  """
  if name == "irm_penalty":
    return jnp.mean(fn(logits, labels)), state  # (E,) per-domain -> mean
  if name == "vrex_penalty":
    return fn(domain_losses), state
  if name == "coral_penalty":
    return fn(features), state
  if name == "fishr_penalty":
    stateful = ema is not None and isinstance(state, FishrEMAState)
    want = (jnp.shape(features)[0], _head_size(head_params))
    if stateful and tuple(state.ema.shape) != want:
      raise ValueError(
          f"penalties.compute: Fishr EMA state has shape {state.ema.shape} "
          f"but the batch gives variances of shape {want} (domains, head "
          "parameters)")
    grads = _head_per_example_grads(head_params, features, labels,
                                    per_example_loss)
    if not stateful:
      return fn(grads), state
    t = diversity_jax.transforms
    variances = t.fishr_variances(grads)                       # (E, P)
    value, new = moving_average(state.ema, variances, ema)
    return t.fishr_penalty_from_variances(value), FishrEMAState(new)
  raise ValueError(f"no adapter for penalty {name!r}")
