"""Generates tests/golden/vendi_kin.npz: qVS and the RKE mode count.

References (reference env: numpy, scipy, scikit-learn, `vendi-score` 0.0.3,
`rke-score` 0.0.7 from PyPI):

    python -m venv /tmp/venv-vendi
    /tmp/venv-vendi/bin/pip install vendi-score==0.0.3 rke-score==0.0.7 scikit-learn
    /tmp/venv-vendi/bin/python tests/golden/make_vendi_kin.py

* Quality-weighted Vendi score: the authors' ``q_vendi.score``
  (github.com/vertaix/Quality-Weighted-Vendi-Score, q_vendi_score/q_vendi.py)
  is ``mean(s(x_i)) * vendi.score(...)``; it is not on PyPI, so the product is
  formed here from ``vendi.score_K`` exactly as that function does.
* RKE: ``rke_score.RKE(kernel_bandwidth=sigma).compute_rke_mc_frobenius_norm``
  returns ``||K / n||_F^2`` (its inverse is the RKE mode count);
  ``compute_rrke`` the relative RKE.
"""

import os
import warnings

import numpy as np
from rke_score import RKE
from vendi_score import vendi

warnings.filterwarnings("ignore", category=DeprecationWarning)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vendi_kin.npz")
ORDERS = [0.5, 1.0, 2.0, "inf"]


def _q_key(q):
  return "inf" if q == "inf" else str(float(q)).replace(".", "p")


def mixture_2000():
  """2000 points of a 10-component Gaussian mixture in 8-D (seed 0)."""
  rng = np.random.RandomState(0)
  centers = 3.0 * rng.randn(10, 8)
  return centers[rng.randint(10, size=2000)] + 0.5 * rng.randn(2000, 8)


def main():
  rng = np.random.RandomState(0)
  out = {}
  # qVS: Gaussian kernel on 8 points in 2-D, quality s(x) = exp(-|x|).
  z = rng.randn(8, 2)
  sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
  kernel = np.exp(-sq / 2.0)
  quality = np.exp(-np.linalg.norm(z, axis=1))
  p = rng.rand(8) + 0.1
  p = p / p.sum()
  out["qvs_kernel"] = kernel
  out["qvs_quality"] = quality
  out["qvs_p"] = p
  for q in ORDERS:
    out[f"qvs_q{_q_key(q)}"] = np.mean(quality) * vendi.score_K(kernel, q=q)
    out[f"qvs_p_q{_q_key(q)}"] = np.mean(quality) * vendi.score_K(
        kernel, q=q, p=p)
  # The README example of the authors' code: samples [0, 0, 2],
  # k = exp(-|a - b|), s = exp(-|a - 2|) gives 0.793705659274703.
  samples = np.array([0.0, 0.0, 2.0])
  k3 = np.exp(-np.abs(samples[:, None] - samples[None, :]))
  out["qvs_readme_kernel"] = k3
  out["qvs_readme_quality"] = np.exp(-np.abs(samples - 2.0))
  out["qvs_readme"] = np.mean(out["qvs_readme_quality"]) * vendi.score_K(k3)
  assert abs(out["qvs_readme"] - 0.793705659274703) < 1e-12
  # RKE: 12 points in 3-D, two bandwidths.
  x = rng.randn(12, 3)
  out["rke_x"] = x
  for sigma in (0.5, 1.5):
    frob = RKE(kernel_bandwidth=sigma).compute_rke_mc_frobenius_norm(x)[sigma]
    out[f"rke_frob_sigma{str(sigma).replace('.', 'p')}"] = frob
  # RRKE: `compute_rrke(X, Y)` = -log((sum of singular values of
  # K_XY / sqrt(n m))^2), on 9 and 6 points in 3-D.
  y = rng.randn(6, 3) + 0.5
  out["rrke_x"] = x[:9]
  out["rrke_y"] = y
  for sigma in (0.7, 2.0):
    out[f"rrke_sigma{str(sigma).replace('.', 'p')}"] = RKE(
        kernel_bandwidth=sigma).compute_rrke(x[:9], y)[sigma]
  # Exact Vendi scores (q = 1, 2) of the Gaussian kernel (sigma = 2) on the
  # n = 2000 mixture of tests/diversity/test_vendi_scale.py (float64
  # eigenvalues of K / n), the reference of the approximation-error tests.
  x = mixture_2000()
  sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
  lam = np.linalg.eigvalsh(np.exp(-sq / 8.0) / x.shape[0])
  lam = lam[lam > 1e-12]
  out["mixture_vs_q1p0"] = np.exp(-np.sum(lam * np.log(lam)))
  out["mixture_vs_q2p0"] = 1.0 / np.sum(lam ** 2)
  np.savez(OUT, **{k: np.asarray(v, np.float64) for k, v in out.items()})
  print("wrote", OUT, len(out), "arrays")


if __name__ == "__main__":
  main()
