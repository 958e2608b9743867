"""The domain-generalization recipe: one held-out domain, DomainBed protocol.

:func:`build_recipe` builds, once per run, everything a run trains from the
config and the loaded dataset: the training domains' batches, the model, the
loss (per-example loss of ``config.loss`` averaged per domain, plus the
algorithm's penalty with its warm-up), the chain ``optax.chain(rule,
optimizer)``, the initial extra state (a stateful penalty's) and the eval
metrics (accuracy on every training domain's held-out split, ``val_acc``
their mean, and the test domain's ``test_in`` / ``test_out`` splits).

References:
  Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
  2021, Sec. 4 and DomainBed's ``algorithms.py`` (ERM, IRM, VREx, CORAL,
  Fishr updates), ``lib/misc.py`` (``split_dataset``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import algorithms
from experiments import evaluation
from experiments import losses
from experiments import models
from experiments import penalties
from experiments.recipe import Recipe


def load_dataset(config):
  """``diversity_jax.data.load`` of ``config.dataset`` (cheap, no compile)."""
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  kwargs = {"download": True} if config.get("download", False) else {}
  if config.dataset.startswith("tfds:"):
    kwargs["streaming"] = config.get("streaming", "auto")
    kwargs["image_size"] = config.get("image_size", 0)
  return data.load(config.dataset, data_dir=config.data_dir or None, **kwargs)


def splits(config, ds, test_domain: Optional[str], exclude: Sequence[str] = ()):
  """(train_in per train domain, val per train domain, test_in, test_out).

  Every domain is split in / out (``holdout_fraction`` out) with seed
  ``config.seed + i`` (``i`` its index), whichever domains are held out.
  Domains in ``exclude`` are neither trained on nor evaluated. Each part is
  an ``(x, y)`` pair, or a lazily read source when ``ds`` streams.
  """
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  train_in, val = {}, {}
  test_in = test_out = None
  for i, domain in enumerate(ds.domains):
    if domain in exclude:
      continue
    if ds.streaming:
      src = ds.source(domain)
      in_idx, out_idx = data.holdout_indices(
          len(src), holdout_fraction=config.holdout_fraction,
          seed=config.seed + i)
      inn, out = src.subset(in_idx), src.subset(out_idx)
    else:
      x, y = ds.arrays(domain)
      inn, out = data.split_holdout(
          x, y, holdout_fraction=config.holdout_fraction, seed=config.seed + i)
    if domain == test_domain:
      test_in, test_out = inn, out
    else:
      train_in[domain], val[domain] = inn, out
  if test_domain is None:  # single-domain dataset: test on its held-out split
    (domain,) = ds.domains
    test_in = test_out = val[domain]
  return train_in, val, test_in, test_out


def base_optimizer(config) -> optax.GradientTransformation:
  """``config.optimizer`` with ``learning_rate`` and ``weight_decay``."""
  lr, wd = config.learning_rate, config.weight_decay
  if config.optimizer == "adam":
    opt = optax.adam(lr)
    return optax.chain(optax.add_decayed_weights(wd), opt) if wd else opt
  if config.optimizer == "adamw":
    return optax.adamw(lr, weight_decay=wd)
  momentum = 0.9 if config.optimizer == "momentum" else None
  opt = optax.sgd(lr, momentum=momentum)
  return optax.chain(optax.add_decayed_weights(wd), opt) if wd else opt


def make_optimizer(config, anneal_steps: int) -> optax.GradientTransformation:
  """The base optimizer; re-created at the end of a penalty warm-up.

  DomainBed's IRM / VREx / Fishr build a fresh Adam at update
  ``penalty_anneal_iters`` (> 0); here ``algorithms.reset_optimizer_at``
  does it inside the jitted step (``config.reset_optimizer_at_anneal``,
  default True).
  """
  opt = base_optimizer(config)
  if anneal_steps > 0 and config.get("reset_optimizer_at_anneal", True):
    opt = algorithms.reset_optimizer_at(opt, anneal_steps)
  return opt


def make_loss_fn(model, per_example_loss, algo: algorithms.Algorithm,
                 hparams):
  """``loss_fn(params, batch, step, extra=()) -> (loss, aux)``.

  ``batch['x']`` is (E, B, ...) and ``batch['y']`` (E, B); a rule that vmaps
  over the domain axis calls it with (B, ...) / (B,) and gets a single-domain
  loss. The DG penalty (if any) is added with DomainBed's warm-up::

    loss = mean_e R_e + w(step) * penalty,
    w(step) = warmup_weight if step < anneal_steps else weight

  A stateful penalty (Fishr's EMA) reads ``extra`` and returns the next one
  in ``aux['extra']``; a single-domain call uses the stateless penalty.
  ``aux['metrics']`` holds the batch accuracy (and the penalty).

  Example:
    >>> loss_fn = make_loss_fn(model, optax.softmax_cross_entropy_with_integer_labels,
    ...                        algorithms.ALGORITHMS['erm'], {})
    >>> loss, aux = loss_fn(params, {'x': x, 'y': y}, step=0)

  References:
    Gulrajani & Lopez-Paz, "In Search of Lost Domain Generalization", ICLR
    2021 (DomainBed ``algorithms.py``: ERM, IRM, VREx, CORAL, Fishr updates).
  """
  weight, anneal, penalty_kwargs = algorithms.penalty_schedule(algo, hparams)

  def loss_fn(params, batch, step, extra=()):
    x, y = batch["x"], batch["y"]
    single = y.ndim == 1
    if single:
      x, y = x[None], y[None]
    e, b = y.shape
    flat = jnp.reshape(x, (e * b,) + x.shape[2:])
    logits, features = model.apply({"params": params}, flat,
                                   return_features=True)
    k = logits.shape[-1]
    pel = per_example_loss(logits, jnp.reshape(y, (e * b,)))
    pel = jnp.reshape(pel, (e, b))
    logits = jnp.reshape(logits, (e, b, k))
    domain_losses = jnp.mean(pel, axis=1)
    loss = jnp.mean(domain_losses)
    metrics = {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
    aux = {"logits": logits, "per_example_loss": pel,
           "domain_losses": domain_losses, "metrics": metrics}
    if algo.penalty is not None:
      inputs = penalties.Inputs(
          logits, y, domain_losses, jnp.reshape(features, (e, b, -1)),
          params["head"], per_example_loss)
      value, new_extra = algo.penalty(inputs, () if single else extra,
                                      **penalty_kwargs)
      w = jnp.where(step >= anneal, weight, algo.warmup_weight)
      loss = loss + w * value
      metrics["penalty"] = value
      aux["extra"] = extra if single else new_extra
    if single:
      aux.update(logits=logits[0], per_example_loss=pel[0])
    return loss, aux

  return loss_fn


def build_recipe(config, ds, test_domain: Optional[str], mesh, *,
                 exclude: Sequence[str] = ()) -> Recipe:
  """The run with ``test_domain`` held out (and ``exclude`` left out).

  Args:
    config: a validated DG config.
    ds: the loaded ``diversity_jax.data.Dataset``.
    test_domain: the held-out domain, or None for a one-domain dataset
      (then its held-out split is the test set).
    mesh: the data-parallel mesh (eval sets are placed on it).
    exclude: domains neither trained on nor evaluated (the other held-out
      domain of a leave-one-domain-out cross-validation run).

  Returns:
    A :class:`~experiments.recipe.Recipe` whose eval records hold
    ``val/<domain>`` per training domain, ``val_acc`` (their mean),
    ``test_in`` and ``test_out``, and whose report is ``val_acc``,
    ``test_acc`` (``test_in`` at the step of best ``val_acc``) and
    ``last_test_acc``.

  Example:
    >>> recipe = build_recipe(config, data.load('mock'), 'd0', mesh)
  """
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  train_in, val, test_in, test_out = splits(config, ds, test_domain, exclude)
  train_domains = list(train_in)
  num_examples = sum(len(part if ds.streaming else part[1])
                     for part in train_in.values())
  algo = algorithms.ALGORITHMS[config.algorithm]
  hparams = algorithms.hparams_of(config)
  context = {"num_examples": num_examples, "num_classes": ds.num_classes,
             "steps_per_epoch": max(1, num_examples // (
                 config.batch_size * len(train_in))),
             "head": "head", "learning_rate": config.learning_rate}
  rule = algorithms.build_rule(algo, hparams, context, config.every_k)
  _, anneal, _ = algorithms.penalty_schedule(algo, hparams)
  optimizer = make_optimizer(config, anneal)
  tx = optax.with_extra_args_support(
      optax.chain(rule, optimizer) if rule is not None else optimizer)

  model = models.get_model(config.model, ds.num_classes)
  loss_fn = make_loss_fn(model, losses.from_config(config), algo, hparams)

  def init(key):
    dummy = jnp.zeros((1,) + tuple(ds.input_shape), jnp.float32)
    params = model.init(key, dummy)["params"]
    extra = (algo.penalty_init(num_domains=len(train_domains),
                               head_params=params["head"])
             if algo.penalty_init else ())
    return params, extra

  batches = data.MultiDomainBatches([train_in[d] for d in train_domains],
                                    config.batch_size, config.seed)
  count_fn = jax.jit(evaluation.count_correct(
      lambda p, x: model.apply({"params": p}, x)))
  sets = {f"val/{d}": evaluation.eval_set(val[d], config.eval_batch_size, mesh)
          for d in train_domains}
  sets["test_in"] = evaluation.eval_set(test_in, config.eval_batch_size, mesh)
  sets["test_out"] = evaluation.eval_set(test_out, config.eval_batch_size,
                                         mesh)

  def evaluate(params):
    accs = {k: evaluation.accuracy(count_fn, params, s)
            for k, s in sets.items()}
    accs["val_acc"] = float(np.mean([accs[f"val/{d}"]
                                     for d in train_domains]))
    return accs

  def report(best, last):
    return {"val_acc": best["val_acc"], "test_acc": best["test_in"],
            "last_test_acc": last["test_in"]}

  return Recipe(
      init=init, loss_fn=loss_fn, tx=tx, batches=batches.batch,
      evaluate=evaluate, report=report, select="val_acc",
      name=f"{config.algorithm} test={test_domain}",
      describe=(f"algorithm {config.algorithm!r}, learning_rate "
                f"{config.learning_rate}"))
