"""Step time of each training rule relative to the plain optimizer step.

Run: ``python -m benchmarks.transforms [--rounds 7] [--iters 10]
[--torch-python /path/to/python]``.

Same MLP, batch and SGD for every rule; the JAX steps follow the protocol of
``diversity_jax.transforms`` (trainer's value_and_grad + ``tx.update``) in one
``jax.jit``. Rules are timed round-robin (``--rounds`` rounds of ``--iters``
steps each) and each ratio is the median over rounds of rule / plain, so load
from other jobs hits numerator and denominator alike. Every round starts
from the same state, so with ``--iters`` a multiple of ``k`` each round of an
``every_k_steps`` row (``sam_k*``) holds ``iters / k`` SAM steps; the
``k5_*`` rows hold their state at a SAM step or at a step in between,
timing that kind of step alone. ``dots`` counts both ``lax.cond`` branches
of the compiled step, i.e. a SAM step. The PyTorch part times
DomainBed-style implementations of the same rules on the same MLP (torch CPU);
it runs in-process when ``torch`` imports, else through ``--torch-python``
(an interpreter that has torch), else it prints "torch not installed".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# One intra-op thread for JAX and torch alike (shared 2-core machine).
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false "
    "intra_op_parallelism_threads=1")

import numpy as np

D_IN, HID, K = 64, 256, 10
B, E = 128, 4                 # single-domain batch; E domains of B // E
N_TRAIN = 1024
PROBES = 2

# (name, passes note); F = forward matmul work, f1 = the first layer's (a
# plain step is 3F - f1: forward, weight gradients, input gradients but the
# first layer's).
RULES = [
    ("sam", "2 (fwd+bwd at w, fwd+bwd at w+e)"),
    ("asam", "2"),
    ("gnp_exact", "grad + HVP tangent (floor 1+(6F-4f1)/(3F-f1): 2.75 dots)"),
    ("gnp_fd", "2 (grad at w and at w + r g/|g|)"),
    ("saf", "1 (fused fwd+bwd; trainer's grad is dead code)"),
    ("mesa", "EMA fwd + fused fwd+bwd (floor 1+F/(3F-f1): 1.375 dots)"),
    ("hgp", "per domain: head grad + HVP, differentiated once more"),
    ("hutchinson", f"per domain: head grad + {PROBES} HVPs, differentiated"),
    ("udim", "double backprop in x, SAM step, per-example head grads "
             "on 2B and their backward"),
    ("gsam", "2 (as SAM, plus the decomposition)"),
    ("sam_k1", "2 (every_k_steps(sam, 1): the wrapper alone)"),
    ("sam_k2", "mean 1.5: SAM on 1 step in 2, LookSAM reuse between"),
    ("sam_k5", "mean 1.2: SAM on 1 step in 5, LookSAM reuse between"),
    ("sam_k5_grad", "mean 1.2: SAM on 1 step in 5, plain gradient between"),
    ("k5_sam_step", "2: a sam_k5 SAM step alone (state held at step 0)"),
    ("k5_between", "1: a sam_k5 step in between alone (held at step 1)"),
    ("k5g_between", "1: a sam_k5_grad step in between alone"),
]
# every_k_steps rows timed on one kind of step: their state is held at this
# step count.
HELD = {"k5_sam_step": 0, "k5_between": 1, "k5g_between": 1}
DOMAIN_RULES = {"hgp", "hutchinson"}
# Rules with a PyTorch implementation below (the others print "-").
TORCH_RULES = {"plain", "sam", "asam", "gnp_exact", "gnp_fd", "saf", "mesa",
               "hgp", "hutchinson", "udim"}


def _data(seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(B, D_IN)).astype(np.float32)
  y = rng.integers(0, K, size=(B,)).astype(np.int64)
  idx = rng.permutation(N_TRAIN)[:B].astype(np.int64)
  w = [rng.normal(size=s).astype(np.float32) * (1 / np.sqrt(s[0]))
       for s in ((D_IN, HID), (HID, HID), (HID, K))]
  return x, y, idx, w


# ----------------------------------------------------------------------------
# JAX


def run_jax(rounds, iters):
  import jax
  import jax.numpy as jnp
  import optax
  from diversity_jax import transforms

  x, y, idx, w = _data()
  params = {"l1": {"w": jnp.asarray(w[0]), "b": jnp.zeros(HID)},
            "l2": {"w": jnp.asarray(w[1]), "b": jnp.zeros(HID)},
            "head": {"w": jnp.asarray(w[2]), "b": jnp.zeros(K)}}

  def loss_fn(p, batch):
    h = jax.nn.relu(batch["x"] @ p["l1"]["w"] + p["l1"]["b"])
    h = jax.nn.relu(h @ p["l2"]["w"] + p["l2"]["b"])
    logits = h @ p["head"]["w"] + p["head"]["b"]
    per = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"])
    return per.mean(), {"logits": logits, "per_example_loss": per}

  flat = {"x": jnp.asarray(x), "y": jnp.asarray(y, jnp.int32),
          "index": jnp.asarray(idx, jnp.int32)}
  dom = jax.tree_util.tree_map(
      lambda a: a.reshape((E, B // E) + a.shape[1:]), flat)
  makers = {
      "plain": lambda: optax.identity(),
      "sam": lambda: transforms.sam(0.05),
      "asam": lambda: transforms.sam(0.5, adaptive=True),
      "gnp_exact": lambda: transforms.gradient_norm_penalty(0.1),
      "gnp_fd": lambda: transforms.gradient_norm_penalty(
          0.1, method="finite_difference", r=0.05),
      "saf": lambda: transforms.saf(N_TRAIN, K, steps_per_epoch=1, lag=1,
                                    start_epoch=0),
      "mesa": lambda: transforms.mesa(steps_per_epoch=1, start_epoch=0),
      "hgp": lambda: transforms.hessian_alignment("hgp", head="head"),
      "hutchinson": lambda: transforms.hessian_alignment(
          "hutchinson", head="head", num_probes=PROBES),
      "udim": lambda: transforms.udim(0.05, head="head"),
      "gsam": lambda: transforms.gsam(
          optax.linear_schedule(0.01, 0.001, 1000), lr_max=0.01,
          lr_min=0.001, rho_max=0.05, rho_min=0.01, alpha=0.3),
      "sam_k1": lambda: transforms.every_k_steps(transforms.sam(0.05), 1),
      "sam_k2": lambda: transforms.every_k_steps(transforms.sam(0.05), 2),
      "sam_k5": lambda: transforms.every_k_steps(transforms.sam(0.05), 5),
      "sam_k5_grad": lambda: transforms.every_k_steps(
          transforms.sam(0.05), 5, between="gradient"),
  }
  makers["k5_sam_step"] = makers["k5_between"] = makers["sam_k5"]
  makers["k5g_between"] = makers["sam_k5_grad"]

  def make(name):
    tx = optax.chain(makers[name](), optax.sgd(0.01))

    @jax.jit
    def step(p, s, batch, key):
      (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(p, batch)
      u, s = tx.update(g, s, p, loss_fn=loss_fn, batch=batch, key=key)
      return optax.apply_updates(p, u), s, loss
    return step, tx.init(params)

  names = ["plain"] + [r for r, _ in RULES]
  steps = {n: make(n) for n in names}
  batches = {n: (dom if n in DOMAIN_RULES else flat) for n in names}
  key = jax.random.key(0)
  # Load-independent cost: matmuls (dot ops) in the compiled step.
  dots = {}
  for n in names:
    step, s0 = steps[n]
    hlo = step.lower(params, s0, batches[n], key).compile().as_text()
    dots[n] = hlo.count(" dot(")
  state = {}
  for n in names:                       # compile + warm up
    step, s = steps[n]
    p = params
    for _ in range(2):
      p, s, loss = step(p, s, batches[n], key)
    jax.block_until_ready(loss)
    if n in HELD:
      s = optax.tree_utils.tree_set(s, step=jnp.asarray(HELD[n], jnp.int32))
    state[n] = (p, s)
  # Plain step on the domain batch too (HGP/Hutchinson ratio denominators
  # use the same example count; the flat and domain batches hold B each).
  times = {n: [] for n in names}
  for _ in range(rounds):
    for n in names:
      step, _ = steps[n]
      p, s = state[n]
      t0 = time.perf_counter()
      for _ in range(iters):
        p, s_next, loss = step(p, s, batches[n], key)
        s = s if n in HELD else s_next
      jax.block_until_ready((p, loss))
      times[n].append((time.perf_counter() - t0) / iters)
  return times, dots


# ----------------------------------------------------------------------------
# PyTorch (DomainBed-style reference implementations, written for this file)


def torch_udim_grads(params, features, head, x, y, *, rho, syn_lr,
                     worst_weight, dim=0):
  """One UDIM step's gradient in PyTorch, as the authors' IADA_FINAL.step.

  Transcribed (not copied) from aailabkaist/UDIM (the code of
  SJShin-AI/UDIM), ``UDIM_main/domainbed/iada/iada_final.py``: ``get_grad``
  (clean gradient with ``create_graph``, SAM's ``e = rho g / ||g||``, input
  gradient of ``CE + rho ||g||``), ``perturb_instances`` (``x + syn_lr *
  F.normalize(grad_x, dim=0)``; ``dim=1`` normalizes per instance),
  ``sam_compute_grad`` (gradient at ``w + e`` on the clean batch),
  ``inconsistency_compute_grad`` (per-example gradients of the linear
  ``head`` on ``[x; x_syn]``, written out as the outer products backpack's
  ``BatchGrad``/``BatchL2Grad`` compute; Fishr-style variance distance +
  mean squared per-example norm of the ``x_syn`` half, each head tensor
  divided by its size) and ``merge_grad``. ``params`` (leaf tensors, the
  head's weight and bias last) are perturbed in place and restored.

  Returns:
    ``(grads, inconsistency)``: the update direction for each of ``params``
    and the inconsistency value.
  """
  import torch
  import torch.nn.functional as F
  from torch import autograd

  def norm(ts):
    return torch.norm(torch.stack([t.norm(2) for t in ts]), 2)

  xs = x.clone().requires_grad_(True)
  loss = F.cross_entropy(head(features(xs)), y)
  g = autograd.grad(loss, params, create_graph=True)
  gnorm = norm(g)
  es = [gi.detach() * (rho / gnorm.detach()) for gi in g]
  (s,) = autograd.grad(loss + rho * gnorm, xs)
  x_syn = (xs + syn_lr * F.normalize(s, p=2.0, dim=dim)).detach()
  with torch.no_grad():
    for p, e in zip(params, es):
      p.add_(e)
  g_sam = autograd.grad(F.cross_entropy(head(features(x)), y), params)
  with torch.no_grad():
    for p, e in zip(params, es):
      p.sub_(e)
  feats = features(torch.cat([x, x_syn]))
  logits = head(feats)
  (delta,) = autograd.grad(
      F.cross_entropy(logits, torch.cat([y, y]), reduction="sum"), logits,
      create_graph=True)                                  # (2B, K)
  per_ex = [(delta[:, :, None] * feats[:, None, :]).flatten(1), delta]
  nb = x.shape[0]
  v_clean, v_syn, norm_term = [], [], 0.0
  for gr in per_ex:                                       # weight, bias
    clean, syn = gr[:nb], gr[nb:]
    m = clean.mean(0, keepdim=True)
    v_clean.append((clean - m).pow(2).mean(0))
    v_syn.append((syn - m).pow(2).mean(0))
    norm_term = norm_term + syn.pow(2).sum(1).mean() / gr.shape[1]
  v_clean, v_syn = torch.cat(v_clean), torch.cat(v_syn)
  v_bar = (v_clean + v_syn) / 2
  inc = ((v_clean - v_bar).pow(2).mean()
         + (v_syn - v_bar).pow(2).mean()) / 2 + norm_term
  g_inc = autograd.grad(inc, params)
  grads = [a + worst_weight * b for a, b in zip(g_sam, g_inc)]
  return grads, float(inc.detach())


def run_torch(rounds, iters):
  import copy
  import torch
  import torch.nn.functional as F
  from torch import autograd, nn
  torch.set_num_threads(1)

  x, y, idx, w = _data()
  x, y, idx = torch.tensor(x), torch.tensor(y), torch.tensor(idx)

  class MLP(nn.Module):
    def __init__(self):
      super().__init__()
      self.l1, self.l2 = nn.Linear(D_IN, HID), nn.Linear(HID, HID)
      self.head = nn.Linear(HID, K)
      with torch.no_grad():
        for lin, ww in zip((self.l1, self.l2, self.head), w):
          lin.weight.copy_(torch.tensor(ww.T))
          lin.bias.zero_()

    def features(self, z):
      return F.relu(self.l2(F.relu(self.l1(z))))

    def forward(self, z):
      return self.head(self.features(z))

  def norm(ts):
    return torch.norm(torch.stack([t.norm(2) for t in ts]), 2)

  def make(name):
    model = MLP()
    params = list(model.parameters())
    head = list(model.head.parameters())
    opt = torch.optim.SGD(params, lr=0.01)
    buf = torch.zeros(N_TRAIN, 2, K)
    ema = copy.deepcopy(model)
    count = [0]

    def plain():
      opt.zero_grad()
      F.cross_entropy(model(x), y).backward()
      opt.step()

    def sam_like(rho, combine=None, adaptive=False):
      opt.zero_grad()
      F.cross_entropy(model(x), y).backward()
      g0 = [p.grad.clone() for p in params]
      with torch.no_grad():
        t = [(p.abs() + 0.01) if adaptive else torch.ones_like(p)
             for p in params]
        scale = rho / (norm([ti * p.grad for ti, p in zip(t, params)]) + 1e-12)
        es = [ti * ti * p.grad * scale for ti, p in zip(t, params)]
        for p, e in zip(params, es):
          p.add_(e)
      opt.zero_grad()
      F.cross_entropy(model(x), y).backward()
      with torch.no_grad():
        for p, e, g in zip(params, es, g0):
          p.sub_(e)
          if combine is not None:
            p.grad.mul_(combine).add_(g, alpha=1 - combine)
      opt.step()

    def gnp_exact():
      opt.zero_grad()
      loss = F.cross_entropy(model(x), y)
      g = autograd.grad(loss, params, create_graph=True)
      (loss + 0.1 * norm(g)).backward()
      opt.step()

    def kl(out, tgt):
      t = 5.0
      return F.kl_div(F.log_softmax(out / t, 1), F.softmax(tgt / t, 1),
                      reduction="none").sum(-1).mean() * t * t

    def saf():
      e = count[0]
      out = model(x)
      buf[idx, e % 2] = out.detach()
      loss = F.cross_entropy(out, y) + 0.16 * kl(out, buf[idx, (e - 1) % 2])
      opt.zero_grad()
      loss.backward()
      opt.step()
      count[0] += 1

    def mesa():
      with torch.no_grad():
        tgt = ema(x)
      out = model(x)
      loss = F.cross_entropy(out, y) + 0.3 * kl(out, tgt)
      opt.zero_grad()
      loss.backward()
      opt.step()
      with torch.no_grad():
        for pe, p in zip(ema.parameters(), params):
          pe.mul_(0.9998).add_(p, alpha=1 - 0.9998)

    def flat(gs):
      return torch.cat([g.flatten() for g in gs])

    def hess_diag(gs, probes):
      gg = flat(gs)
      out = 0
      for _ in range(probes):
        z = 2 * torch.randint_like(gg, high=2) - 1
        hz = flat(autograd.grad(torch.dot(gg, z), head, create_graph=True))
        out = out + z * hz
      return out / probes

    def align(mode):
      out = model(x)
      nll = [F.cross_entropy(o, t) for o, t in zip(out.chunk(E), y.chunk(E))]
      mean_nll = torch.stack(nll).mean()
      gs = [autograd.grad(l, head, create_graph=True) for l in nll]
      gbar = autograd.grad(mean_nll, head, create_graph=True)
      if mode == "hgp":
        def hg(g):
          n = norm(g) + 1e-16
          return n * flat(autograd.grad(n, head, create_graph=True))
        a = [hg(g) for g in gs]
        abar = hg(gbar).detach()
      else:
        a = [hess_diag(g, PROBES) for g in gs]
        abar = hess_diag(gbar, PROBES).detach()
      fb = flat(gbar).detach()
      pen = sum(0.5 * (ai - abar).pow(2).sum() + 0.5 * (flat(g) - fb).pow(2)
                .sum() for ai, g in zip(a, gs)) / E
      opt.zero_grad()
      (mean_nll + pen).backward()
      opt.step()

    def udim():
      grads, _ = torch_udim_grads(params, model.features, model.head, x, y,
                                  rho=0.05, syn_lr=10.0, worst_weight=1.0)
      for p, g in zip(params, grads):
        p.grad = g
      opt.step()

    return {
        "udim": udim,
        "plain": plain, "sam": lambda: sam_like(0.05),
        "asam": lambda: sam_like(0.5, adaptive=True),
        "gnp_exact": gnp_exact, "gnp_fd": lambda: sam_like(0.05, combine=2.0),
        "saf": saf, "mesa": mesa, "hgp": lambda: align("hgp"),
        "hutchinson": lambda: align("hutchinson"),
    }[name]

  names = [r for r in ["plain"] + [r for r, _ in RULES] if r in TORCH_RULES]
  fns = {n: make(n) for n in names}
  for n in names:
    for _ in range(2):
      fns[n]()
  times = {n: [] for n in names}
  for _ in range(rounds):
    for n in names:
      t0 = time.perf_counter()
      for _ in range(iters):
        fns[n]()
      times[n].append((time.perf_counter() - t0) / iters)
  return times


def _ratios(times):
  plain = np.asarray(times["plain"])
  return {n: float(np.median(np.asarray(t) / plain)) for n, t in times.items()}


def main(argv=None):
  ap = argparse.ArgumentParser()
  ap.add_argument("--rounds", type=int, default=7)
  ap.add_argument("--iters", type=int, default=10)
  ap.add_argument("--torch-python", default=None)
  ap.add_argument("--torch-only", action="store_true")
  args = ap.parse_args(argv)
  if args.torch_only:
    print(json.dumps(run_torch(args.rounds, args.iters)))
    return
  jt, dots = run_jax(args.rounds, args.iters)
  try:
    import torch  # noqa: F401
    tt = run_torch(args.rounds, args.iters)
  except ImportError:
    tt = None
    if args.torch_python:
      out = subprocess.run(
          [args.torch_python, "-m", "benchmarks.transforms", "--torch-only",
           "--rounds", str(args.rounds), "--iters", str(args.iters)],
          capture_output=True, text=True, check=True)
      tt = json.loads(out.stdout.strip().splitlines()[-1])
  jr = _ratios(jt)
  print(f"MLP {D_IN}-{HID}-{HID}-{K}, batch {B} (domain rules: {E} x "
        f"{B // E}), SGD, 1 thread; median over {args.rounds} rounds of "
        f"{args.iters} steps")
  print(f"plain JAX step: {1e3 * np.median(jt['plain']):.2f} ms")
  if tt is None:
    print("torch not installed (pass --torch-python to compare)")
  else:
    tr = _ratios(tt)
    print(f"plain torch step: {1e3 * np.median(tt['plain']):.2f} ms")
  print(f"{'rule':12s} {'JAX/plain':>9s} {'dots/plain':>10s} "
        f"{'torch/plain':>11s} {'JAX/torch':>9s}  passes")
  for name, passes in [("plain", "1")] + RULES:
    j = jr[name]
    if tt is not None and name in tt:
      t = f"{tr[name]:11.2f}"
      jvt = f"{np.median(jt[name]) / np.median(tt[name]):9.2f}"
    else:
      t, jvt = f"{'-':>11s}", f"{'-':>9s}"
    dr = dots[name] / dots["plain"]
    print(f"{name:12s} {j:9.2f} {dr:10.2f} {t} {jvt}  {passes}")


if __name__ == "__main__":
  main()
