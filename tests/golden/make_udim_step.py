"""Generates tests/golden/udim_step.npz: one UDIM update in PyTorch.

Reference: the authors' step, ``IADA_FINAL.step`` in aailabkaist/UDIM (the
code of SJShin-AI/UDIM), ``UDIM_main/domainbed/iada/iada_final.py``,
transcribed in float64 torch by ``benchmarks.transforms.torch_udim_grads``
(the original needs CUDA, backpack and functorch; backpack's
``BatchGrad``/``BatchL2Grad`` on a linear head are written out as the outer
products they compute). Both input normalizations are stored: the authors'
``F.normalize(grad, dim=0)`` (``batch_axis``) and per instance (``dim=1``).

Model: the transforms tests' tiny MLP (tanh body, linear head; weights in
(in, out) layout). Run from the repository root with the reference env:

  /work/venv-ref/bin/python tests/golden/make_udim_step.py
"""
import os
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                    os.pardir)
sys.path.insert(0, ROOT)
from benchmarks.transforms import torch_udim_grads  # noqa: E402

torch.set_default_dtype(torch.float64)
D_IN, HIDDEN, K, B = 3, 4, 3, 6
RHO, SYN_LR, WORST_WEIGHT = 0.05, 0.5, 2.0
NAMES = ("body_w", "body_b", "head_w", "head_b")


def main():
  rng = np.random.default_rng(7)
  init = {"body_w": rng.normal(size=(D_IN, HIDDEN)) * 0.7,
          "body_b": rng.normal(size=(HIDDEN,)) * 0.1,
          "head_w": rng.normal(size=(HIDDEN, K)) * 0.7,
          "head_b": rng.normal(size=(K,)) * 0.1}
  out = {k: v.astype(np.float32) for k, v in init.items()}
  out["x"] = rng.normal(size=(B, D_IN)).astype(np.float32)
  out["y"] = rng.integers(0, K, size=(B,)).astype(np.int32)
  for dim, mode in ((0, "batch_axis"), (1, "instance")):
    p = {k: torch.tensor(out[k].astype(np.float64), requires_grad=True)
         for k in NAMES}
    grads, inc = torch_udim_grads(
        [p[k] for k in NAMES],
        lambda z, p=p: torch.tanh(z @ p["body_w"] + p["body_b"]),
        lambda h, p=p: h @ p["head_w"] + p["head_b"],
        torch.tensor(out["x"].astype(np.float64)),
        torch.tensor(out["y"].astype(np.int64)),
        rho=RHO, syn_lr=SYN_LR, worst_weight=WORST_WEIGHT, dim=dim)
    for k, g in zip(NAMES, grads):
      out[f"{mode}_update_{k}"] = g.detach().numpy()
    out[f"{mode}_inconsistency"] = np.float64(inc)
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      "udim_step.npz")
  np.savez(path, **out)
  print("wrote", path)


if __name__ == "__main__":
  main()
