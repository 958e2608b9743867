"""Benchmark: fused linear cross-entropy, loss + gradients (dX, dW).

Compares, on the same inputs in one run:

* ``ours``: ``diversity_jax.kernels.linear_cross_entropy`` (default
  implementation and options for the backend and host, or ``--impl``), and
  ``xla_chunked`` with each ``fused_backward``: False (streaming forward,
  recomputing backward, 8 N D V flops), True (gradients formed in the
  forward pass, 6 N D V);
* ``reference``: optax ``softmax_cross_entropy_with_integer_labels`` on
  materialized f32 logits ``x @ w.T``;
* ``tokamax``: ``tokamax.linear_softmax_cross_entropy_loss`` (each
  implementation of the installed version that runs on this backend; weights
  passed as (D, V) as its API wants, transposed once outside the timing);
* ``matmul LB``: the 8 N D V flops of the fused algorithm (logits, recomputed
  logits, dX, dW) as plain GEMMs over vocab blocks of 4096, no softmax.

For each: compiled temporary memory (``jit(...).lower(...).compile()
.memory_analysis().temp_size_in_bytes``), median wall time and process CPU
time of ``--repeats`` runs after one warm-up, and the ratios to the reference
and to the matmul lower bound. On a GPU / TPU read the wall-time columns (the
CPU-time ones only count the host thread waiting); on a shared CPU the CPU-time
ones. A function
whose materialized logits exceed ``--max-logits-gb`` is compiled (memory is
reported) but not run; ``--memory-only`` skips all timing.

``--gemm-rates`` adds, per shape and dtype, the GEMM rate (GFLOP per
process-CPU second) of the reference's three whole-problem GEMMs (``x w^T``,
``G w``, ``G^T x``) and of ``xla_chunked``'s default tiles (1024 tokens x 512
classes), and the time ratio they imply for 8 N D V flops on tiles against
6 N D V on whole GEMMs: the floor of ours / reference before any softmax
work.

Usage:
  python -m benchmarks.linear_cross_entropy                       # defaults
  python -m benchmarks.linear_cross_entropy --shapes 512x256x4096 --repeats 2
  python -m benchmarks.linear_cross_entropy --shapes 8192x2304x256000 --memory-only
  python -m benchmarks.linear_cross_entropy --shapes 2048x1024x16384 --gemm-rates
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from diversity_jax.kernels import linear_cross_entropy

DTYPES = {"f32": jnp.float32, "bf16": jnp.bfloat16}


def _inputs(n, d, v, dtype, seed=0, hot_classes=0):
  """Random x, w, labels; ``hot_classes > 0``: a peaked, LM-like softmax.

  With ``hot_classes = H``, H classes scattered over the vocabulary get +12 on
  every token's logit (a shared direction of x and their rows of w) and the
  labels are drawn from them: they take ~all of the probability mass, as
  frequent tokens do, and every other class has p ~ 1e-7.
  """
  kx, kw, ky, kh = jax.random.split(jax.random.key(seed), 4)
  x = jax.random.normal(kx, (n, d), jnp.float32)
  w = jax.random.normal(kw, (v, d), jnp.float32) / jnp.sqrt(d)
  y = jax.random.randint(ky, (n,), 0, v)
  if hot_classes:
    hot = jax.random.permutation(kh, v)[:hot_classes]
    x = x.at[:, 0].set(3.0)
    w = w.at[hot, 0].set(4.0)
    y = hot[y % hot_classes]
  return x.astype(dtype), w.astype(dtype), y


def _ours(impl, options):
  def loss(x, w, y):
    return linear_cross_entropy(x, w, y, implementation=impl, **options)
  return jax.value_and_grad(loss, (0, 1))


def _reference(x, w, y):
  def loss(x, w):
    logits = jnp.dot(x, w.T, preferred_element_type=jnp.float32)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
  return jax.value_and_grad(loss, (0, 1))(x, w)


def _tokamax(impl):
  import tokamax  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():   # tokamax reads absl flags at call time
    flags.FLAGS(["benchmark"])

  def loss(x, w_t, y):
    return tokamax.linear_softmax_cross_entropy_loss(
        x, y, w_t, reduction="mean", implementation=impl)
  return jax.value_and_grad(loss, (0, 1))


def _matmul_lower_bound(x, w, y, block=4096):
  """4 GEMMs per vocab block: x w_j^T twice (forward, recompute), dX, dW."""
  del y
  v = w.shape[0]
  block = min(block, v)
  nb = v // block
  x2 = x * jnp.asarray(1.0001, x.dtype)       # defeats CSE of the recompute

  def step(j, carry):
    acc, dx = carry
    wj = jax.lax.dynamic_slice_in_dim(w, j * block, block)
    z1 = jnp.dot(x, wj.T, preferred_element_type=jnp.float32)
    z2 = jnp.dot(x2, wj.T, preferred_element_type=jnp.float32).astype(x.dtype)
    dx = dx + jnp.dot(z2, wj, preferred_element_type=jnp.float32)
    dwj = jnp.dot(z2.T, x, preferred_element_type=jnp.float32)
    return acc + jnp.sum(z1) + jnp.sum(dwj), dx

  return jax.lax.fori_loop(0, nb, step, (jnp.zeros((), jnp.float32),
                                         jnp.zeros(x.shape, jnp.float32)))


_NT = (((1,), (1,)), ((), ()))    # a b^T
_NN = (((1,), (0,)), ((), ()))    # a b
_TN = (((0,), (0,)), ((), ()))    # a^T b


def _gemm_rates(n, d, v, dtype, repeats, bt=1024, bv=512):
  """GFLOP per CPU second of the reference's GEMMs and of our tiles."""
  def rate(m, k, c, dims):
    shape_a = {_NT: (m, k), _NN: (m, k), _TN: (k, m)}[dims]
    shape_b = {_NT: (c, k), _NN: (k, c), _TN: (k, c)}[dims]
    a, b = jnp.ones(shape_a, dtype), jnp.ones(shape_b, dtype)
    f = lambda a, b: jax.lax.dot_general(a, b, dims,
                                         preferred_element_type=jnp.float32)
    _, _, cpu = _measure(f, (a, b), True, repeats)
    return 2 * m * k * c / cpu / 1e9

  # Reference: logits (N, V), dX = G W (N, D), dW = G^T X (V, D).
  ref = [rate(n, d, v, _NT), rate(n, v, d, _NN), rate(v, n, d, _TN)]
  bt, bv = min(bt, n), min(bv, v)
  # Ours per tile: logits (bt, bv) twice, dX += G W_j, dW_j += G^T X_i.
  ours = [rate(bt, d, bv, _NT), rate(bt, bv, d, _NN), rate(bv, bt, d, _TN)]
  ref_time = sum(1 / r for r in ref)                 # 3 x 2NDV
  ours_time = 2 / ours[0] + 1 / ours[1] + 1 / ours[2]  # 4 x 2NDV
  return ref, ours, ours_time / ref_time


