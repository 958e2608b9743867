"""The diverse-ensemble study (``config.task = 'ensemble'``).

``python -m experiments.train --config configs/ensemble.py`` dispatches here.
For every ``(member_init, regularizer)`` of the config's grid: train
``num_members`` members stacked in one jitted step
(``experiments.ensemble.members``) on the training domains with the
regularizer of ``experiments.ensemble.regularizers``, then evaluate each
member, the ensemble (mean of the members' probabilities), the uniform soup
of the members' weights and its WiSE-FT interpolation with the shared
pre-trained weights, in distribution (the held-out 20% of every training
domain) and on the held-out rotated domains. Prints the summary table and
writes ``results.md`` (summary, then one detailed table per run) and
``results.csv`` (every number) into the workdir. Every run (the
pre-training, then each ensemble in ``<workdir>/<init>_<regularizer>``) is an
``experiments.recipe.Recipe`` trained by ``experiments.trainer.train_one``:
checkpoints, ``metrics.jsonl`` / TensorBoard, and a rerun of the same
command resumes (finished runs are not retrained).

``member_init='shared'``: one network is first trained with ERM for
``pretrain_steps`` (the "pre-trained" model), every member starts from it with
its own re-drawn head (model soups / WiSE-FT: fine-tuned copies of one
pre-trained model can be averaged). ``'independent'``: every member has its
own random init (deep ensembles); its soup averages unrelated networks and no
WiSE-FT is formed. Members see the same batches (a pure function of
``(seed, step)``), so every regularizer is compared on the same data and
inits.
"""

from __future__ import annotations

import csv
import os
import resource
import time
from typing import Any, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diversity_jax import diversity
from experiments import checkpointing
from experiments import models
from experiments import trainer
from experiments.studies import dg_recipe
from experiments.ensemble import members as members_lib
from experiments.ensemble import metrics as metrics_lib
from experiments.ensemble import regularizers
from experiments.ensemble import validation
from experiments.recipe import Recipe


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def _optimizer(config) -> optax.GradientTransformation:
  """Element-wise only (Adam / SGD): the same on stacked and single members."""
  if config.optimizer == "adam":
    return optax.adam(config.learning_rate)
  return optax.sgd(config.learning_rate, momentum=0.9)


def _splits(config, ds):
  """Training ``(x, y)`` per training domain and the evaluation splits."""
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  train, id_parts, evals = [], [], {}
  for i, domain in enumerate(ds.domains):
    x, y = ds.arrays(domain)
    if domain in config.train_domains:
      inn, out = data.split_holdout(
          x, y, holdout_fraction=config.holdout_fraction, seed=config.seed + i)
      train.append(inn)
      id_parts.append(out)
    elif domain in config.test_domains:
      evals[f"{domain}"] = (x, y)
  pool = lambda parts: tuple(np.concatenate(p) for p in zip(*parts))
  out = {"id": pool(id_parts)}
  if evals:
    out["ood"] = pool([evals[d] for d in config.test_domains])
    out.update(evals)
  return train, out


def _recipe(config, model, params, name: Optional[str], batches, evaluate
            ) -> Recipe:
  """The run of stacked ``params`` with regularizer ``name`` (None: CE only).

  The extra state is the members' initial params (read by
  ``orthogonal_updates``); the reported step is the last one.
  """
  weight, penalty = 0.0, None
  if name is not None:
    weight, penalty = regularizers.penalty_fn(
        name, dict(config.diversity[name]))
  return Recipe(
      init=lambda key: (params, params),
      loss_fn=members_lib.make_loss_fn(model, penalty, weight),
      tx=optax.with_extra_args_support(_optimizer(config)),
      batches=batches.batch, evaluate=evaluate,
      report=lambda best, last: {"evaluation": last}, select=None,
      name=f"ensemble {name or 'pre-training'}",
      describe=f"regularizer {name or 'none'!r}",
      hint="Lower config.learning_rate or the regularizer's weight "
           "(config.diversity.<name>.weight).")


def _train(recipe: Recipe, config, workdir: str, mesh):
  """``trainer.train_one`` of ``recipe``; returns the final stacked params.

  Read back from the run's last checkpoint, so a finished run that is
  resumed (nothing left to train) gives the same params.
  """
  trainer.train_one(recipe, config, workdir, mesh)
  params, extra = recipe.init(None)
  template = trainer.TrainState(jnp.zeros((), jnp.int32), params,
                                recipe.tx.init(params), extra)
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    config.keep_checkpoints)
  try:
    _, state, _ = ckpt.restore_latest(template)
  finally:
    ckpt.close()
  return state.params


def _logits_fn(model, eval_batch_size: int):
  """``logits(stacked, x) -> (M, N, K)`` in chunks of one static size."""
  apply = jax.jit(lambda p, x: members_lib.apply_members(model, p, x)[0])

  def logits(stacked, x):
    return jnp.concatenate([apply(stacked, x[i:i + eval_batch_size])
                            for i in range(0, len(x), eval_batch_size)],
                           axis=1)
  return logits


