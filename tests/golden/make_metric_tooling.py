"""Generates tests/golden/metric_tooling.npz from pytorch-metric-learning.

Run once with a reference environment (torch 2.13.0+cpu +
pytorch-metric-learning 2.9.0); the tests only read the .npz:

  python -m venv /tmp/venv-pml
  /tmp/venv-pml/bin/pip install "torch==2.13.0+cpu" "pytorch-metric-learning==2.9.0"
  /tmp/venv-pml/bin/python tests/golden/make_metric_tooling.py

Cases (inputs are stored next to the outputs):
  * miner_*: MultiSimilarityMiner(0.1), BatchHardMiner(), TripletMarginMiner
    (margin 0.2, all / hard / semihard / easy) on one batch, as masks; the
    MS and semi-hard miners also against separate references (ref_emb).
  * acc_*: AccuracyCalculator(precision_at_1, r_precision,
    mean_average_precision_at_r) with exact k-NN (CustomKNN, Euclidean or
    cosine), queries == references and separate sets, with singleton classes
    and query labels missing from the references.
  * xbm_*: CrossBatchMemory(MultiSimilarityLoss(), memory_size=20,
    miner=MultiSimilarityMiner()) over 4 batches (the ring buffer wraps).
"""

import os

import numpy as np
import torch
import pytorch_metric_learning
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                   "metric_tooling.npz")
MARGIN = 0.2


def clustered(rng, labels, dim, noise):
  centers = rng.normal(size=(labels.max() + 1, dim))
  return (centers[labels] + noise * rng.normal(size=(labels.size, dim))).astype(
      np.float32)


def t(a):
  return torch.tensor(a, dtype=torch.float64)


def pair_mask(shape, a, idx):
  m = np.zeros(shape, bool)
  m[a.numpy(), idx.numpy()] = True
  return m


def triplet_mask(shape, a, p, n):
  m = np.zeros(shape, bool)
  m[a.numpy(), p.numpy(), n.numpy()] = True
  return m


def far_from_thresholds(x, labels, ref, ref_labels):
  """No valid triplet's margin within 1e-4 of 0 or MARGIN (rounding safe)."""
  d = distances.LpDistance()(t(x), t(ref)).numpy()
  tm = (d[:, None, :] - d[:, :, None])
  same = labels[:, None] == ref_labels[None, :]
  tm = tm[same[:, :, None] & ~same[:, None, :]]
  return np.abs(tm).min() > 1e-4 and np.abs(tm - MARGIN).min() > 1e-4


def main():
  rng = np.random.default_rng(20261130)
  out = {"pml_version": np.array(pytorch_metric_learning.__version__)}

  # Miners: one batch, and the same batch against separate references.
  labels = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 5, 6, 6], np.int64)
  ref_labels = np.array([0, 1, 1, 2, 3, 3, 4, 5, 5, 7, 0, 2], np.int64)
  while True:
    x = clustered(rng, labels, 8, 0.9)
    ref = clustered(rng, ref_labels, 8, 0.9)
    if (far_from_thresholds(x, labels, x, labels)
        and far_from_thresholds(x, labels, ref, ref_labels)):
      break
  out["miner_x"], out["miner_labels"] = x, labels
  out["miner_ref"], out["miner_ref_labels"] = ref, ref_labels
  yl, rl = torch.tensor(labels), torch.tensor(ref_labels)
  b, r = len(labels), len(ref_labels)

  a1, p, a2, n = miners.MultiSimilarityMiner(epsilon=0.1)(t(x), yl)
  out["miner_ms"] = pair_mask((b, b), a1, p) | pair_mask((b, b), a2, n)
  a1, p, a2, n = miners.MultiSimilarityMiner(epsilon=0.1)(t(x), yl, t(ref), rl)
  out["miner_ms_ref"] = pair_mask((b, r), a1, p) | pair_mask((b, r), a2, n)
  a, p, n = miners.BatchHardMiner()(t(x), yl)
  out["miner_batch_hard"] = pair_mask((b, b), a, p) | pair_mask((b, b), a, n)
  for kind in ("all", "hard", "semihard", "easy"):
    miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets=kind)
    out[f"miner_triplet_{kind}"] = triplet_mask((b, b, b), *miner(t(x), yl))
  miner = miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard")
  out["miner_triplet_semihard_ref"] = triplet_mask(
      (b, r, r), *miner(t(x), yl, t(ref), rl))

  # AccuracyCalculator: class sizes 1..9, exact k-NN.
  sizes = rng.integers(1, 10, size=40)
  q_labels = np.repeat(np.arange(40), sizes)
  centers = rng.normal(size=(50, 16))
  q = (centers[q_labels] + 0.6 * rng.normal(size=(q_labels.size, 16))).astype(
      np.float32)
  r_labels = np.repeat(np.arange(5, 50), rng.integers(1, 8, size=45))
  r_emb = (centers[r_labels] + 0.6 * rng.normal(size=(r_labels.size, 16))
           ).astype(np.float32)
  out["acc_q"], out["acc_q_labels"] = q, q_labels
  out["acc_ref"], out["acc_ref_labels"] = r_emb, r_labels
  include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
  for dist_name, dist in (("euclidean",
                           distances.LpDistance(normalize_embeddings=False)),
                          ("cosine", distances.CosineSimilarity())):
    calc = AccuracyCalculator(include=include, knn_func=CustomKNN(dist),
                              device=torch.device("cpu"))
    same = calc.get_accuracy(q, q_labels)
    cross = calc.get_accuracy(q, q_labels, r_emb, r_labels)
    for name in include:
      out[f"acc_{dist_name}_self_{name}"] = np.array(same[name])
      out[f"acc_{dist_name}_cross_{name}"] = np.array(cross[name])

  # Cross-batch memory with the MS loss and miner (memory wraps at step 3).
  xbm = losses.CrossBatchMemory(losses.MultiSimilarityLoss(), embedding_size=8,
                                memory_size=20,
                                miner=miners.MultiSimilarityMiner())
  xbm_x, xbm_labels, xbm_loss = [], [], []
  for _ in range(4):
    yb = rng.permutation(np.repeat(np.arange(5), 2))[:8]
    yb = np.sort(np.concatenate([yb[:4], yb[:4]]))
    xb = clustered(rng, np.array([0, 1, 2, 3, 4])[yb], 8, 1.0)
    xbm_x.append(xb)
    xbm_labels.append(yb)
    xbm_loss.append(xbm(torch.tensor(xb), torch.tensor(yb)).item())
  out["xbm_x"], out["xbm_labels"] = np.stack(xbm_x), np.stack(xbm_labels)
  out["xbm_loss"] = np.array(xbm_loss)

  np.savez(OUT, **out)
  for k, v in out.items():
    v = np.asarray(v)
    print(k, v.shape, v if v.size < 5 else (v.sum() if v.dtype == bool
                                            else v.ravel()[:4]))


if __name__ == "__main__":
  main()
