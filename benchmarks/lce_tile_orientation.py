"""Benchmark: GEMM rate of token-major vs vocab-major logit tiles on this CPU.

The fused linear cross-entropy path (``fused_backward``) holds full-vocabulary
logit tiles. A tile can be token-major, ``(rows, V) = x_blk W^T``, or
vocab-major, ``(V, rows) = W x_blk^T``; the two run the same flops, but
XLA:CPU's dot libraries do not run them alike. Prints GFLOP per process-CPU
second, f32, for:

* ``tile``: the logit GEMM alone, ``x_blk W^T`` and ``W x_blk^T``;
* ``loop``: the fused path's 6 N D V work without the loss algebra: per
  token block the logit tile, an ``exp`` pass, ``dX = G W`` and ``dW += G^T
  x_blk`` in vocab chunks of 512, in each orientation;
* ``whole``: the reference's three whole-problem GEMMs (``x W^T``, ``G W``,
  ``G^T x``).

Run it once per dot library / ISA, e.g.::

  python -m benchmarks.lce_tile_orientation
  XLA_FLAGS="--xla_cpu_max_isa=AVX2 --xla_cpu_experimental_ynn_fusion_type=" \\
      python -m benchmarks.lce_tile_orientation
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

F32 = jnp.float32
CHUNK = 512


def _dot(a, b, ca, cb):
  return jax.lax.dot_general(a, b, (((ca,), (cb,)), ((), ())))


def _cpu_seconds(fn, *args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    c0 = time.process_time()
    jax.block_until_ready(compiled(*args))
    times.append(time.process_time() - c0)
  return statistics.median(times)


def fused_loop(rows, vocab_major):
  """6 N D V of the fused path: logits, exp, dX, chunked dW per token block."""
  ax = 0 if vocab_major else 1          # the tile's vocab axis

  def run(x, w):
    n, v = x.shape[0], w.shape[0]

    def block(i, carry):
      dx, dw = carry
      xb = jax.lax.dynamic_slice_in_dim(x, i * rows, rows)
      s = _dot(w, xb, 1, 1) if vocab_major else _dot(xb, w, 1, 1)
      g = jnp.exp(s - jnp.max(s, axis=ax, keepdims=True)) * 1e-3
      dx = jax.lax.dynamic_update_slice_in_dim(dx, _dot(g, w, ax, 0),
                                               i * rows, 0)

      def chunk(j, dw):
        gc = jax.lax.dynamic_slice_in_dim(g, j * CHUNK, CHUNK, ax)
        upd = _dot(gc, xb, 1 - ax, 0)
        old = jax.lax.dynamic_slice_in_dim(dw, j * CHUNK, CHUNK, 0)
        return jax.lax.dynamic_update_slice_in_dim(dw, old + upd, j * CHUNK,
                                                   0)

      return dx, jax.lax.fori_loop(0, v // CHUNK, chunk, dw)

    return jax.lax.fori_loop(0, n // rows, block,
                             (jnp.zeros_like(x), jnp.zeros_like(w)))
  return run


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shape", default="2048x1024x16384", help="N x D x V")
  parser.add_argument("--rows", default="256,512,1024",
                      help="token rows per tile")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args(argv)
  n, d, v = (int(s) for s in args.shape.split("x"))
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (n, d), F32)
  w = jax.random.normal(keys[1], (v, d), F32)
  g = jax.random.normal(keys[2], (n, v), F32)
  rate = lambda flops, sec: f"{flops / sec / 1e9:.0f}"
  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r} shape {args.shape}, "
        "f32, GFLOP per CPU-s")
  print("| what | rows | token-major (rows, V) | vocab-major (V, rows) |")
  print("|---|---|---|---|")
  for r in (int(s) for s in args.rows.split(",")):
    xb = x[:r]
    tok = _cpu_seconds(lambda a, b: _dot(a, b, 1, 1), xb, w,
                       repeats=args.repeats)
    voc = _cpu_seconds(lambda a, b: _dot(b, a, 1, 1), xb, w,
                       repeats=args.repeats)
    print(f"| tile | {r} | {rate(2 * r * d * v, tok)} | "
          f"{rate(2 * r * d * v, voc)} |", flush=True)
  for r in (int(s) for s in args.rows.split(",")):
    tok, voc = (_cpu_seconds(fused_loop(r, vm), x, w, repeats=args.repeats)
                for vm in (False, True))
    print(f"| loop (6 N D V) | {r} | {rate(6 * n * d * v, tok)} | "
          f"{rate(6 * n * d * v, voc)} |", flush=True)
  whole = [_cpu_seconds(f, *a, repeats=args.repeats) for f, a in (
      (lambda a, b: _dot(a, b, 1, 1), (x, w)),
      (lambda a, b: _dot(a, b, 1, 0), (g, w)),
      (lambda a, b: _dot(a, b, 0, 0), (g, x)))]
  print("whole GEMMs (logits / dX / dW): "
        + " / ".join(rate(2 * n * d * v, t) for t in whole))


if __name__ == "__main__":
  main()