def _padded(splits, eval_batch_size: int):
  """Every split zero-padded to one length (a multiple of the chunk size),
  with its mask: one compilation serves every split."""
  n = max(len(y) for _, y in splits.values())
  n = -(-n // eval_batch_size) * eval_batch_size
  out = {}
  for split, (x, y) in splits.items():
    pad = n - len(y)
    out[split] = (
        jnp.asarray(np.concatenate([x, np.zeros((pad,) + x.shape[1:],
                                                x.dtype)])),
        jnp.asarray(np.concatenate([y, np.zeros(pad, y.dtype)])),
        jnp.asarray(np.arange(n) < len(y)))
  return out


@jax.jit
def _evaluate_members(member_logits, labels, where):
  rows = jax.vmap(lambda z: metrics_lib.summarize(
      jax.nn.log_softmax(z), labels, where=where))(member_logits)
  ensemble = metrics_lib.summarize(
      metrics_lib.ensemble_log_probs(member_logits), labels, where=where)
  return rows, ensemble, metrics_lib.member_diversity(member_logits,
                                                      where=where)


def _evaluate(logits_fn, stacked, singles, single_names, splits):
  """``{split: {model: {metric: value}}}`` for members, ensemble, singles.

  ``splits``: ``{name: (x, y, mask)}`` from ``_padded``.
  """
  out = {}
  for split, (x, y, where) in splits.items():
    z = logits_fn(stacked, x)
    rows, ensemble, div = jax.device_get(_evaluate_members(z, y, where))
    m = z.shape[0]
    table = {f"member {i}": {k: float(v[i]) for k, v in rows.items()}
             for i in range(m)}
    table["members (mean)"] = {k: float(np.mean(v)) for k, v in rows.items()}
    table["ensemble"] = {**{k: float(v) for k, v in ensemble.items()},
                         **{k: float(v) for k, v in div.items()}}
    if singles is not None:
      zs = logits_fn(singles, x)
      srows, _, _ = jax.device_get(_evaluate_members(zs, y, where))
      for i, name in enumerate(single_names):
        table[name] = {k: float(v[i]) for k, v in srows.items()}
    out[split] = table
  return out


def _pretrain(config, model, dummy, batches, workdir: str, mesh):
  """The shared pre-trained network: ERM for ``pretrain_steps`` (one member)."""
  key = jax.random.fold_in(jax.random.key(config.seed), 0)
  params = members_lib.init_members(model, key[None], dummy)
  c = config.copy_and_resolve_references()
  c.num_steps = config.pretrain_steps
  c.eval_every = c.checkpoint_every = config.pretrain_steps
  recipe = _recipe(c, model, params, None, batches, lambda p: {})
  params = _train(recipe, c, os.path.join(workdir, "pretrain"), mesh)
  return jax.tree_util.tree_map(lambda l: np.asarray(l[0]), params)


def _flat(results):
  """``{'split/model/metric': value}`` (spaces as ``_``: metric names)."""
  return {f"{split}/{model}/{metric}".replace(" ", "_"): value
          for split, table in results.items()
          for model, row in table.items() for metric, value in row.items()}


def _nested(flat):
  out = {}
  for key, value in flat.items():
    split, model, metric = key.replace("_", " ").split("/")
    out.setdefault(split, {}).setdefault(model, {})[metric] = value
  return out


def run_one(config, model, dummy, batches, splits, init: str, name: str,
            pretrained, logits_fn, workdir: str, mesh) -> Dict[str, Any]:
  """Trains and evaluates one ensemble in ``workdir``; results and timing."""
  start, cpu = time.time(), _cpu_seconds()
  keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), 1),
                          config.num_members)
  params = members_lib.init_members(model, keys, dummy)
  if init == "shared":
    params = members_lib.share_body(pretrained, params)

  def evaluate(stacked):
    # On the host, then the default device: the trained params are
    # replicated over the mesh, the pre-trained ones are not.
    stacked = jax.device_get(stacked)
    soup = diversity.balanced_average(members_lib.unstack(stacked))
    singles, names = [soup], ["uniform soup"]
    if init == "shared":
      singles += [diversity.interpolate_params(pretrained, soup,
                                               alpha=config.wise_alpha),
                  pretrained]
      names += [f"WiSE-FT (alpha {config.wise_alpha})", "pre-trained"]
    stacked_singles = jax.tree_util.tree_map(lambda *l: jnp.stack(l),
                                             *singles)
    return _flat(_evaluate(logits_fn, stacked, stacked_singles, names,
                           splits))

  recipe = _recipe(config, model, params, name, batches, evaluate)
  result = trainer.train_one(recipe, config, workdir, mesh)
  last = result["evaluation"]
  return {"init": init, "regularizer": name,
          "results": _nested({k: v for k, v in last.items() if k != "step"}),
          "final_loss": result["final_loss"], "wall_s": time.time() - start,
          "cpu_s": _cpu_seconds() - cpu}


def _pct(v):
  return f"{100 * v:.1f}"


