"""End-to-end training on the mock dataset: smoke per algorithm, resume after
kill (bit-identical, a half-written metrics line trimmed), workdir guards,
corrupt checkpoint fallback, NaN stop, 8 devices vs 1."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import diversity_jax
from diversity_jax import data
from experiments import algorithms
from experiments import checkpointing
from experiments import config_validation
from experiments import metrics
from experiments import trainer
from experiments.studies import dg
from experiments.studies import dg_recipe


def _rows(workdir):
  return metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def _final_state(config, workdir):
  """The final train state (params + optimizer state) saved by the run."""
  import orbax.checkpoint as ocp
  path = os.path.join(workdir, "checkpoints", str(config.num_steps), "state")
  return ocp.StandardCheckpointer().restore(os.path.abspath(path))


def _killed_at(c, workdir, monkeypatch, kill_step):
  """Runs ``train_one`` and kills it while it builds batch ``kill_step``."""
  original = data.MultiDomainBatches.batch

  def dying(self, step):
    if step == kill_step:
      raise KeyboardInterrupt("simulated kill")
    return original(self, step)

  monkeypatch.setattr(data.MultiDomainBatches, "batch", dying)
  with pytest.raises(KeyboardInterrupt):
    dg.train_one(c, workdir, c.test_domains[0])
  monkeypatch.setattr(data.MultiDomainBatches, "batch", original)


@pytest.mark.parametrize("algorithm", algorithms.ALGORITHM_NAMES)
def test_smoke_every_algorithm(algorithm, smoke_config, tmp_path):
  c = smoke_config
  c.algorithm = algorithm
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 2, 2, 2, 1
  result = dg.train_one(c, str(tmp_path), c.test_domains[0])
  assert result["compiles"] == 1
  assert 0.0 <= result["test_acc"] <= 1.0
  rows = [r for r in _rows(str(tmp_path)) if r["split"] == "train"]
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    for k in ("loss", "accuracy", "grad_norm", "param_norm", "update_norm"):
      assert np.isfinite(r[k]), (k, r)
  algo = algorithms.ALGORITHMS[algorithm]
  if algo.penalty:
    assert all(np.isfinite(r["penalty"]) for r in rows)
  if algorithm in ("sam", "gsam"):  # the rule's state.sharpness is logged
    assert all(np.isfinite(r["rule_sharpness"]) for r in rows)


def test_lodo_writes_table_and_learns(mock_domains, tmp_path):
  from configs import mock
  c = mock.get_config("smoke")
  c.model = "mlp_small"
  c.num_steps, c.eval_every, c.checkpoint_every = 60, 30, 60
  c.learning_rate = 3e-3
  results = dg.run(c, str(tmp_path))[0]["results"]
  assert [r["test_domain"] for r in results] == mock_domains
  md = (tmp_path / "results.md").read_text()
  assert md.splitlines()[0].split("|")[2:-3] == [f" {d} " for d in mock_domains]
  # Chance is 1 / num_classes; the mock domains are learnable.
  k = data.load("mock").num_classes
  assert np.mean([r["test_acc"] for r in results]) > 1.0 / k + 0.2
  assert (tmp_path / "results.csv").exists()


def test_resume_after_kill_is_bit_identical(smoke_config, tmp_path,
                                            monkeypatch):
  c = smoke_config
  c.num_steps, c.checkpoint_every, c.eval_every, c.log_every = 6, 2, 3, 1
  domain = c.test_domains[0]
  ref = dg.train_one(c, str(tmp_path / "ref"), domain)

  # Kill the second run while it builds the batch of step 5 (after the
  # checkpoint of step 4, before the one of step 6).
  _killed_at(c, str(tmp_path / "run"), monkeypatch, 4)
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2", "4"]
  # ... in the middle of writing a metrics row (a kill, or a full disk): the
  # resume trims the half-written line.
  with open(tmp_path / "run" / "metrics.jsonl", "a") as f:
    f.write('{"step": 5, "split": "train", "accuracy": 0.2')
  resumed = dg.train_one(c, str(tmp_path / "run"), domain)

  assert resumed == ref
  assert _rows(str(tmp_path / "run")) == _rows(str(tmp_path / "ref"))
  # Re-running a finished run restores its last checkpoint: same result.
  again = dg.train_one(c, str(tmp_path / "ref"), domain)
  assert again.pop("compiles") == 0  # nothing left to run
  assert again == {k: v for k, v in ref.items() if k != "compiles"}
  # Resuming with a different config is refused, naming the field.
  c.learning_rate = 0.5
  with pytest.raises(config_validation.ConfigError,
                     match=r"^config.learning_rate: 0.5 here, 0.001 there: "
                     r"the config differs from the run in "):
    dg.train_one(c, str(tmp_path / "ref"), domain)
  a = _final_state(c, str(tmp_path / "ref"))
  b = _final_state(c, str(tmp_path / "run"))
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_corrupt_latest_checkpoint_is_skipped(smoke_config, tmp_path):
  c = smoke_config
  c.num_steps, c.checkpoint_every, c.eval_every = 6, 3, 3
  domain = c.test_domains[0]
  ref = dg.train_one(c, str(tmp_path / "ref"), domain)
  shutil.copytree(tmp_path / "ref", tmp_path / "run")
  # Damage the latest checkpoint (step 6): every array file truncated.
  for root, _, files in os.walk(tmp_path / "run" / "checkpoints" / "6"):
    for name in files:
      if not name.startswith("_CHECKPOINT"):
        (open(os.path.join(root, name), "wb")).write(b"\0")
  with pytest.warns(checkpointing.CorruptCheckpointWarning, match="step 6"):
    again = dg.train_one(c, str(tmp_path / "run"), domain)
  assert again == ref  # fell back to step 3 and re-ran steps 4..6 exactly
  jax.tree.map(np.testing.assert_array_equal,
               _final_state(c, str(tmp_path / "ref")),
               _final_state(c, str(tmp_path / "run")))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(smoke_config, tmp_path,
                                                       monkeypatch):
  c = smoke_config
  c.num_steps, c.checkpoint_every, c.eval_every, c.log_every = 6, 3, 3, 1
  original = data.MultiDomainBatches.batch

  def poisoned(self, step):
    batch = dict(original(self, step))
    if step == 4:  # the 5th step sees a NaN input -> NaN loss
      batch["x"] = np.full_like(batch["x"], np.nan)
    return batch

  monkeypatch.setattr(data.MultiDomainBatches, "batch", poisoned)
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"^the training loss is nan at step 5 \(algorithm "
                     r"'erm', learning_rate 0.001\); stopped, the last good "
                     r"checkpoint \(step 3\) is kept in "):
    dg.train_one(c, str(tmp_path), c.test_domains[0])
  ck = checkpointing.Checkpointer(str(tmp_path / "checkpoints"))
  assert ck.all_steps() == [3]
  ck.close()


def test_nan_parameters_are_caught_by_their_norm(smoke_config, tmp_path,
                                                 monkeypatch):
  # A NaN update with a finite loss: the logged parameter norm must be NaN
  # (a zero-safe norm would report 0 and let NaN parameters be saved).
  c = smoke_config
  c.num_steps, c.checkpoint_every, c.log_every = 4, 1, 1
  original = dg_recipe.make_optimizer

  def nan_at_step_2(config, anneal_steps):
    opt = original(config, anneal_steps)
    def update(updates, state, params=None):
      updates, state = opt.update(updates, state, params)
      bad = state[0].count == 2 if isinstance(state, tuple) else False
      return jax.tree.map(lambda u: jnp.where(bad, jnp.nan, u), updates), state
    return optax.GradientTransformation(opt.init, update)

  monkeypatch.setattr(dg_recipe, "make_optimizer", nan_at_step_2)
  with pytest.raises(trainer.NonFiniteLossError,
                     match=r"^the parameters diverged at step 2: parameter "
                     r"norm nan after the update \(update norm nan, gradient "
                     r"norm [0-9.]+\), from a finite loss of [0-9.]+ before "
                     r"it .*last good checkpoint \(step 1\)"):
    dg.train_one(c, str(tmp_path), c.test_domains[0])


def test_resume_with_fewer_steps_is_refused(smoke_config, tmp_path):
  c = smoke_config
  c.num_steps, c.checkpoint_every, c.eval_every = 6, 3, 3
  dg.train_one(c, str(tmp_path), c.test_domains[0])
  c.num_steps = 4
  with pytest.raises(config_validation.ConfigError,
                     match=r"^config.num_steps: 4 is below the 6 steps already "
                     r"trained in .*; use --config.num_steps=6 or more"):
    dg.train_one(c, str(tmp_path), c.test_domains[0])


def test_eight_devices_match_one(smoke_config, tmp_path):
  assert jax.device_count() == 8  # tests/conftest.py forces 8 CPU devices
  c = smoke_config
  c.num_steps, c.eval_every, c.log_every = 4, 2, 1
  out = {}
  for n in (1, 8):
    c.num_devices = n
    out[n] = (dg.train_one(c, str(tmp_path / str(n)), c.test_domains[0]),
              _rows(str(tmp_path / str(n))))
  (r1, rows1), (r8, rows8) = out[1], out[8]
  for key in ("test_acc", "val_acc", "selected_step", "last_test_acc"):
    assert r1[key] == r8[key]
  assert len(rows1) == len(rows8)
  for a, b in zip(rows1, rows8):
    assert a.keys() == b.keys()
    assert a["split"] == b["split"] and a["step"] == b["step"]
    for k in set(a) - {"split", "step"}:
      np.testing.assert_allclose(a[k], b[k], rtol=2e-5, atol=1e-6, err_msg=k)


def test_plot_curves(smoke_config, tmp_path):
  dg.train_one(smoke_config, str(tmp_path / "r"),
                    smoke_config.test_domains[0])
  path = metrics.plot_curves([str(tmp_path / "r")], str(tmp_path / "c.png"))
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  events = os.listdir(tmp_path / "r" / "tensorboard")
  assert any(e.startswith("events.out.tfevents") for e in events)


def test_fishr_reset_and_ema_resume_bit_identical(smoke_config, tmp_path,
                                                  monkeypatch):
  """Adam reset at the anneal step and Fishr's EMA survive kill/resume."""
  c = smoke_config
  c.algorithm = "fishr"
  c.hparams.fishr.anneal_steps = 3
  c.num_steps, c.checkpoint_every, c.eval_every, c.log_every = 5, 2, 5, 1
  domain = c.test_domains[0]
  ref = dg.train_one(c, str(tmp_path / "ref"), domain)
  # Killed before the anneal step (index 3); resumed from step 2.
  _killed_at(c, str(tmp_path / "run"), monkeypatch, 3)
  assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["2"]
  resumed = dg.train_one(c, str(tmp_path / "run"), domain)
  assert resumed == ref
  assert _rows(str(tmp_path / "run")) == _rows(str(tmp_path / "ref"))
  a = _final_state(c, str(tmp_path / "ref"))
  b = _final_state(c, str(tmp_path / "run"))
  jax.tree.map(np.testing.assert_array_equal, a, b)
  # The checkpoint holds the reset wrapper's counter and the EMA state.
  ema = np.asarray(a["extra"]["ema"])
  assert ema.shape[0] == 2 and np.all(np.isfinite(ema)) and np.any(ema > 0)
  assert int(a["opt_state"]["count"]) == c.num_steps
  # The Fishr penalty is computed (and its EMA updated) from the first step.
  rows = [r for r in _rows(str(tmp_path / "ref")) if r["split"] == "train"]
  assert all(r["penalty"] > 0 for r in rows)


@pytest.mark.parametrize("between", ["looksam", "gradient"])
def test_sam_every_k_steps_smoke(smoke_config, tmp_path, between):
  c = smoke_config
  c.algorithm = "sam"
  c.every_k.k, c.every_k.between = 2, between
  c.num_steps, c.eval_every, c.checkpoint_every, c.log_every = 4, 4, 4, 1
  result = dg.train_one(c, str(tmp_path), c.test_domains[0])
  assert result["compiles"] == 1
  rows = [r for r in _rows(str(tmp_path)) if r["split"] == "train"]
  assert len(rows) == 4 and all(np.isfinite(r["loss"]) for r in rows)
  # The rule ran at steps 0 and 2 only: its sharpness is kept in between.
  sharp = [r["rule_sharpness"] for r in rows]
  assert sharp[0] == sharp[1] and sharp[2] == sharp[3]
  assert sharp[0] != sharp[2]
