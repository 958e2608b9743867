"""Benchmark: the selectors of ``diversity_jax.selection`` against brute force.

For each ``n`` (items of dimension ``--dim``, ``k = --k`` picks) and each
selector, in one run: compiled temporary memory
(``jit(...).lower(...).compile().memory_analysis().temp_size_in_bytes``) and
the median wall time of ``--repeats`` runs after a warm-up, for ours and for a
brute-force version written with full matrices:

* ``k_center``: ours keeps one ``(n,)`` min-distance vector (``O(n k d)``
  time, ``O(n)`` memory); brute force builds the ``(n, n)`` distance matrix
  and takes the max-min over its selected rows (``O(n^2 d)``, ``O(n^2)``).
* ``log_det``: ours is the incremental Cholesky (``O(n k^2)``, ``O(n k)``);
  brute force evaluates ``slogdet`` of every candidate's ``(t+1)``-subset at
  each step (``O(n k^4)``).
* ``kmeans``: ours with ``--block`` items per block against one block of all
  ``n`` items (the ``(n, k)`` distance matrix), same Lloyd steps.
* ``quadmix``: :func:`quadmix_sampling_values` (3 quality criteria, 8
  domains, token counts; sorts, ``O(n log n)``) and :func:`quadmix_sample`
  drawing the copies into a quota of ``n / 10`` slots.

The last column is the time ratio to the previous ``n``: about ``n`` growth
for k-center and log-det (times 2 when ``n`` doubles) and about ``n^2`` for
the brute-force k-center.

Usage:
  python -m benchmarks.selection                        # defaults
  python -m benchmarks.selection --ns 2000,4000,8000 --k 32 --repeats 3
  python -m benchmarks.selection --selectors quadmix --ns 10000,100000,1000000
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from diversity_jax import selection


def brute_k_center(x, k):
  d = jnp.sum(jnp.square(x[:, None] - x[None]), -1)  # (n, n)

  def step(t, idx):
    chosen = jnp.arange(k) < t
    rows = jnp.where(chosen[:, None], d[idx], jnp.inf)
    score = jnp.min(rows, axis=0).at[idx].set(
        jnp.where(chosen, -jnp.inf, jnp.min(rows, axis=0)[idx]))
    return idx.at[t].set(jnp.argmax(score).astype(jnp.int32))

  return jax.lax.fori_loop(1, k, step, jnp.zeros((k,), jnp.int32))


def brute_log_det(l, k):
  n = l.shape[0]

  def step(t, idx):
    def value(i):
      s = idx.at[t].set(i)
      filled = jnp.arange(k) <= t
      sub = l[s][:, s]
      sub = jnp.where(filled[:, None] & filled[None], sub, jnp.eye(k))
      return jnp.linalg.slogdet(sub)[1]
    v = jax.vmap(value)(jnp.arange(n))
    taken = (jnp.arange(n)[:, None] == idx[None]) & (jnp.arange(k) < t)[None]
    v = jnp.where(jnp.any(taken, 1), -jnp.inf, v)
    return idx.at[t].set(jnp.argmax(v).astype(jnp.int32))

  return jax.lax.fori_loop(0, k, step, jnp.zeros((k,), jnp.int32))


def measure(fn, args, repeats):
  compiled = jax.jit(fn).lower(*args).compile()
  mem = compiled.memory_analysis()
  temp = mem.temp_size_in_bytes if mem is not None else float("nan")
  jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return temp, statistics.median(times)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ns", default="1000,2000,4000")
  parser.add_argument("--dim", type=int, default=64)
  parser.add_argument("--k", type=int, default=16)
  parser.add_argument("--clusters", type=int, default=64)
  parser.add_argument("--block", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--selectors", default="",
                      help="comma-separated name prefixes to run (all if empty)")
  parser.add_argument("--max-brute-n", type=int, default=4000,
                      help="larger n: brute force is compiled, not run")
  args = parser.parse_args()
  ns = [int(v) for v in args.ns.split(",")]
  k = args.k
  print(f"backend {jax.default_backend()}, dim {args.dim}, k {k}")
  print(f"{'selector':<18}{'n':>8}{'temp MiB':>11}{'time ms':>10}"
        f"{'x prev n':>10}")
  previous = {}
  for n in ns:
    x = jax.random.normal(jax.random.key(0), (n, args.dim), jnp.float32)
    xn = x / jnp.linalg.norm(x, axis=1, keepdims=True)
    wanted = [p for p in args.selectors.split(",") if p]
    keep = lambda name: not wanted or name.startswith(tuple(wanted))
    # the (n, n) kernel only when a log-det row runs
    l = xn @ xn.T + 0.1 * jnp.eye(n) if keep("log_det") else None
    init = x[:args.clusters]
    quality = jax.random.uniform(jax.random.key(1), (n, 3))
    domains = jax.random.randint(jax.random.key(2), (n,), 0, 8)
    tokens = jax.random.randint(jax.random.key(3), (n,), 50, 2000).astype(
        jnp.float32)
    mix = dict(merge_weights=jnp.full((8, 3), 1 / 3), steepness=jnp.full(8, 50.),
               threshold=jnp.full(8, 0.3), exponent=jnp.full(8, 0.5),
               floor=jnp.full(8, 1e-3))
    values = selection.quadmix_sampling_values(quality, domains,
                                               num_tokens=tokens, **mix)
    rows = [
        ("k_center ours", lambda x: selection.k_center_greedy(x, k), (x,)),
        ("k_center brute", lambda x: brute_k_center(x, k), (x,)),
        ("log_det ours", lambda l: selection.greedy_log_det(l, k), (l,)),
        ("log_det brute", lambda l: brute_log_det(l, k), (l,)),
        ("kmeans blocked", functools.partial(
            selection.kmeans, num_steps=3, block_size=args.block),
         (x, init)),
        ("kmeans one block", functools.partial(
            selection.kmeans, num_steps=3, block_size=n), (x, init)),
        ("quadmix values", lambda q, d, t: selection.quadmix_sampling_values(
            q, d, num_tokens=t, **mix), (quality, domains, tokens)),
        ("quadmix sample", lambda key, s: selection.quadmix_sample(
            key, s, n // 10), (jax.random.key(4), values)),
    ]
    rows = [r for r in rows if keep(r[0])]
    for name, fn, fargs in rows:
      if "brute" in name and n > args.max_brute_n:
        temp = jax.jit(fn).lower(*fargs).compile().memory_analysis()
        temp = temp.temp_size_in_bytes if temp is not None else float("nan")
        seconds = float("nan")
      else:
        temp, seconds = measure(fn, fargs, args.repeats)
      ratio = seconds / previous[name] if name in previous else float("nan")
      previous[name] = seconds
      print(f"{name:<18}{n:>8}{temp / 2**20:>11.2f}{seconds * 1e3:>10.2f}"
            f"{ratio:>10.2f}")


if __name__ == "__main__":
  main()
