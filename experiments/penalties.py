"""Adapters from the trainer's loss_fn to the DG penalty functions.

The penalty functions themselves (IRM, V-REx, CORAL, Fishr) live in
:mod:`diversity_jax.transforms`; each adapter here (:func:`irm`, :func:`vrex`,
:func:`coral`, :func:`fishr`, held by the rows of
``experiments.algorithms.ALGORITHMS``) feeds one of them the quantities it
needs from a stacked multi-domain batch, gathered in :class:`Inputs`: logits
(E, B, K), labels (E, B), per-domain mean losses (E,), head-input features
(E, B, F), and per-example gradients of the classifier head (Fishr; DomainBed
computes them with BackPACK on the last linear layer, here with
``jax.vmap(jax.grad)`` over examples). Every adapter is
``penalty(inputs, state) -> (scalar, new_state)``.

Fishr is stateful in DomainBed: each domain's gradient variance is smoothed
by an exponential moving average across steps (``MovingAverage(ema=0.95,
oneminusema_correction=True)``, ``domainbed/lib/misc.py``). The EMA is an
explicit state here (:func:`fishr_init`, returned by :func:`fishr`), which
the trainer carries in its ``TrainState.extra`` (checkpointed with it).

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



class Inputs(NamedTuple):
  """What a penalty adapter may read from a stacked multi-domain batch.

  Attributes:
    logits: (E, B, K).
    labels: (E, B) int.
    domain_losses: (E,) per-domain mean losses.
    features: (E, B, F) inputs of the classifier head.
    head_params: the ``'head'`` Dense params (``kernel`` (F, K), ``bias``).
    per_example_loss: ``(logits (N, K), labels (N,)) -> (N,)``.
  """
  logits: Any
  labels: Any
  domain_losses: Any
  features: Any
  head_params: Any
  per_example_loss: Callable[..., Any]


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


def fishr_init(*, num_domains: int, head_params) -> FishrEMAState:
  """Fishr's initial EMA state: zeros ``(num_domains, P)``.

  ``P`` is the number of head parameters (kernel then bias, as flattened by
  :func:`fishr`).
  """
  return FishrEMAState(
      jnp.zeros((num_domains, _head_size(head_params)), jnp.float32))


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


def irm(inputs: Inputs, state=()) -> Tuple[jax.Array, Any]:
  """IRMv1 (Arjovsky et al. 2019, Eq. 5): per-domain penalties, averaged.

  Example:
    >>> value, _ = irm(Inputs(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3), int),
    ...                       None, None, None, None))
  """
  t = diversity_jax.transforms
  return jnp.mean(t.irm_penalty(inputs.logits, inputs.labels)), state


def vrex(inputs: Inputs, state=()) -> Tuple[jax.Array, Any]:
  """V-REx (Krueger et al. 2021, Eq. 6): variance of the domain risks.

  Example:
    >>> value, _ = vrex(Inputs(None, None, jnp.array([1., 2.]), None, None,
    ...                        None))
  """
  return diversity_jax.transforms.vrex_penalty(inputs.domain_losses), state


def coral(inputs: Inputs, state=()) -> Tuple[jax.Array, Any]:
  """CORAL (Sun & Saenko 2016, Eq. 1) on the head-input features.

  Example:
    >>> value, _ = coral(Inputs(None, None, None, jnp.ones((2, 3, 4)), None,
    ...                         None))
  """
  return diversity_jax.transforms.coral_penalty(inputs.features), state


def fishr(inputs: Inputs, state=(), *,
          ema: Optional[float] = None) -> Tuple[jax.Array, Any]:
  r"""Fishr (Rame et al. 2022, Eqs. 4-5), with DomainBed's EMA.

  With an ``ema`` (DomainBed's default 0.95) and a :class:`FishrEMAState`,
  the per-domain variances ``v_e`` of the head's per-example gradients
  (Eq. 4) are replaced by :func:`moving_average` of them before the distance
  (Eq. 5)::

    m_e <- ema m_e + (1 - ema) v_e;  penalty = mean_e mean_p (m_e/(1-ema) - mean_e' m_e'/(1-ema))^2

  With ``ema=None`` (or a state of ``()``) it is the stateless penalty.

  Args:
    inputs: the batch's :class:`Inputs` (``features``, ``labels``,
      ``head_params`` and ``per_example_loss`` are read).
    state: :func:`fishr_init`'s state (or the previous call's), or ``()``.
    ema: the EMA decay in ``[0, 1)``.

  Returns:
    ``(penalty, new_state)`` (``state`` unchanged when stateless).

  Example:
    >>> import optax
    >>> head = {'kernel': jnp.ones((4, 3)), 'bias': jnp.zeros(3)}
    >>> value, state = fishr(
    ...     Inputs(None, jnp.zeros((2, 5), int), None, jnp.ones((2, 5, 4)),
    ...            head, optax.softmax_cross_entropy_with_integer_labels),
    ...     fishr_init(num_domains=2, head_params=head), ema=0.95)

  References:
    Rame et al. 2022, Eqs. 4-5; ``Fishr`` / ``MovingAverage`` in DomainBed
    (``algorithms.py``, ``lib/misc.py``).
  """
  t = diversity_jax.transforms
  stateful = ema is not None and isinstance(state, FishrEMAState)
  want = (jnp.shape(inputs.features)[0], _head_size(inputs.head_params))
  if stateful and tuple(state.ema.shape) != want:
    raise ValueError(
        f"penalties.fishr: Fishr EMA state has shape {state.ema.shape} "
        f"but the batch gives variances of shape {want} (domains, head "
        "parameters)")
  grads = _head_per_example_grads(inputs.head_params, inputs.features,
                                  inputs.labels, inputs.per_example_loss)
  if not stateful:
    return t.fishr_penalty(grads), state
  variances = t.fishr_variances(grads)                       # (E, P)
  value, new = moving_average(state.ema, variances, ema)
  return t.fishr_penalty_from_variances(value), FishrEMAState(new)
