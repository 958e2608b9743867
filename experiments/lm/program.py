"""The language-model training program (``config.task = 'lm'``).

``python -m experiments.train --config configs/lm.py`` dispatches here:
validate the config (before anything is built or compiled), build or read the
tokenized corpus (``diversity_jax.data.load_text``), train a ``DecoderLM``
with one jitted step over a ``(data, model)`` mesh (``experiments.lm.step``),
evaluate the validation perplexity with the fused head every ``eval_every``
steps, checkpoint every ``checkpoint_every`` steps (a run restarted in the same
workdir resumes from the latest good checkpoint and ends bit-identical), and
print the perplexity table next to the unigram baselines of the same
tokenizer on the same split (``results.md`` / ``results.csv``).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Dict, List

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from experiments import checkpointing
from experiments import config_validation
from experiments import tables
from experiments import metrics as metrics_lib
from experiments import trainer
from experiments.lm import baseline
from experiments.lm import head as head_lib
from experiments.lm import step as step_lib
from experiments.lm import validation
from experiments.models.transformer import DecoderLM


def load_dataset(config):
  """The tokenized corpus of ``config`` (built on first use)."""
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  try:
    return data.load_text(
        config.dataset, vocab_size=config.vocab_size, seq_len=config.seq_len,
        data_dir=config.data_dir or None, max_chars=config.max_chars,
        validation_fraction=config.validation_fraction,
        text_key=config.text_key, train_split=config.train_split,
        validation_split=config.validation_split, download=config.download)
  except ValueError as e:   # a TFDS corpus without that feature or split
    message = str(e)
    field = ("text_key" if "no feature" in message else
             "train_split" if f"no split {config.train_split!r}" in message
             else "validation_split" if "no split" in message else "dataset")
    raise config_validation.ConfigError(f"config.{field}: {message}") from None


def make_model(config) -> DecoderLM:
  m = config.model
  return DecoderLM(vocab_size=config.vocab_size, dim=m.dim, depth=m.depth,
                   heads=m.heads, mlp_ratio=m.mlp_ratio, max_len=config.seq_len,
                   positions=m.positions, tie_embeddings=m.tie_embeddings,
                   dtype=jnp.dtype(m.dtype))


def head_options(config) -> head_lib.HeadOptions:
  h = config.head
  return head_lib.HeadOptions(
      lm_head=config.lm_head, label_smoothing=float(h.label_smoothing),
      z_loss=float(h.z_loss), softcap=float(h.softcap) or None,
      ignore_padding=h.ignore_padding,
      implementation=h.implementation or None,
      fused_backward=h.fused_backward,
      filter_eps=validation.filter_eps(h.filter_eps))


def make_optimizer(config) -> optax.GradientTransformation:
  """AdamW (or Adam / SGD) on a linear warm-up + cosine decay to 10%, with
  global-norm clipping; weight decay on matrices only."""
  lr = config.learning_rate
  warm = config.warmup_steps
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, lr, warm, max(config.num_steps, warm + 1), end_value=0.1 * lr)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim >= 2, params)
  if config.optimizer == "adamw":
    opt = optax.adamw(schedule, b1=0.9, b2=0.95,
                      weight_decay=config.weight_decay, mask=decay_mask)
  elif config.optimizer == "adam":
    opt = optax.adam(schedule, b1=0.9, b2=0.95)
  else:
    opt = optax.sgd(schedule)
  if config.grad_clip:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), opt)
  return opt


def _eval_chunks(rows: np.ndarray, size: int, pad_id: int):
  """``rows`` in chunks of ``size``, the last one padded with PAD rows."""
  for start in range(0, len(rows), size):
    chunk = rows[start:start + size]
    if len(chunk) < size:
      pad = np.full((size - len(chunk), rows.shape[1]), pad_id, rows.dtype)
      chunk = np.concatenate([chunk, pad])
    yield chunk


def evaluate(eval_fn, params, rows, size, pad_id, sharding) -> Dict[str, float]:
  """Validation loss (nats per target token) and perplexity."""
  total = count = 0.0
  for chunk in _eval_chunks(rows, size, pad_id):
    s, c = eval_fn(params, jax.device_put(chunk, sharding))
    total += float(s)
    count += float(c)
  loss = total / max(count, 1.0)
  return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)),
          "val_tokens": count}


def results_table(config, ds, final: Dict[str, float]) -> Dict[str, Any]:
  """Validation perplexity of the LM next to the unigram baselines."""
  train, val = ds.sequences("train"), ds.sequences("validation")
  k, pad = ds.tokenizer_vocab_size, ds.pad_id
  rows = [
      ("unigram (train counts, add-one)",
       baseline.unigram_perplexity(train, val, k, pad)),
      ("unigram (validation's own counts: best possible unigram)",
       baseline.oracle_unigram_perplexity(val, k, pad)),
      (f"transformer ({config.lm_head} head, {config.num_steps} steps)",
       final["val_ppl"]),
  ]
  header = ["model", "validation perplexity", "nats / token"]
  md = ["| " + " | ".join(header) + " |", "|---|---|---|"]
  csv_rows = [header]
  for name, ppl in rows:
    md.append(f"| {name} | {ppl:,.2f} | {math.log(ppl):.4f} |")
    csv_rows.append([name, f"{ppl:.4f}", f"{math.log(ppl):.6f}"])
  return {"markdown": "\n".join(md), "rows": csv_rows,
          "unigram_ppl": rows[0][1], "oracle_unigram_ppl": rows[1][1]}


def train(config, workdir: str) -> Dict[str, Any]:
  """Trains and evaluates the LM of ``config`` in ``workdir`` (resuming).

  Args:
    config: an LM config (``configs/lm.py``).
    workdir: run directory (checkpoints, metrics.jsonl, tensorboard/,
      results.md, results.csv, result.json).

  Returns:
    ``{'val_ppl', 'val_loss', 'unigram_ppl', 'oracle_unigram_ppl',
    'final_loss', 'num_steps', 'compiles', 'table'}``.

  Raises:
    ConfigError: a bad config field (before anything is built or compiled),
      a config that differs from the run already in ``workdir``, or fewer
      ``num_steps`` than it has trained.
    WorkdirError: ``workdir`` cannot be written (before data is built).
    NonFiniteLossError: the loss became NaN/inf (last good checkpoint kept).
    TrainingInterrupted: Ctrl-C (a rerun resumes from the last checkpoint).

  Example:
    >>> from configs import lm
    >>> result = train(lm.get_config('smoke'), '/tmp/lm')
    >>> result['num_steps'], result['compiles']
    (6, 1)
  """
  from diversity_jax import data  # pylint: disable=g-import-not-at-top
  validation.validate(config)
  trainer.check_writable(workdir)
  trainer.check_same_run(config, workdir)
  ds = load_dataset(config)
  train_rows = ds.sequences("train")
  val_rows = ds.sequences("validation")
  if config.batch_size > len(train_rows):
    raise config_validation.ConfigError(
        f"config.batch_size: {config.batch_size} exceeds the "
        f"{len(train_rows)} sequences of the train split; lower it or raise "
        "config.max_chars")
  batches = data.MultiDomainBatches(
      [(train_rows, np.zeros(len(train_rows), np.int32))], config.batch_size,
      config.seed, sampling="epoch")
  mesh = step_lib.make_mesh(*validation.mesh_shape(config))
  model = make_model(config)
  opts = head_options(config)
  tx = make_optimizer(config)
  state = step_lib.init_state(model, tx, config.seed, config.seq_len, mesh)
  shardings = step_lib.tree_shardings(state, mesh)
  replicated = NamedSharding(mesh, P())
  rows_sharding = NamedSharding(mesh, P(step_lib.DATA))
  loss_fn = step_lib.make_loss_fn(model, mesh, opts, ds.pad_id)
  train_step = step_lib.make_train_step(loss_fn, tx)
  step_fn = jax.jit(lambda s, b: train_step(s, b["x"][0]),
                    in_shardings=(shardings, None),
                    out_shardings=(shardings, replicated),
                    donate_argnums=0)
  eval_fn = jax.jit(step_lib.make_sums_fn(model, mesh, opts, ds.pad_id,
                                          eval_only=True),
                    in_shardings=(shardings.params, rows_sharding))

  trainer.save_run_config(config, workdir)
  primary = jax.process_index() == 0
  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    config.keep_checkpoints)
  meta = {"step": 0, "evals": []}
  restored = ckpt.restore_latest(state)
  start = 0
  if restored is not None:
    start, state, meta = restored
    if start > config.num_steps:
      ckpt.close()
      raise config_validation.ConfigError(
          f"config.num_steps: {config.num_steps} is below the {start} steps "
          f"already trained in {workdir}; use --config.num_steps={start} or "
          "more, or a new --workdir")
    if primary:
      print(f"resumed from step {start} ({ckpt.directory})", flush=True)
  writer = (metrics_lib.MetricWriter(workdir, resume_step=start) if primary
            else metrics_lib.NullWriter())
  pending: List = []

  def flush():
    for s, m in pending:
      row = {k: float(v) for k, v in jax.device_get(m).items()}
      writer.write(s, "train", row)
      if not (np.isfinite(row["loss"]) and np.isfinite(row["param_norm"])):
        writer.flush()
        raise trainer.NonFiniteLossError(
            f"training loss is {row['loss']} (parameter norm "
            f"{row['param_norm']}) at step {s}; stopped. The last good "
            f"checkpoint (step {ckpt.latest_step()}) is kept in "
            f"{ckpt.directory}. Lower config.learning_rate.")
      meta["last_loss"] = row["loss"]
    pending.clear()
    writer.flush()

  progress = None
  if config.progress_bar and primary:
    import tqdm  # pylint: disable=g-import-not-at-top
    progress = tqdm.tqdm(total=config.num_steps, initial=start,
                         desc=config.name, leave=False)
  began = time.time()
  done = start
  try:
    for step in range(start, config.num_steps):
      batch = data.shard_batch(batches.batch(step), mesh, axis=step_lib.DATA)
      state, step_metrics = step_fn(state, batch)
      pending.append((step + 1, step_metrics))
      done = step + 1
      last = done == config.num_steps
      if done % config.log_every == 0 or last:
        flush()
        if progress is not None:
          progress.set_postfix(loss=f"{meta['last_loss']:.3f}")
      if done % config.eval_every == 0 or last:
        flush()
        ev = evaluate(eval_fn, state.params, val_rows,
                      config.eval_batch_size, ds.pad_id, rows_sharding)
        writer.write(done, "eval", ev)
        meta["evals"].append({"step": done, **ev})
      if done % config.checkpoint_every == 0 or last:
        flush()
        meta["step"] = done
        ckpt.save(done, state, meta)
      if progress is not None:
        progress.update(1)
  except KeyboardInterrupt:
    good = ckpt.latest_step()
    kept = ("no checkpoint yet" if good is None else
            f"a rerun of the same command resumes from step {good} "
            f"({ckpt.directory})")
    raise trainer.TrainingInterrupted(
        f"stopped by Ctrl-C after {done} of {config.num_steps} steps in "
        f"{workdir}; {kept}") from None
  finally:
    if progress is not None:
      progress.close()
    writer.close()
    ckpt.close()

  final = meta["evals"][-1]
  table = results_table(config, ds, final)
  if primary:
    tables.write_table(table, workdir, "results")
  result = {"val_ppl": final["val_ppl"], "val_loss": final["val_loss"],
            "unigram_ppl": table["unigram_ppl"],
            "oracle_unigram_ppl": table["oracle_unigram_ppl"],
            "final_loss": meta.get("last_loss"),
            "num_steps": config.num_steps,
            "train_seconds": time.time() - began,
            "compiles": step_fn._cache_size()}  # pylint: disable=protected-access
  if primary:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump(result, f, indent=1)
  result["table"] = table["markdown"]
  return result


def main(config, workdir: str, *, plot: bool = False) -> int:
  """``experiments.train``'s entry for ``config.task == 'lm'``: exit code 0.

  Errors propagate to ``experiments.cli``, which prints them on one line
  with its exit codes (2: config / data / workdir, 1: a diverged run, 130:
  Ctrl-C).
  """
  result = train(config, workdir)
  if jax.process_index() == 0:
    print(f"\n{config.name}: {config.dataset}, vocabulary {config.vocab_size}, "
          f"validation split\n{result['table']}\nwritten to "
          f"{os.path.join(workdir, 'results.md')} and results.csv")
    if plot:
      path = metrics_lib.plot_curves(
          [workdir], os.path.join(workdir, "curves.png"),
          keys=["loss", "val_loss", "val_ppl"])
      print(f"training curves: {path}")
  return 0
