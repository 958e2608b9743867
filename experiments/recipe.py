"""A recipe: everything one training run needs, built once before compiling.

A study (``experiments/studies/<task>.py``) builds one :class:`Recipe` per
run from the config and the loaded data, and hands it to
``experiments.trainer.train_one``, which knows nothing about the study: it
initializes ``(params, extra)``, jit-compiles one train step::

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
      params, batch, step, extra)
  updates, opt_state = tx.update(grads, opt_state, params,
                                 loss_fn=<loss_fn at (step, extra)>,
                                 batch=batch, key=fold_in(base_key, step))
  params = optax.apply_updates(params, updates)
  extra = aux.get('extra', extra)

logs ``loss``, ``aux['metrics']`` and the gradient / parameter / update
norms (plus the scalars a rule keeps in its state: ``sharpness``,
``penalty``, ``inconsistency``), evaluates every ``eval_every`` steps, keeps
the step that maximises ``evaluate(params)[select]``, checkpoints and
resumes bit-identically.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional, Tuple

import jax
import optax


@dataclasses.dataclass(frozen=True)
class Recipe:
  """One run's model, loss, optimizer, data and evaluation (all callables).

  Attributes:
    init: ``key -> (params, extra)``: the initial parameters and the
      initial extra state (a pytree of arrays carried across steps and
      checkpointed: Fishr's EMA, an ensemble's buffers; ``()`` for none).
    loss_fn: ``(params, batch, step, extra) -> (loss, aux)``: the scalar
      training loss (loss, penalties, regularizers). ``aux`` is a dict: its
      ``'metrics'`` (a dict of scalars) are logged every step, its
      ``'extra'`` is the next extra state (absent: unchanged), and it holds
      what a rule of ``tx`` reads (``'logits'``, ``'per_example_loss'``; see
      :mod:`diversity_jax.transforms`). Rules call it again with their own
      params (SAM's perturbed pass) and, for multi-domain rules, one domain's
      batch; it must accept both.
    tx: the gradient transformation chain (rule + optimizer), called with
      the extra arguments ``loss_fn``, ``batch`` and ``key``.
    batches: ``step -> batch``: host arrays, a pure function of the step
      (resume is bit-identical); every leaf is ``(E, B, ...)`` (``E`` groups,
      e.g. training domains, ``E = 1`` for one), sharded over ``B``.
    evaluate: ``params -> {name: float}``, the eval metrics (host floats),
      logged under ``split='eval'`` and kept in the run's records.
    select: the ``evaluate`` key whose maximum picks the reported step (the
      first of equal values), or None for the last step.
    report: ``(best_record, last_record) -> dict``: what the run reports
      (``result.json``, the study's table) from two eval records
      (``{'step': ..., **evaluate(params)}``).
    name: shown by the progress bar (``'erm test=d0'``).
    describe: names the run in an error (``"algorithm 'erm', learning_rate
      0.001"``).
    hint: the advice appended to a non-finite loss error.
  """
  init: Callable[[jax.Array], Tuple[Any, Any]]
  loss_fn: Callable[..., Tuple[jax.Array, Dict[str, Any]]]
  tx: optax.GradientTransformationExtraArgs
  batches: Callable[[int], Any]
  evaluate: Callable[[Any], Dict[str, float]]
  report: Callable[[dict, dict], Dict[str, Any]]
  select: Optional[str] = None
  name: str = ""
  describe: str = ""
  hint: str = "Lower config.learning_rate or the algorithm's hparams."
