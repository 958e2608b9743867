"""Benchmark: ``xla_chunked`` tile sizes against the reference, interleaved.

Loss + dX + dW (``reduction='mean'``) of ``linear_cross_entropy``
(``implementation='xla_chunked'`` with each ``--blocks`` tile size, and
``default``: the tiles ``block_sizes`` picks on this host) against optax CE
on materialized f32 logits, all compiled first and then timed alternately
(reference, each tile size, reference, ...) so that load changes hit every
method alike; prints the median process-CPU time and its ratio to the
reference's. Run it once per ISA setting, e.g.::

  python -m benchmarks.linear_cross_entropy_blocks
  XLA_FLAGS=--xla_cpu_max_isa=AVX2 python -m benchmarks.linear_cross_entropy_blocks
  XLA_FLAGS="--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type=" \\
      python -m benchmarks.linear_cross_entropy_blocks --blocks 1024x512,2048x512
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.linear_cross_entropy import DTYPES
from benchmarks.linear_cross_entropy import _inputs
from benchmarks.linear_cross_entropy import _reference
from diversity_jax.kernels import linear_cross_entropy
from diversity_jax.kernels.linear_cross_entropy import xla_chunked


def _ours(bt, bv):
  def loss(x, w, y):
    return linear_cross_entropy(x, w, y, implementation="xla_chunked",
                                block_tokens=bt, block_vocab=bv)
  return lambda x, w, y: jax.value_and_grad(loss, (0, 1))(x, w, y)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="2048x1024x16384")
  parser.add_argument("--dtypes", default="f32,bf16")
  parser.add_argument("--blocks", default="default",
                      help="comma-separated BTxBV tile sizes or 'default'")
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)
  n, d, v = map(int, args.shape.split("x"))
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} "
        f"native_bf16_dot={xla_chunked.native_bf16_dot()}")
  for name in args.dtypes.split(","):
    dtype = DTYPES[name]
    x, w, y = _inputs(n, d, v, dtype)
    fns = [("reference", _reference)]
    for b in args.blocks.split(","):
      bt, bv = ((None, None) if b == "default"
                else tuple(int(s) for s in b.split("x")))
      shown = xla_chunked.block_sizes(n, v, bt, bv, dtype)
      fns.append((f"ours {shown[0]}x{shown[1]}" + (" (default)" if
                  b == "default" else ""), _ours(bt, bv)))
    compiled = [(label, jax.jit(f).lower(x, w, y).compile())
                for label, f in fns]
    for _, c in compiled:
      jax.block_until_ready(c(x, w, y))
    cpu = {label: [] for label, _ in compiled}
    for _ in range(args.repeats):
      for label, c in compiled:
        c0 = time.process_time()
        jax.block_until_ready(c(x, w, y))
        cpu[label].append(time.process_time() - c0)
    ref = statistics.median(cpu["reference"])
    for label, _ in compiled:
      med = statistics.median(cpu[label])
      print(f"| {args.shape} | {name} | {label} | {med:.2f} | "
            f"{med / ref:.3f} |", flush=True)


if __name__ == "__main__":
  main()