def _measure(fn, args, run, repeats, warmup=1):
  """(temp bytes, median wall s, median process CPU s) of a compiled ``fn``."""
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  temp = getattr(mem, "temp_size_in_bytes", float("nan"))
  if not run:
    return temp, float("nan"), float("nan")
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))
  walls, cpus = [], []
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    jax.block_until_ready(compiled(*args))
    walls.append(time.perf_counter() - t0)
    cpus.append(time.process_time() - c0)
  return temp, statistics.median(walls), statistics.median(cpus)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--shapes", default="4096x1024x65536",
                      help="comma-separated NxDxV")
  parser.add_argument("--dtypes", default="f32,bf16")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1)
  parser.add_argument("--impl", default=None,
                      help="our implementation (default: backend default)")
  parser.add_argument("--block-tokens", type=int, default=None)
  parser.add_argument("--block-vocab", type=int, default=None)
  parser.add_argument("--filter-eps", default="auto",
                      help="'auto', 'none' or a float")
  parser.add_argument("--max-logits-gb", type=float, default=6.0)
  parser.add_argument("--memory-only", action="store_true")
  parser.add_argument("--no-tokamax", action="store_true")
  parser.add_argument("--hot-classes", type=int, default=0,
                      help="peaked softmax: H hot classes hold ~all the mass")
  parser.add_argument("--vocab-sorting", action="store_true",
                      help="add a row for ours with vocab_sorting=True")
  parser.add_argument("--gemm-rates", action="store_true",
                      help="print the GEMM-rate floor of ours / reference")
  args = parser.parse_args(argv)

  options = {}
  if args.block_tokens:
    options["block_tokens"] = args.block_tokens
  if args.block_vocab:
    options["block_vocab"] = args.block_vocab
  fe = args.filter_eps
  options["filter_eps"] = (None if fe == "none" else
                           fe if fe == "auto" else float(fe))

  tokamax_impls = []
  if not args.no_tokamax:
    try:
      from tokamax._src.ops.linear_softmax_cross_entropy_loss import api  # pylint: disable=g-import-not-at-top
      tokamax_impls = list(api.IMPLEMENTATIONS)
    except ImportError:
      print("tokamax not installed: its rows are skipped")

  print(f"backend={jax.default_backend()} devices={jax.devices()} "
        f"jax={jax.__version__} repeats={args.repeats} options={options} "
        f"hot_classes={args.hot_classes}")
  print("| shape N x D x V | dtype | method | temp memory | vs reference | "
        "wall (s) | vs reference | vs matmul LB | CPU (s) | vs reference | "
        "vs matmul LB |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for shape in args.shapes.split(","):
    n, d, v = (int(s) for s in shape.lower().split("x"))
    for dname in args.dtypes.split(","):
      x, w, y = _inputs(n, d, v, DTYPES[dname], hot_classes=args.hot_classes)
      logits_gb = n * v * 4 / 2**30
      big = logits_gb > args.max_logits_gb
      run = not args.memory_only
      rows = []
      timing = (args.repeats, args.warmup)
      rows.append(("matmul LB (8NDV)",) +
                  _measure(_matmul_lower_bound, (x, w, y), run, *timing))
      rows.append(("reference (optax, logits)",) +
                  _measure(_reference, (x, w, y), run and not big, *timing))
      impl = args.impl or "default"
      rows.append((f"ours ({impl})",) +
                  _measure(_ours(args.impl, options), (x, w, y), run,
                           *timing))
      if args.vocab_sorting:
        rows.append((f"ours ({impl}, vocab_sorting)",) + _measure(
            _ours(args.impl, dict(options, vocab_sorting=True)), (x, w, y),
            run, *timing))
      if args.impl in (None, "xla_chunked"):
        for fused, label in ((False, "streaming"), (True, "fused_backward")):
          rows.append((f"ours (xla_chunked, {label})",) + _measure(
              _ours(args.impl, dict(options, fused_backward=fused)),
              (x, w, y), run, *timing))
      if tokamax_impls:
        w_t = jnp.asarray(w.T)
        for t_impl in tokamax_impls:
          try:
            rows.append((f"tokamax {t_impl}",) + _measure(
                _tokamax(t_impl), (x, w_t, y), run and not big, *timing))
          except Exception as e:  # pylint: disable=broad-except
            print(f"tokamax {t_impl}: not available here "
                  f"({type(e).__name__}: {str(e).splitlines()[0][:80]})")
      _, _, lb_wall, lb_cpu = rows[0]
      _, ref_mem, ref_wall, ref_cpu = rows[1]
      for name, temp, wall, cpu in rows:
        print(f"| {n}x{d}x{v} | {dname} | {name} | {temp / 2**20:,.1f} MiB | "
              f"{temp / ref_mem:.4f} | {wall:.2f} | {wall / ref_wall:.2f} | "
              f"{wall / lb_wall:.2f} | {cpu:.2f} | {cpu / ref_cpu:.2f} | "
              f"{cpu / lb_cpu:.2f} |", flush=True)
      if big:
        print(f"(logits {logits_gb:.1f} GiB > --max-logits-gb: materializing "
              "methods compiled for memory only, not run)")
      if args.gemm_rates and not big:
        ref, ours, floor = _gemm_rates(n, d, v, DTYPES[dname], args.repeats)
        fmt = lambda r: " / ".join(f"{g:.0f}" for g in r)
        print(f"GEMM GFLOP per CPU-s, {n}x{d}x{v} {dname}: reference "
              f"(logits / dX / dW) {fmt(ref)}; ours' tiles {fmt(ours)}; "
              f"8NDV on tiles / 6NDV whole = {floor:.2f}")


if __name__ == "__main__":
  main()
