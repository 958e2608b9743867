"""One run of the label-noise study as a Recipe: (loss, seed, kind, rate).

:func:`build_recipe` is the per-run form of the grid engine in
:mod:`experiments.noisy.program` (the same initial parameters, noisy labels,
batches and loss, so it trains the same model), for
``trainer.train_one``: checkpoints and bit-identical resume, ``metrics.jsonl``
and TensorBoard per run. ``config.engine = 'recipe'`` runs the study's grid
this way (one compile and one Python step loop per run: for a few settings;
the default ``'grid'`` engine trains the whole grid in one program per loss).
"""

from __future__ import annotations

import jax
import numpy as np
import optax

from experiments.models import get_model
from experiments.noisy import loss_table
from experiments.noisy import online_selection
from experiments.noisy import program
from experiments.recipe import Recipe


def build_recipe(config, arrays: program.Arrays, loss_name: str,
                 setting: program.Setting) -> Recipe:
  """The Recipe of one setting; ``report`` gives ``test_acc`` (%) at the end.

  Example:
    >>> from configs import noisy_labels
    >>> c = noisy_labels.get_config('smoke')
    >>> arrays = program.load_arrays(c.dataset)
    >>> recipe = build_recipe(c, arrays, c.losses[0],
    ...                       program.Setting(0, 'pair', 0.4))
  """
  k = arrays.num_classes
  model = get_model(config.model, k)
  entry = loss_table.LOSSES[loss_name]
  x_train, y_train = arrays.x_train, arrays.y_train
  n = len(y_train)
  start = jax.jit(program.start_setting(model, k))
  params0, y_noisy = start(x_train, y_train, setting.seed,
                           setting.kind == "pair", setting.rate)
  y_noisy = np.asarray(y_noisy)
  batch_loss = program.make_batch_loss(config, entry, model)

  def init(key):
    del key  # the setting's seed gives the parameters, as in the grid
    memory = online_selection.init_memory(config.memory_size, k)
    return params0, (entry.init_state(n), memory)

  def loss_fn(params, batch, step, extra):
    del step
    loss_state, memory = extra
    loss, new_extra = batch_loss(params, batch["x"][0], batch["y"][0],
                                 batch["index"][0], loss_state, memory)
    return loss, {"extra": new_extra, "metrics": {}}

  draw = jax.jit(lambda step: program.draw_candidates(
      config, setting.seed, step, n))

  def batches(step):
    index = np.asarray(draw(step))
    return {"x": x_train[index][None], "y": y_noisy[index][None],
            "index": index[None]}

  apply_acc = jax.jit(lambda p, x, y: program.accuracy(model, p, x, y))

  def evaluate(params):
    return {"test_acc": float(apply_acc(params, arrays.x_test,
                                        arrays.y_test)),
            "noisy_fit": float(apply_acc(params, x_train, y_noisy))}

  def report(best, last):
    del best
    return {"test_acc": last["test_acc"], "noisy_fit": last["noisy_fit"],
            "noise_realized": float(np.mean(y_noisy != y_train) * 100.0)}

  label = f"{loss_name} {program.column(setting)} seed={setting.seed}"
  return Recipe(init=init, loss_fn=loss_fn,
                tx=optax.with_extra_args_support(
                    optax.adam(config.learning_rate)),
                batches=batches, evaluate=evaluate, report=report,
                select=None, name=label, describe=f"loss {label}",
                hint="Lower config.learning_rate.")
