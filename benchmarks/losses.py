"""Loss catalog timing: jitted value+grad of each loss relative to optax CE.

Every public loss of ``diversity_jax.losses`` that takes ``(logits, labels)``
(found from its signature; required keyword hyperparameters such as
``class_counts``, ``key`` or ``support`` are filled from a table) is timed as
``jax.jit(jax.value_and_grad(lambda z: loss(z, y).mean()))`` on the same
``(B, K)`` logits and labels as
``optax.softmax_cross_entropy_with_integer_labels``. The two are timed
alternately within one run; the median of the per-pair time ratios is
printed, with the median optax CE time for scale.

A loss that reads several ``(B, K)`` logits arrays (the teacher of symmetric
CE, the experts of MDCS) is also given per array read ("per array" column),
and its differentiated input is built before timing (MDCS's ``(3, B, K)``
stack is an argument, not work inside the timed function).
Two load-independent columns come from XLA's cost analysis of the compiled
value+grad: bytes accessed and transcendental ops (``exp``, ``log``, ``erf``
...), each relative to optax CE. On a CPU the time of these memory-bound
losses follows the bytes (the number of passes over ``(B, K)`` arrays) and
the transcendental passes.
Public names that do not take ``(logits, labels)`` (metric-learning losses on
embeddings, binary or batch-level losses, helpers) are listed as skipped with
the reason.

Run: python -m benchmarks.losses [--batch 4096 --classes 1000 --repeats 20]
     [--losses comp_sum,aldr_kl]
"""

from __future__ import annotations

import argparse
import inspect
import time
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from diversity_jax import losses


def _required_kwargs(num_classes: int, key):
  """Values for required keyword-only hyperparameters, by parameter name."""
  counts = np.geomspace(1000.0, 1.0, num_classes).astype(np.float32)
  return {
      "class_counts": counts,
      "key": key,
  }


# (logits, labels) by signature, but binary (B,) scores: not comparable.
_BINARY = {"ensloss": "binary: takes (B,) scores, not (B, K) logits",
           "anyloss": "binary: takes (B,) scores, not (B, K) logits"}


class _Case(NamedTuple):
  """How to time one loss: ``call(x, labels, aux)`` differentiated in ``x``."""
  note: str
  call: Callable[..., Any]
  aux: Any
  inputs: Optional[jax.Array] = None  # x; None: the (B, K) logits
  arrays: int = 1  # (B, K) logits arrays the loss reads


def _adapters(logits, labels, key):
  """Losses whose extra inputs are built from the same batch.

  Every array is an argument of the jitted function (closing over a concrete
  array would let XLA constant-fold part of the loss at compile time).
  """
  batch, num_classes = logits.shape
  counts = _required_kwargs(num_classes, key)["class_counts"]
  return {
      "bias_loss": _Case(
          "+ (B, 64) features",
          lambda z, y, a: losses.bias_loss(z, y, a)[0],
          jax.random.normal(key, (batch, 64), jnp.float32)),
      "hl_gauss_loss": _Case(
          "float targets in the support",
          lambda z, y, a: losses.hl_gauss_loss(z, a[0], support=a[1]),
          ((labels.astype(jnp.float32) / num_classes) * 2.0 - 1.0,
           jnp.linspace(-1.0, 1.0, num_classes + 1))),
      "mdcs_diversity_loss": _Case(
          "3 experts: (3, B, K) stack of the logits",
          lambda x, y, a: losses.mdcs_diversity_loss(x, y, class_counts=a),
          jnp.asarray(counts),
          inputs=jnp.stack([logits, logits * 0.5, -logits]), arrays=3),
      "spherical_z_loss": _Case(
          "a=1, b=2 (no canonical defaults)",
          lambda z, y, a: losses.spherical_z_loss(z, y, a=1.0, b=2.0),
          None),
      "log_partition_penalty": _Case(
          "regularizer on logits only (no labels)",
          lambda z, y, a: losses.log_partition_penalty(z),
          None),
      "aldr_kl": _Case(
          "+ (B,) per-example temperatures (state)",
          lambda z, y, a: losses.aldr_kl(z, y, a)[0],
          jnp.ones((batch,), jnp.float32)),
      "symmetric_cross_entropy": _Case(
          "+ (B, K) teacher logits (no grad)",
          lambda z, y, a: losses.symmetric_cross_entropy(
              z, jax.lax.stop_gradient(a)),
          jax.random.normal(key, (batch, num_classes), jnp.float32),
          arrays=2),
  }


