"""Benchmark: blocked retrieval metrics against the plain N x N version.

``diversity_jax.metric_learning.retrieval_metrics`` (Recall@1/2/4/8,
precision@1, R-precision, MAP@R; queries == references, the query itself
excluded) with ``--block`` queries per block against ``block_size=None`` (one
block: the full (N, N) similarity matrix), in one run, for each ``n``:

* compiled temporary memory
  (``jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``);
* the median wall time and CPU time (user + sys, ``resource.getrusage``) of
  ``--repeats`` interleaved runs (blocked, plain, blocked, ...), after a
  warm-up where the plain version runs.

For ``n`` above ``--max-plain-n`` the plain version is only compiled (its
memory requirement is reported; it does not fit in RAM), not run.

Usage:
  python -m benchmarks.retrieval                                 # defaults
  python -m benchmarks.retrieval --ns 16384,100000 --repeats 3
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import jax
import jax.numpy as jnp

from diversity_jax import metric_learning


def _cpu_seconds():
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def compile_metrics(n, dim, k, block_size):
  fn = jax.jit(lambda x, y: metric_learning.retrieval_metrics(
      x, y, k=k, block_size=block_size))
  compiled = fn.lower(jax.ShapeDtypeStruct((n, dim), jnp.float32),
                      jax.ShapeDtypeStruct((n,), jnp.int32)).compile()
  mem = compiled.memory_analysis()
  return compiled, (mem.temp_size_in_bytes if mem is not None else float("nan"))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ns", default="16384,100000")
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--class-size", type=int, default=10,
                      help="examples per class (R = class size - 1)")
  parser.add_argument("--block", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--max-plain-n", type=int, default=16384,
                      help="larger n: the plain version is compiled, not run")
  args = parser.parse_args()
  k = max(args.class_size - 1, 8)
  print(f"backend {jax.default_backend()}, dim {args.dim}, k {k}, "
        f"block {args.block}, repeats {args.repeats} (interleaved)")
  print(f"{'n':>8}{'version':>9}{'temp MiB':>11}{'wall s':>9}{'cpu s':>8}"
        f"{'mem x':>8}{'wall x':>8}")
  for n in [int(v) for v in args.ns.split(",")]:
    labels = jnp.arange(n, dtype=jnp.int32) // args.class_size
    key = jax.random.key(0)
    centers = jax.random.normal(key, (n // args.class_size + 1, args.dim))
    x = centers[labels] + jax.random.normal(jax.random.fold_in(key, 1),
                                            (n, args.dim))
    versions = {"blocked": compile_metrics(n, args.dim, k, args.block),
                "plain": compile_metrics(n, args.dim, k, None)}
    run = ["blocked"] + (["plain"] if n <= args.max_plain_n else [])
    walls = {v: [] for v in run}
    cpus = {v: [] for v in run}
    if n <= args.max_plain_n:  # warm-up (compiled ahead of time already)
      for v in run:
        jax.block_until_ready(versions[v][0](x, labels))
    for _ in range(args.repeats):
      for v in run:
        c0, t0 = _cpu_seconds(), time.perf_counter()
        jax.block_until_ready(versions[v][0](x, labels))
        walls[v].append(time.perf_counter() - t0)
        cpus[v].append(_cpu_seconds() - c0)
    med = {v: (statistics.median(walls[v]), statistics.median(cpus[v]))
           for v in run}
    nan = (float("nan"), float("nan"))
    for v in ("blocked", "plain"):
      temp = versions[v][1]
      wall, cpu = med.get(v, nan)
      mem_x = temp / versions["blocked"][1]
      wall_x = wall / med["blocked"][0]
      print(f"{n:>8}{v:>9}{temp / 2**20:>11.1f}{wall:>9.2f}{cpu:>8.2f}"
            f"{mem_x:>8.1f}{wall_x:>8.2f}")


if __name__ == "__main__":
  main()