def _pair(res, model, metric, fmt):
  cells = []
  for split in ("id", "ood"):
    row = res.get(split, {}).get(model)
    cells.append("-" if row is None else fmt(row[metric]))
  return " / ".join(cells)


def summary_table(runs: List[Dict[str, Any]]) -> str:
  """One row per run; each cell is ``in-distribution / held-out domains``."""
  f3 = lambda v: f"{v:.3f}"
  head = ["init", "regularizer", "ens. acc", "ens. NLL", "ens. ECE",
          "member acc", "disagree", "Vendi", "soup acc", "WiSE-FT acc"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in runs:
    res = r["results"]
    wise = next((k for k in res["id"] if k.startswith("WiSE")), None)
    cells = [r["init"], r["regularizer"],
             _pair(res, "ensemble", "accuracy", _pct),
             _pair(res, "ensemble", "nll", f3),
             _pair(res, "ensemble", "ece", _pct),
             _pair(res, "members (mean)", "accuracy", _pct),
             _pair(res, "ensemble", "disagreement", _pct),
             _pair(res, "ensemble", "vendi", lambda v: f"{v:.2f}"),
             _pair(res, "uniform soup", "accuracy", _pct),
             _pair(res, wise, "accuracy", _pct) if wise else "-"]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def detail_table(run: Dict[str, Any]) -> str:
  """Per model (members, ensemble, soup, ...): acc / NLL / ECE per split."""
  res = run["results"]
  splits = list(res)
  head = ["model"] + [f"{s} {m}" for s in splits for m in ("acc", "NLL", "ECE")]
  lines = [f"{run['init']} init, {run['regularizer']}:",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for model in res["id"]:
    cells = [model]
    for s in splits:
      row = res[s][model]
      cells += [_pct(row["accuracy"]), f"{row['nll']:.3f}", _pct(row["ece"])]
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def _write(runs, workdir: str, summary: str) -> None:
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(summary + "\n\n" + "\n\n".join(detail_table(r) for r in runs)
            + "\n")
  with open(os.path.join(workdir, "results.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["init", "regularizer", "split", "model", "metric", "value"])
    for r in runs:
      for split, table in r["results"].items():
        for model, row in table.items():
          for metric, value in row.items():
            w.writerow([r["init"], r["regularizer"], split, model, metric,
                        f"{value:.6f}"])


def run(config, workdir: str) -> Dict[str, Any]:
  """The whole grid of ``config``; writes results.md / results.csv.

  Returns:
    ``{'runs': one result per (member_init, regularizer), 'table': the
    summary table}`` (``experiments.tables`` format, stem ``'results'``).

  Example:
    >>> from configs import ensemble
    >>> out = run(ensemble.get_config('smoke'), '/tmp/ens')
  """
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  validation.validate(config)
  trainer.check_writable(workdir)
  ds = dg_recipe.load_dataset(config)
  validation.validate_against_dataset(config, ds.domains)
  train, splits = _splits(config, ds)
  splits = _padded(splits, config.eval_batch_size)
  batches = data.MultiDomainBatches(train, config.batch_size, config.seed)
  model = models.get_model(config.model, ds.num_classes)
  dummy = jnp.zeros((1,) + tuple(ds.input_shape), jnp.float32)
  mesh = trainer.make_mesh(config)
  start, cpu = time.time(), _cpu_seconds()
  pretrained = None
  if "shared" in config.member_inits:
    pretrained = _pretrain(config, model, dummy, batches, workdir, mesh)
  logits_fn = _logits_fn(model, config.eval_batch_size)
  runs = []
  grid = [(i, n) for i in config.member_inits for n in config.regularizers]
  for k, (init, name) in enumerate(grid):
    sub = os.path.join(workdir, f"{init}_{name}")
    r = run_one(config, model, dummy, batches, splits, init, name,
                pretrained, logits_fn, sub, mesh)
    print(f"[{k + 1}/{len(grid)}] {init} init, {name}: ensemble accuracy "
          f"{_pair(r['results'], 'ensemble', 'accuracy', _pct)} "
          f"(in-distribution / held-out), {r['wall_s']:.0f} s "
          f"({r['cpu_s']:.0f} s CPU) -> {sub}", flush=True)
    runs.append(r)
  summary = summary_table(runs)
  _write(runs, workdir, summary)
  title = (f"{config.name}: {config.num_members} members, {config.model}, "
           f"trained on {', '.join(config.train_domains)}; cells are "
           f"in-distribution / held-out domains "
           f"({', '.join(config.test_domains)}); accuracy, 15-bin ECE and "
           f"disagreement in %; {time.time() - start:.0f} s wall, "
           f"{_cpu_seconds() - cpu:.0f} s CPU; per-member tables in "
           "results.md")
  rows = [line.strip("|").split(" | ") for line in summary.splitlines()]
  table = {"title": title, "markdown": summary, "stem": "results",
           "rows": [[c.strip() for c in row] for i, row in enumerate(rows)
                    if i != 1]}
  return {"runs": runs, "table": table}
