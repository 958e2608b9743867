"""Benchmark: the Vendi score of the Gaussian kernel, exact vs RFF vs Nystrom.

Part 1, at ``--n-exact`` items (a 10-component Gaussian mixture in
``--dim`` dimensions, bandwidth 2): the exact score (:func:`vendi_score` on
the ``n x n`` kernel, kernel build included) against
:func:`vendi_score_rff` and :func:`vendi_score_nystrom` at each feature
count of ``--features`` (``D`` frequencies, i.e. ``2 D`` features; ``m``
landmarks). Columns: entropy error ``|log VS_approx - log VS|`` (mean over
``--keys`` keys), median wall and CPU (user + sys of this process) time of
``--repeats`` interleaved repeats after a warm-up, the compiled temporary
memory, and the time ratio to the exact score.

Part 2, at each ``--ns`` (default up to ``10^6``): the time and temporary
memory of the two approximations at ``--large-features`` (the exact score
would need the ``n x n`` kernel: 4 TB in f32 at ``n = 10^6``).

Usage:
  python -m benchmarks.vendi                                  # defaults
  python -m benchmarks.vendi --ns 10000,100000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from diversity_jax.diversity import vendi_score
from diversity_jax.diversity import vendi_score_nystrom
from diversity_jax.diversity import vendi_score_rff
from diversity_jax.diversity._kernel_features import rbf_kernel

SIGMA = 2.0


def mixture(n, dim, seed=0):
  rng = np.random.RandomState(seed)
  centers = 3.0 * rng.randn(10, dim)
  x = centers[rng.randint(10, size=n)] + 0.5 * rng.randn(n, dim)
  return jnp.asarray(x, jnp.float32)


def _temp_mib(fn, *args):
  try:
    mem = fn.lower(*args).compile().memory_analysis()
    return mem.temp_size_in_bytes / 2**20
  except Exception:  # pylint: disable=broad-except
    return float("nan")


def _cpu_seconds():
  t = os.times()
  return t.user + t.system


def _time(fns, args, repeats):
  """Median wall / CPU seconds per fn, repeats interleaved across fns."""
  for f, a in zip(fns, args):
    jax.block_until_ready(f(*a))
  wall = [[] for _ in fns]
  cpu = [[] for _ in fns]
  for _ in range(repeats):
    for i, (f, a) in enumerate(zip(fns, args)):
      t0, c0 = time.perf_counter(), _cpu_seconds()
      jax.block_until_ready(f(*a))
      wall[i].append(time.perf_counter() - t0)
      cpu[i].append(_cpu_seconds() - c0)
  return ([statistics.median(w) for w in wall],
          [statistics.median(c) for c in cpu])


def _approx(kind, count):
  if kind == "rff":
    return jax.jit(lambda x, k: vendi_score_rff(x, k, bandwidth=SIGMA,
                                                num_features=count))
  return jax.jit(lambda x, k: vendi_score_nystrom(x, k, bandwidth=SIGMA,
                                                  num_landmarks=count))


def part_exact(n, dim, counts, num_keys, repeats):
  x = mixture(n, dim)
  exact_fn = jax.jit(lambda a: vendi_score(rbf_kernel(a, a, SIGMA)))
  exact = float(exact_fn(x))
  keys = jax.random.split(jax.random.key(0), num_keys)
  rows, fns, args = [("exact", n, 0.0)], [exact_fn], [(x,)]
  for kind in ("rff", "nystrom"):
    for c in counts:
      f = _approx(kind, c)
      errs = [abs(np.log(float(f(x, k))) - np.log(exact)) for k in keys]
      rows.append((f"{kind} {c}", c, float(np.mean(errs))))
      fns.append(f)
      args.append((x, keys[0]))
  wall, cpu = _time(fns, args, repeats)
  print(f"n {n}, dim {dim}, exact VS_1 {exact:.2f}")
  print(f"{'method':14s} {'|dlogVS|':>9s} {'wall ms':>9s} {'cpu ms':>9s} "
        f"{'temp MiB':>9s} {'x exact':>8s}")
  for (name, _, err), f, a, w, c in zip(rows, fns, args, wall, cpu):
    print(f"{name:14s} {err:9.4f} {1e3 * w:9.1f} {1e3 * c:9.1f} "
          f"{_temp_mib(f, *a):9.2f} {w / wall[0]:8.3f}")


def part_large(ns, dim, count, repeats):
  print(f"\nlarge n, dim {dim}, {count} frequencies / landmarks")
  print(f"{'method':14s} {'n':>9s} {'wall s':>9s} {'cpu s':>9s} "
        f"{'temp MiB':>9s} {'VS_1':>9s}")
  key = jax.random.key(0)
  for n in ns:
    x = mixture(n, dim, seed=1)
    fns = [_approx("rff", count), _approx("nystrom", count)]
    wall, cpu = _time(fns, [(x, key)] * 2, repeats)
    for name, f, w, c in zip(("rff", "nystrom"), fns, wall, cpu):
      print(f"{name:14s} {n:9d} {w:9.2f} {c:9.2f} "
            f"{_temp_mib(f, x, key):9.2f} {float(f(x, key)):9.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--n-exact", type=int, default=2000)
  parser.add_argument("--dim", type=int, default=8)
  parser.add_argument("--features", default="64,256")
  parser.add_argument("--keys", type=int, default=3)
  parser.add_argument("--ns", default="10000,100000,1000000")
  parser.add_argument("--large-features", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args()
  print(f"backend {jax.default_backend()}")
  part_exact(args.n_exact, args.dim,
             [int(c) for c in args.features.split(",")], args.keys,
             args.repeats)
  if args.ns:
    part_large([int(n) for n in args.ns.split(",")], args.dim,
               args.large_features, args.repeats)


if __name__ == "__main__":
  main()
