"""The label-noise study: noise functions, online selection, loss table, smoke."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from diversity_jax import selection
from experiments import config_validation
from experiments.noisy import label_noise
from experiments.noisy import loss_table
from experiments.noisy import online_selection
from experiments.noisy import program

K = 5
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _corrupt(labels, rate, pair, seed=0):
  fn = jax.jit(lambda y, r, p: label_noise.corrupt_labels(
      jax.random.key(seed), y, r, p, num_classes=K))
  return np.asarray(fn(labels, rate, pair))


@pytest.mark.parametrize("pair", [False, True])
@pytest.mark.parametrize("rate", [0.0, 0.2, 0.8])
def test_noise_rate_is_exact_and_transitions_match_the_kind(rate, pair):
  clean = np.arange(4000) % K
  noisy = _corrupt(clean, rate, pair)
  flipped = noisy != clean
  assert flipped.sum() == round(rate * 4000)  # the realized rate is exact
  if pair:  # c -> c + 1 mod K, nothing else
    np.testing.assert_array_equal(noisy[flipped], (clean[flipped] + 1) % K)
  t = label_noise.transition_matrix(clean, noisy, K)
  if pair:
    want = (1 - rate) * np.eye(K) + rate * np.roll(np.eye(K), 1, axis=1)
    atol = 0.05
  else:  # uniform over the K - 1 other classes
    want = (1 - rate) * np.eye(K) + rate / (K - 1) * (1 - np.eye(K))
    atol = 0.05
  np.testing.assert_allclose(t, want, atol=atol)


def test_symmetric_noise_targets_are_uniform_over_other_classes():
  clean = np.zeros(20000, np.int32)
  noisy = _corrupt(clean, 0.6, False, seed=3)
  counts = np.bincount(noisy[noisy != 0], minlength=K)[1:]
  # 12,000 flips over 4 classes: 3,000 each, binomial std ~47.
  np.testing.assert_allclose(counts, 3000, atol=250)


def test_noise_under_vmap_equals_single_calls_and_seeds_differ():
  clean = jnp.arange(100) % K
  keys = jax.random.split(jax.random.key(0), 3)
  rates = jnp.array([0.2, 0.4, 0.6])
  pair = jnp.array([False, True, False])
  batched = jax.jit(jax.vmap(lambda k, r, p: label_noise.corrupt_labels(
      k, clean, r, p, num_classes=K)))(keys, rates, pair)
  for i in range(3):
    one = label_noise.corrupt_labels(keys[i], clean, rates[i], pair[i],
                                     num_classes=K)
    np.testing.assert_array_equal(batched[i], one)
  other = label_noise.corrupt_labels(jax.random.key(1), clean, 0.2, False,
                                     num_classes=K)
  assert not np.array_equal(other, batched[0])


def _np_uds(logits, memory_rows, k, alpha):
  """Brute force: ||z_i|| + alpha * mean_m ||z_i - m||, top k (stable)."""
  z = np.asarray(logits, np.float64)
  util = np.linalg.norm(z, axis=1)
  if len(memory_rows):
    m = np.asarray(memory_rows, np.float64)
    div = np.mean(np.linalg.norm(z[:, None] - m[None], axis=-1), axis=1)
  else:
    div = np.zeros(len(z))
  scores = util + alpha * div
  return np.argsort(-scores, kind="stable")[:k]


def test_online_selection_matches_brute_force_over_steps():
  rng = np.random.default_rng(0)
  step = jax.jit(lambda z, m: online_selection.select_sub_batch(
      z, m, 3, alpha=2.0))
  memory = online_selection.init_memory(4, K)
  history = []
  for _ in range(3):  # the memory fills, then wraps around (FIFO of 4)
    z = rng.normal(size=(8, K)).astype(np.float32)
    keep, memory = step(z, memory)
    want = _np_uds(z, history[-4:], 3, 2.0)
    np.testing.assert_array_equal(keep, want)
    history += list(z[want])
  assert int(memory.count) == 4


def test_online_selection_nan_falls_back_to_first_candidates():
  z = jnp.ones((6, K)).at[2, 0].set(jnp.nan)
  keep, memory = online_selection.select_sub_batch(
      z, online_selection.init_memory(4, K), 3, alpha=1.0)
  np.testing.assert_array_equal(keep, [0, 1, 2])
  assert isinstance(memory, selection.UDSMemory)


@pytest.mark.parametrize("name", loss_table.NAMES)
def test_every_study_loss_trains_under_jit(name):
  entry = loss_table.LOSSES[name]
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  logits = jax.random.normal(k1, (6, K))
  labels = jax.random.randint(k2, (6,), 0, K)
  feats = jax.random.normal(k3, (6, 4))
  index = jnp.array([0, 3, 5, 7, 8, 9])
  state = entry.init_state(10)

  @jax.jit
  def value_and_grad(z, state):
    return jax.value_and_grad(
        lambda z: entry.loss(z, labels, feats, index, state), has_aux=True)(z)

  (loss, new_state), grad = value_and_grad(logits, state)
  assert loss.shape == () and np.isfinite(loss)
  assert np.all(np.isfinite(grad)) and np.any(grad != 0)
  assert jax.tree.structure(new_state) == jax.tree.structure(state)


def test_reweighted_entry_is_the_weighted_ce():
  from diversity_jax import losses
  import optax
  z = jax.random.normal(jax.random.key(1), (6, K))
  y = jnp.arange(6) % K
  loss, _ = loss_table.LOSSES["reweight(quadratic)"].loss(z, y, None, None,
                                                          ())
  ce = optax.softmax_cross_entropy_with_integer_labels(z, y)
  w = losses.loss_reweighting(ce, strategy="quadratic", temperature=1.0)
  np.testing.assert_allclose(loss, np.sum(w * ce), rtol=1e-6)


@pytest.mark.parametrize("field,value,match", [
    ("losses", ("ce", "nope"), "config.losses: unknown loss 'nope'"),
    ("noise_kinds", ("open_set",), "config.noise_kinds"),
    ("noise_rates", (0.0,), "config.noise_rates"),
    ("batch_selection", "rho", "config.batch_selection"),
    ("dataset", "cifar", "config.dataset"),
    ("batch_size", 0, "config.batch_size"),
    ("engine", "loop", "config.engine"),
])
def test_bad_config_fields_are_named(field, value, match):
  from configs import noisy_labels
  c = noisy_labels.get_config("smoke")
  c[field] = value
  with pytest.raises(config_validation.ConfigError, match=match):
    program.validate(c)


def test_smoke_preset_runs_end_to_end(tmp_path):
  from configs import noisy_labels
  from experiments.studies import noisy_labels as study
  c = noisy_labels.get_config("smoke")
  (table,) = study.run(c, str(tmp_path))
  header = "| loss | clean | sym 40% | pair 40% | avg | seeds |"
  assert table["markdown"].splitlines()[0] == header
  assert open(tmp_path / "results.md").read().startswith(header)
  runs = _csv(tmp_path / "runs.csv")
  assert len(runs) == len(c.losses) * 3
  realized = {r["kind"]: r["noise_realized"] for r in runs}
  assert realized["clean"] == 0.0
  # round(0.4 * 1438) = 575 flipped training labels of 1,438.
  assert abs(realized["symmetric"] - 575 / 1438 * 100) < 1e-3
  assert abs(realized["pair"] - 575 / 1438 * 100) < 1e-3
  cell = float(table["markdown"].splitlines()[2].split("|")[2])
  first = [r["test_acc"] for r in runs if r["kind"] == "clean"][0]
  assert abs(cell - first) < 0.051


def test_online_selection_option_trains_on_the_selected_sub_batch(tmp_path):
  from configs import noisy_labels
  c = noisy_labels.get_config("smoke")
  c.losses, c.noise_kinds, c.batch_selection = ("ce",), (), "uds"
  rows = program.run_grid(c, str(tmp_path))
  assert [r["kind"] for r in rows] == ["clean"]
  assert np.isfinite(rows[0]["final_loss"])


def _csv(path):
  import csv
  with open(path) as f:
    return [{k: (float(v) if k not in ("loss", "kind") else v)
             for k, v in r.items()} for r in csv.DictReader(f)]


def test_cli_config_error_is_one_line_exit_2(tmp_path):
  import subprocess
  import sys
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train", "--config",
       "configs/noisy_labels.py:smoke", "--config.losses=('nope',)",
       f"--workdir={tmp_path}"], capture_output=True, text=True,
      cwd=ROOT, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith("error: config.losses: unknown loss")
  assert len(proc.stderr.strip().splitlines()) == 1


def test_recipe_engine_trains_the_same_models_as_the_grid(tmp_path):
  # One trainer.train_one run per setting (Recipe) against the vmapped grid:
  # same parameters, labels, batches, UDS memory and ALDR-KL state.
  from configs import noisy_labels
  from experiments.studies import noisy_labels as study
  c = noisy_labels.get_config("smoke")
  c.losses, c.noise_kinds = ("aldr_kl(c=0.1,a=2)",), ("pair",)
  c.batch_selection, c.candidate_factor = "uds", 2
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 6, 3, 3, 3
  grid = program.run_grid(c, str(tmp_path / "grid"))
  c.engine = "recipe"
  runs = study.run_recipes(c, str(tmp_path / "recipe"))
  assert [(r["kind"], r["rate"]) for r in runs] == [("clean", 0.0),
                                                    ("pair", 0.4)]
  for g, r in zip(grid, runs):
    for key in ("test_acc", "noisy_fit", "noise_realized", "final_loss"):
      np.testing.assert_allclose(r[key], g[key], rtol=1e-4, atol=1e-5)
  assert (tmp_path / "recipe" / "aldr_kl(c=0.1,a=2)" / "pair_40" / "seed_0"
          / "metrics.jsonl").exists()


def test_sweep_runs_the_grid_over_sweep_seeds_and_losses(tmp_path):
  from configs import noisy_labels
  from experiments.studies import noisy_labels as study
  c = noisy_labels.get_config("smoke")
  c.noise_kinds = ("symmetric",)
  c.sweep.seeds, c.sweep.algorithms = "0,1", "ce"
  (table,) = study.sweep(c, str(tmp_path))
  lines = table["markdown"].splitlines()
  assert len(lines) == 3 and lines[2].startswith("| ce |")
  assert lines[2].endswith("| 2 |")  # two seeds
  assert (tmp_path / "sweep.md").exists()
  c.sweep.seeds = "0,x"
  with pytest.raises(config_validation.ConfigError, match="sweep.seeds"):
    study.sweep(c, str(tmp_path))
