"""Benchmark: a whole LM train step with the fused head vs materialized logits.

The step is the training program's (``experiments.lm.step``): the
``DecoderLM`` forward, the head, the backward and the AdamW update, in one
``jax.jit``, on one device. Two heads on the same model, batch and
parameters, in one run:

* ``fused``: ``diversity_jax.kernels.linear_cross_entropy`` (the default
  implementation and options; ``--both-paths`` adds rows with
  ``fused_backward=False`` (streaming) and ``True``);
* ``materialized``: the ``N x V`` f32 logits and optax's cross-entropy.

Per vocabulary size and dtype (``bf16``: the model computes in bfloat16, the
parameters and the logits / loss stay f32): the compiled temporary memory
(``memory_analysis().temp_size_in_bytes``), the median wall and process-CPU
time per step over ``--repeats`` steps timed alternately (fused,
materialized, fused, ...), their ratios, and the largest batch (sequences of
``--seq-len``) whose footprint, temporaries + arguments (parameters, AdamW
state, tokens), fits ``--budget-gib``. The footprint is affine in the batch:
it is compiled at two batch sizes, the largest fitting batch is solved for,
and that batch (and one more sequence) is compiled to confirm it.

Usage:
  python -m benchmarks.lm_step                        # V = 32768, 131072
  python -m benchmarks.lm_step --vocab 131072 --dtypes f32 --repeats 3
  python -m benchmarks.lm_step --memory-only --budget-gib 2
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.lm import head as head_lib
from experiments.lm import step as step_lib
from experiments.models.transformer import DecoderLM

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def cpu_description() -> str:
  """CPU model and vector ISA flags (``lscpu``), for the results table."""
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True,
                         check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return platform.processor() or "unknown CPU"
  fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
  model = fields.get("Model name", "?").strip()
  cores = fields.get("CPU(s)", "?").strip()
  flags = fields.get("Flags", "").split()
  vec = [f for f in flags if f.startswith(("avx", "fma", "amx"))]
  return f"{model}, {cores} CPU(s), vector flags: {' '.join(vec)}"


def _step_fn(model, opts):
  loss_fn = step_lib.make_loss_fn(model, None, opts, pad_id=0)
  return step_lib.make_train_step(loss_fn, optax.adamw(1e-3))


def _state(model, seq_len):
  tx = optax.adamw(1e-3)
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  params = model.init(jax.random.key(0), tokens)["params"]
  return step_lib.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))


def _tokens(batch, seq_len, vocab, seed=0):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.integers(1, vocab, (batch, seq_len + 1)), jnp.int32)


def _compile(fn, state, tokens):
  abstract = lambda t: jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), t)
  return jax.jit(fn).lower(abstract(state), abstract(tokens)).compile()


def _footprint(compiled) -> int:
  mem = compiled.memory_analysis()
  return int(mem.temp_size_in_bytes + mem.argument_size_in_bytes)


def largest_batch(fn, state, seq_len, budget, probe=(4, 8)):
  """Largest batch whose footprint fits ``budget`` bytes (0 if none).

  The footprint is affine in the batch: two probes give the line, its root
  is the first guess, confirmed by compiling it and one more sequence, else
  corrected by a bisection between a fitting and a non-fitting batch (each
  step one compilation).
  """
  cache = {}

  # Compiled only, never run: the token batch is a shape.
  tokens = lambda b: jax.ShapeDtypeStruct((b, seq_len + 1), jnp.int32)

  def fits(b):
    if b not in cache:
      cache[b] = _footprint(_compile(fn, state, tokens(b))) <= budget
    return cache[b] if b > 0 else True

  f1, f2 = (_footprint(_compile(fn, state, tokens(b))) for b in probe)
  # XLA's buffer assignment can make two small batches' footprints equal (or
  # out of order): then the line says nothing and the doubling below searches.
  slope = (f2 - f1) / (probe[1] - probe[0])
  guess = (max(1, int((budget - f1) // slope) + probe[0]) if slope > 0
           else probe[1])
  if fits(guess) and not fits(guess + 1):   # the usual case: 2 compilations
    return guess
  lo, hi = (guess, 2 * guess) if fits(guess) else (guess // 2, guess)
  while not fits(lo):
    lo, hi = lo // 2, lo
  while fits(hi):
    lo, hi = hi, 2 * hi
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def _time_alternately(runs, repeats):
  """Median (wall, CPU) seconds per call of each ``(compiled, state, tokens)``,
  the calls interleaved so that load changes hit every run alike."""
  for compiled, state, tokens in runs:   # warm-up
    jax.block_until_ready(compiled(state, tokens))
  walls = [[] for _ in runs]
  cpus = [[] for _ in runs]
  for _ in range(repeats):
    for i, (compiled, state, tokens) in enumerate(runs):
      t0, c0 = time.perf_counter(), time.process_time()
      jax.block_until_ready(compiled(state, tokens))
      walls[i].append(time.perf_counter() - t0)
      cpus[i].append(time.process_time() - c0)
  return [(statistics.median(w), statistics.median(c))
          for w, c in zip(walls, cpus)]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--vocab", default="32768,131072")
  parser.add_argument("--dtypes", default="f32,bf16")
  parser.add_argument("--batch", type=int, default=32,
                      help="sequences per step (timing and memory ratio)")
  parser.add_argument("--seq-len", type=int, default=128)
  parser.add_argument("--dim", type=int, default=256)
  parser.add_argument("--depth", type=int, default=4)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--budget-gib", type=float, default=4.0,
                      help="memory budget of the largest-batch search")
  parser.add_argument("--no-batch-search", action="store_true")
  parser.add_argument("--memory-only", action="store_true")
  parser.add_argument("--both-paths", action="store_true",
                      help="add the fused head with fused_backward=False "
                           "(streaming) and =True")
  parser.add_argument("--implementation", default=None,
                      help="the fused head's implementation (default: the "
                           "backend's)")
  args = parser.parse_args(argv)
  budget = int(args.budget_gib * 2**30)

  print(f"backend={jax.default_backend()} jax={jax.__version__} "
        f"device={jax.devices()[0].device_kind}")
  if jax.default_backend() == "cpu":
    print(f"CPU: {cpu_description()}")
  print(f"model: DecoderLM dim={args.dim} depth={args.depth} heads="
        f"{args.heads}, tied embeddings; batch {args.batch} x {args.seq_len} "
        f"tokens; AdamW; repeats={args.repeats}; budget {args.budget_gib} "
        "GiB (temporaries + arguments)")
  print("| V | dtype | head | temp memory | vs materialized | wall (s) | "
        "vs materialized | CPU (s) | vs materialized | largest batch |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for v in (int(s) for s in args.vocab.split(",")):
    for dname in args.dtypes.split(","):
      model = DecoderLM(vocab_size=v, dim=args.dim, depth=args.depth,
                        heads=args.heads, max_len=args.seq_len,
                        dtype=DTYPES[dname])
      state = _state(model, args.seq_len)
      tokens = _tokens(args.batch, args.seq_len, v)
      heads = [("fused", head_lib.HeadOptions(
          implementation=args.implementation))]
      if args.both_paths:
        heads += [(f"fused, {label}", head_lib.HeadOptions(
            implementation=args.implementation, fused_backward=fused))
                  for fused, label in ((False, "streaming"),
                                       (True, "fused_backward"))]
      heads.append(("materialized",
                    head_lib.HeadOptions(lm_head="materialized")))
      fns = [_step_fn(model, opts) for _, opts in heads]
      compiled = [_compile(fn, state, tokens) for fn in fns]
      temps = [c.memory_analysis().temp_size_in_bytes for c in compiled]
      if args.memory_only:
        times = [(float("nan"), float("nan"))] * len(heads)
      else:
        times = _time_alternately([(c, state, tokens) for c in compiled],
                                  args.repeats)
      if args.no_batch_search:
        batches = ["-"] * len(heads)
      else:
        batches = [largest_batch(fn, state, args.seq_len, budget)
                   for fn in fns]
      (ref_temp, (ref_wall, ref_cpu)) = temps[-1], times[-1]
      for (name, _), temp, (wall, cpu), b in zip(heads, temps, times,
                                                 batches):
        print(f"| {v} | {dname} | {name} | {temp / 2**20:,.1f} MiB | "
              f"{temp / ref_temp:.3f} | {wall:.3g} | {wall / ref_wall:.2f} | "
              f"{cpu:.3g} | {cpu / ref_cpu:.2f} | {b} |", flush=True)


if __name__ == "__main__":
  main()
