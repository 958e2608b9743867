"""The random hyperparameter search: DomainBed's distributions and seeding."""

import hashlib

import numpy as np
import pytest

from experiments import hparams_search

N = 400  # trials: the uniform's mean and variance to a few percent


def _draws(algorithm, dataset="rotated_mnist", seed=0, devices=1):
  return [hparams_search.sample(algorithm, dataset, t, seed, devices)
          for t in range(1, N + 1)]


def _check_uniform(x, low, high):
  """Range, mean and variance of U(low, high) (4 standard errors)."""
  x = np.asarray(x, np.float64)
  assert x.min() >= low and x.max() <= high
  width = high - low
  assert abs(x.mean() - (low + high) / 2) < 4 * width / np.sqrt(12 * N)
  assert abs(x.var() - width ** 2 / 12) < 0.2 * width ** 2 / 12


def test_small_image_distributions():
  d = _draws("fishr")
  _check_uniform(np.log10([s["learning_rate"] for s in d]), -4.5, -2.5)
  sizes = [s["batch_size"] for s in d]  # int(2**U(3, 9)): 8 .. 511
  assert min(sizes) >= 8 and max(sizes) <= 511 and len(set(sizes)) > 100
  assert all(s["weight_decay"] == 0.0 for s in d)
  _check_uniform(np.log10([s["hparams"]["weight"] for s in d]), 1, 4)
  _check_uniform([s["hparams"]["anneal_steps"] for s in d], 0, 5000)
  _check_uniform([s["hparams"]["ema"] for s in d], 0.90, 0.99)
  assert all(isinstance(s["hparams"]["anneal_steps"], int) for s in d)


def test_penalty_and_large_image_distributions():
  d = _draws("irm", dataset="tfds:pacs")
  _check_uniform(np.log10([s["learning_rate"] for s in d]), -5, -3.5)
  _check_uniform(np.log10([s["weight_decay"] for s in d]), -6, -2)
  sizes = [s["batch_size"] for s in d]
  assert min(sizes) >= 8 and max(sizes) <= int(2 ** 5.5)
  _check_uniform(np.log10([s["hparams"]["weight"] for s in d]), -1, 5)
  anneal = np.array([s["hparams"]["anneal_steps"] for s in d])
  assert anneal.min() >= 1 and anneal.max() < 10 ** 4
  coral = _draws("coral")
  _check_uniform(np.log10([s["hparams"]["weight"] for s in coral]), -1, 1)
  rhos = {s["hparams"]["rho"] for s in _draws("sam")}
  assert rhos == {0.01, 0.02, 0.05, 0.1, 0.2, 0.5}
  assert all(s["hparams"] == {} for s in _draws("erm")[:5])


def test_seeding_is_domainbed_s():
  # md5 of str(args) modulo 2**31, computed here from hashlib directly.
  want = int(hashlib.md5(str((3, 1)).encode()).hexdigest(), 16) % 2 ** 31
  assert hparams_search.seed_hash(3, 1) == want
  # Each hyperparameter from its own RandomState(seed_hash(seed_hash(trial,
  # seed), DomainBed name)): lr of trial 3, trial seed 1.
  r = np.random.RandomState(hparams_search.seed_hash(want, "lr"))
  assert hparams_search.sample("erm", "digits_rotated", 3, 1)[
      "learning_rate"] == 10 ** r.uniform(-4.5, -2.5)
  # Deterministic, and different across trials and trial seeds.
  a = hparams_search.sample("vrex", "mock", 2, 0)
  assert a == hparams_search.sample("vrex", "mock", 2, 0)
  assert a != hparams_search.sample("vrex", "mock", 3, 0)
  assert a != hparams_search.sample("vrex", "mock", 2, 1)
  with pytest.raises(ValueError, match="`trial` must be >= 1"):
    hparams_search.sample("erm", "mock", 0, 0)


def test_batch_size_is_a_multiple_of_the_devices():
  sizes = [s["batch_size"] for s in _draws("erm", devices=8)[:50]]
  assert all(b % 8 == 0 and b >= 8 for b in sizes)


def test_trial_config(smoke_config):
  c = hparams_search.trial_config(smoke_config, "irm", 0, 2)
  assert c.algorithm == "irm" and c.seed == 2
  assert c.hparams.irm.weight == smoke_config.hparams.irm.weight  # defaults
  c = hparams_search.trial_config(smoke_config, "irm", 1, 2)
  s = hparams_search.sample("irm", smoke_config.dataset, 1, 2, 8)
  assert c.hparams.irm.weight == s["hparams"]["weight"]
  assert c.learning_rate == s["learning_rate"]
  assert c.batch_size == s["batch_size"]


def test_sweep_runs_the_sampled_trials(smoke_config, tmp_path):
  import json
  from experiments.studies import dg
  c = smoke_config
  c.num_steps, c.eval_every, c.checkpoint_every = 2, 2, 2
  c.sweep.algorithms, c.sweep.seeds, c.sweep.n_hparams = "irm", "3", 2
  (table,) = dg.sweep(c, str(tmp_path))
  assert "2 hyperparameter trial(s), seeds 3" in table["title"]
  assert list(table["accs"]) == ["irm"]
  saved = {t: json.loads((tmp_path / "irm" / f"trial_{t}" / "seed_3" /
                          f"test_{c.test_domains[0]}" / "config.json"
                          ).read_text()) for t in (0, 1)}
  want = hparams_search.sample("irm", c.dataset, 1, 3, 8)
  assert saved[0]["learning_rate"] == c.learning_rate and saved[0]["seed"] == 3
  assert saved[0]["hparams"]["irm"]["weight"] == c.hparams.irm.weight
  assert saved[1]["learning_rate"] == want["learning_rate"]
  assert saved[1]["batch_size"] == want["batch_size"]
  assert saved[1]["hparams"]["irm"] == want["hparams"]