def _generic_call(name, fn, logits, labels, key):
  """``_Case`` of ``fn(z, y, **required)`` if the signature fits, else a reason."""
  params = list(inspect.signature(fn).parameters.values())
  positional = [p for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
  names = [p.name for p in positional[:2]]
  if names != ["logits", "labels"]:
    return None, f"takes ({', '.join(p.name for p in positional)})"
  if any(p.default is p.empty for p in positional[2:]):
    return None, "needs more positional inputs"
  table = _required_kwargs(logits.shape[-1], key)
  required = []
  for p in params:
    if p.kind == p.KEYWORD_ONLY and p.default is p.empty:
      if p.name not in table:
        return None, f"required keyword `{p.name}` has no benchmark value"
      required.append(p.name)
  aux = {k: table[k] for k in required}
  return _Case("", lambda z, y, a: fn(z, y, **a), aux), None


def _timer(fn, args):
  jax.block_until_ready(fn(*args))  # compile outside the timed region
  times = []

  def once():
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return once, times


def _costs(fn, args):
  """``(bytes accessed, transcendentals)`` of the compiled ``fn(*args)``."""
  analysis = fn.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
    analysis = analysis[0] if analysis else {}
  analysis = analysis or {}
  return (analysis.get("bytes accessed", float("nan")),
          analysis.get("transcendentals", 0.0))


def _references(logits, labels):
  """Reference rows, timed against optax CE like the losses.

  ``[pass]``: one elementwise pass over an array of the logits' size, which
  prices a loss's passes beyond CE's. ``[ref]``: optax CE on the inputs of a
  loss that reads more than the ``(B, K)`` logits, and parts of a loss
  (one option off) that price its components. ``{name: (note, fn, args,
  arrays)}``, ``fn`` jitted.
  """
  batch, num_classes = logits.shape
  stack = jnp.stack([logits, logits * 0.5, -logits])
  edges = jnp.broadcast_to(jnp.linspace(-1.0, 1.0, num_classes + 1),
                           (batch, num_classes + 1))
  ce = optax.softmax_cross_entropy_with_integer_labels
  soft_targets = losses.hl_gauss_targets(
      (labels.astype(jnp.float32) / num_classes) * 2.0 - 1.0,
      jnp.linspace(-1.0, 1.0, num_classes + 1))
  return {
      "[pass] z + 1": ("read (B, K), write (B, K)", jax.jit(lambda z: z + 1.0),
                       (logits,), 1),
      "[pass] exp(z)": ("read, exp, write (B, K)", jax.jit(jnp.exp),
                        (logits,), 1),
      "[pass] log(|z|)": ("read, log, write (B, K)",
                          jax.jit(lambda z: jnp.log(jnp.abs(z))), (logits,), 1),
      "[pass] erf(edges)": ("read, erf, write (B, K + 1)",
                            jax.jit(jax.scipy.special.erf), (edges,), 1),
      "[ref] optax CE, 3-expert stack": (
          "value+grad of optax CE on MDCS's (3, B, K) input",
          jax.jit(jax.value_and_grad(lambda x, y: jnp.mean(
              ce(x, jnp.broadcast_to(y, x.shape[:-1])).sum(0)))),
          (stack, labels), 3),
      "[ref] ldr_kl, l1 transform": (
          "ldr_kl(logit_transform='l1'): aldr_kl's default normalization",
          jax.jit(jax.value_and_grad(lambda z, y: jnp.mean(
              losses.ldr_kl(z, y, logit_transform="l1")))),
          (logits, labels), 1),
      "[ref] aldr_kl, no transform": (
          "aldr_kl(logit_transform=None): without the l1 normalization",
          jax.jit(jax.value_and_grad(lambda z, y, t: jnp.mean(
              losses.aldr_kl(z, y, t, logit_transform=None)[0]))),
          (logits, labels, jnp.ones((batch,), jnp.float32)), 1),
      "[ref] optax CE, soft targets": (
          "value+grad of optax CE against hl_gauss_loss's (B, K) targets",
          jax.jit(jax.value_and_grad(lambda z, t: jnp.mean(
              optax.softmax_cross_entropy(z, t)))),
          (logits, soft_targets), 1),
  }


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=4096)
  parser.add_argument("--classes", type=int, default=1000)
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--losses", default="",
                      help="comma-separated names to time (default: all)")
  parser.add_argument("--no-references", action="store_true",
                      help="skip the single-pass reference rows")
  args = parser.parse_args(argv)

  key = jax.random.key(0)
  k1, k2, k3 = jax.random.split(key, 3)
  logits = jax.random.normal(k1, (args.batch, args.classes), jnp.float32)
  labels = jax.random.randint(k2, (args.batch,), 0, args.classes)

  def value_and_grad(per_example):
    return jax.jit(jax.value_and_grad(
        lambda z, y, a: jnp.mean(per_example(z, y, a))))

  base = value_and_grad(
      lambda z, y, a: optax.softmax_cross_entropy_with_integer_labels(z, y))
  base_args = (logits, labels, None)
  base_bytes, base_transcendentals = _costs(base, base_args)

  def measure(name, note, fn, fn_args, arrays):
    """One row: ``fn(*fn_args)`` and optax CE timed in alternating pairs."""
    run_fn, fn_times = _timer(fn, fn_args)
    num_bytes, transcendentals = _costs(fn, fn_args)
    run_base, base_times = _timer(base, base_args)
    for _ in range(args.repeats):  # alternate, so drift hits both alike
      run_base()
      run_fn()
    # Median of per-pair ratios: a load burst from other processes hits both
    # members of a pair alike, so this is steadier than a ratio of medians or
    # of minima on a shared machine.
    ratio = np.median(np.asarray(fn_times) / np.asarray(base_times))
    return (name, ratio, ratio / arrays, num_bytes / base_bytes,
            transcendentals / base_transcendentals,
            np.median(base_times) * 1e3, note)

  adapters = _adapters(logits, labels, k3)
  names = args.losses.split(",") if args.losses else losses.__all__
  rows, skipped = [], []
  for name in names:
    fn = getattr(losses, name)
    if name in _BINARY:
      skipped.append((name, _BINARY[name]))
      continue
    if name in adapters:
      case = adapters[name]
    else:
      case, reason = _generic_call(name, fn, logits, labels, k3)
      if case is None:
        skipped.append((name, reason))
        continue
    inputs = logits if case.inputs is None else case.inputs
    try:
      rows.append(measure(name, case.note, value_and_grad(case.call),
                          (inputs, labels, case.aux), case.arrays))
    except Exception as e:  # pylint: disable=broad-except
      skipped.append((name, f"failed: {type(e).__name__}: {e}"[:100]))
  if not args.no_references:
    for name, (note, fn, fn_args, arrays) in _references(
        logits, labels).items():
      rows.append(measure(name, note, fn, fn_args, arrays))

  print(f"jitted value+grad, logits ({args.batch}, {args.classes}) f32, "
        f"median of {args.repeats} pairs, device {jax.devices()[0].device_kind}")
  print(f"{'loss':34s} {'time / optax CE':>15s} {'per array':>9s} "
        f"{'bytes / CE':>10s} {'transc. / CE':>12s} {'CE ms':>8s}  note")
  print(f"{'optax softmax CE (integer labels)':34s} {1.0:15.2f} {1.0:9.2f} "
        f"{1.0:10.2f} {1.0:12.2f}")
  for name, ratio, per_array, num_bytes, transc, base_ms, note in rows:
    print(f"{name:34s} {ratio:15.2f} {per_array:9.2f} {num_bytes:10.2f} "
          f"{transc:12.2f} {base_ms:8.2f}  {note}")
  if skipped:
    print("not timed (do not take (logits, labels)):")
    for name, reason in skipped:
      print(f"  {name}: {reason}")


if __name__ == "__main__":
  main()
