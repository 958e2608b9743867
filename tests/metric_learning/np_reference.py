"""Brute-force numpy pair losses on explicit (query, reference) pair masks."""

import numpy as np


def unit(x):
  x = np.asarray(x, np.float64)
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_loss(name, x, pos, neg, ref=None):
  """The pair loss ``name`` of queries ``x`` over the pairs ``pos`` / ``neg``.

  ``ref``: the references (default ``x``); masks are (B, R) booleans.
  """
  ref = x if ref is None else ref
  s = unit(x) @ unit(ref).T
  if name == "multi_similarity_loss":  # alpha 2, beta 50, base 0.5
    return np.array([
        np.log1p(np.sum(np.exp(-2.0 * (s[i, pos[i]] - 0.5)))) / 2.0
        + np.log1p(np.sum(np.exp(50.0 * (s[i, neg[i]] - 0.5)))) / 50.0
        for i in range(len(x))])
  if name == "threshold_consistent_margin_loss":  # m+ 0.9, m- 0.5
    hp = s[pos][s[pos] <= 0.9]
    hn = s[neg][s[neg] >= 0.5]
    return ((0.9 - hp).mean() if hp.size else 0.0) + (
        (hn - 0.5).mean() if hn.size else 0.0)
  assert name == "snr_contrastive_loss"  # margins 0 and 1
  xn, rn = unit(x), unit(ref)
  noise = np.var(rn[None, :, :] - xn[:, None, :], axis=-1, ddof=1)
  d = noise / np.var(xn, axis=-1, ddof=1)[:, None]
  lp = np.maximum(d[pos], 0.0)
  ln = np.maximum(1.0 - d[neg], 0.0)
  return (lp[lp > 0].mean() if np.any(lp > 0) else 0.0) + (
      ln[ln > 0].mean() if np.any(ln > 0) else 0.0)
