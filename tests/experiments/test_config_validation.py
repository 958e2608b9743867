"""Bad configs fail before anything is compiled, naming field and choices."""

import os
import subprocess
import sys

import jax
import pytest

from experiments import config_validation
from experiments import losses
from experiments import trainer
from experiments.studies import dg

ConfigError = config_validation.ConfigError


@pytest.fixture
def no_compile(monkeypatch):
  """Makes any jax.jit call in the trainer fail the test."""
  def forbidden(*a, **k):
    raise AssertionError("compiled before the config error")
  monkeypatch.setattr(trainer.jax, "jit", forbidden)


@pytest.mark.parametrize("field,value,match", [
    ("algorithm", "nope", r"config.algorithm: unknown algorithm 'nope'; "
     r"valid choices: \['erm', 'sam'"),
    ("loss", "nope", r"config.loss: unknown loss 'nope'; valid choices: "
     r"\['cross_entropy'"),
    ("model", "nope", r"config.model: unknown model 'nope'; valid choices"),
    ("dataset", "nope", r"config.dataset: unknown dataset 'nope'; valid "
     r"choices: \['rotated_mnist', 'colored_mnist'"),
    ("optimizer", "lion", r"config.optimizer: unknown optimizer 'lion'; valid "
     r"choices: \['adam'"),
    ("learning_rate", -1.0, r"config.learning_rate: must be > 0, got -1.0"),
    ("learning_rate", 1e39, r"config.learning_rate: must be a finite float32 "
     r"number, got 1e\+39"),
    ("batch_size", 0, r"config.batch_size: must be >= 1, got 0"),
    ("batch_size", 12, r"config.batch_size: must be a multiple of the number "
     r"of devices \(8\), got 12"),
    ("holdout_fraction", 1.5, r"config.holdout_fraction: must lie in \(0, 1\)"),
    ("num_devices", 64, r"config.num_devices: asks for 64 devices"),
    ("test_domains", ("nowhere",), r"config.test_domains: unknown domains "
     r"\['nowhere'\].*valid choices"),
    ("streaming", "maybe", r"config.streaming: unknown value 'maybe'; valid "
     r"choices: \['auto', 'on', 'off'\]"),
    ("streaming", "on", r"config.streaming: 'on' is only for 'tfds:<name>'"),
    ("image_size", -1, r"config.image_size: must be >= 0, got -1"),
    ("image_size", 32, r"config.image_size: resizes 'tfds:<name>' datasets "
     r"only"),
])
def test_bad_field(smoke_config, tmp_path, no_compile, field, value, match):
  smoke_config[field] = value
  with pytest.raises(ConfigError, match=match):
    dg.run(smoke_config, str(tmp_path))


@pytest.mark.parametrize("name", ["rotated_mnist_full", "colored_mnist_full"])
def test_full_mnist_datasets_are_valid_names(smoke_config, name):
  assert name in config_validation.dataset_choices()
  smoke_config.dataset, smoke_config.test_domains = name, ()
  config_validation.validate_config(smoke_config)
  smoke_config.download = True
  config_validation.validate_config(smoke_config)


def test_full_mnist_without_download_fails_before_compile(smoke_config,
                                                          tmp_path, no_compile):
  smoke_config.dataset = "rotated_mnist_full"
  smoke_config.data_dir = str(tmp_path / "tfds")
  with pytest.raises(FileNotFoundError, match=r"TFDS 'mnist'.*not prepared.*"
                     r"--config.download=True"):
    dg.run(smoke_config, str(tmp_path / "work"))


@pytest.mark.parametrize("algorithm,key,value,match", [
    ("sam", "rho", -0.1, r"config.hparams.sam.rho: must be > 0"),
    ("irm", "anneal_steps", -1, r"config.hparams.irm.anneal_steps: must "
     r"be >= 0, got -1"),
    ("fishr", "weight", -1.0, r"config.hparams.fishr.weight: must be "
     r">= 0"),
    ("fishr", "ema", 1.0, r"config.hparams.fishr.ema: must be a number "
     r"in \[0, 1\), got 1.0"),
    ("hutchinson", "num_probes", 0,
     r"config.hparams.hutchinson.num_probes: must be >= 1"),
    ("mesa", "decay", 2.0, r"config.hparams.mesa: algorithm 'mesa' builds "
     r"diversity_jax.transforms.mesa.*decay"),
])
def test_bad_hparam(smoke_config, tmp_path, no_compile, algorithm, key, value,
                    match):
  smoke_config.algorithm = algorithm
  smoke_config.hparams[algorithm][key] = value
  with pytest.raises(ConfigError, match=match):
    dg.run(smoke_config, str(tmp_path))


@pytest.mark.parametrize("path,value,match", [
    ("every_k.k", 2, r"config.every_k.k: runs a SAM-family rule every k "
     r"steps; algorithm 'erm' has none \(valid: \['sam', 'gsam', 'gnp'\]\)"),
    ("every_k.k", 0, r"config.every_k.k: must be >= 1, got 0"),
    ("every_k.between", "never", r"config.every_k.between: unknown value "
     r"'never'; valid choices: \['looksam', 'gradient'\]"),
    ("selection", "oracle", r"config.selection: must be one or more of "
     r"\['training_domain', 'test_domain', 'leave_one_domain_out'\]"),
    ("sweep.algorithms", "erm,nope", r"config.sweep.algorithms: unknown "
     r"algorithms \['nope'\]"),
    ("sweep.seeds", "0,x", r"config.sweep.seeds: integers separated by "
     r"commas expected"),
    ("hparams.sam.rhoo", 0.1, r"config.hparams.sam: algorithm 'sam' builds "
     r"diversity_jax.transforms.sam.*rhoo"),
    ("hparams.irm.scale", 0.1, r"config.hparams.irm: algorithm 'irm': "
     r"penalty irm does not take \['scale'\]"),
])
def test_bad_nested_field(smoke_config, tmp_path, no_compile, path, value,
                          match):
  *parents, leaf = path.split(".")
  node = smoke_config
  for p in parents:
    node = node[p]
  if path == "every_k.k" and value == 2:
    smoke_config.algorithm = "erm"
  if path.startswith("hparams.sam"):
    smoke_config.algorithm = "sam"
  if path.startswith("hparams.irm"):
    smoke_config.algorithm = "irm"
  with node.unlocked():
    node[leaf] = value
  with pytest.raises(ConfigError, match=match):
    dg.run(smoke_config, str(tmp_path))


def test_leave_one_domain_out_needs_three_domains(smoke_config):
  smoke_config.test_domains = ()
  smoke_config.selection = "training_domain,leave_one_domain_out"
  config_validation.validate_config(smoke_config)
  config_validation.validate_domains(smoke_config, ["a", "b", "c"])
  with pytest.raises(ConfigError, match=r"config.selection: "
                     r"'leave_one_domain_out' holds out two domains per run "
                     r"and needs at least 3; dataset 'mock' has 2"):
    config_validation.validate_domains(smoke_config, ["a", "b"])


def test_unknown_task_names_the_choices(smoke_config):
  from experiments import studies
  with pytest.raises(ConfigError, match=r"config.task: unknown task 'nope'; "
                     r"valid choices: \['dg'.*'lm'\]"):
    studies.get("nope")
  assert studies.get("dg").run is dg.run


@pytest.mark.parametrize("loss,args,match", [
    ("cross_entropy", "tau=1.0", r"config.loss_kwargs/loss_args: "
     r"'cross_entropy' takes no arguments"),
    ("comp_sum", "tau=-1.0", r"config.loss_kwargs/loss_args: loss 'comp_sum' "
     r"with arguments \{'tau': -1.0\}.*`tau` must lie in"),
    ("comp_sum", "nonsense", r"config.loss_args: must look like"),
    ("generalized_cross_entropy", "qq=0.7", r"config.loss_kwargs/loss_args"),
    ("log_partition_penalty", "", r"config.loss: loss 'log_partition_penalty' "
     r"with arguments \{\} cannot be called as loss\(logits, labels"),
])
def test_bad_loss(smoke_config, tmp_path, no_compile, loss, args, match):
  smoke_config.loss, smoke_config.loss_args = loss, args
  with pytest.raises(ConfigError, match=match):
    dg.run(smoke_config, str(tmp_path))


def test_scalar_loss_is_rejected(smoke_config, tmp_path, no_compile,
                                 monkeypatch):
  import diversity_jax
  losses = diversity_jax.losses
  monkeypatch.setattr(losses, "fake_mean_loss", lambda z, y: z.mean(),
                      raising=False)
  monkeypatch.setattr(losses, "__all__", losses.__all__ + ["fake_mean_loss"])
  smoke_config.loss = "fake_mean_loss"
  with pytest.raises(ConfigError, match=r"config.loss: loss 'fake_mean_loss' "
                     r"must return one value per example"):
    dg.run(smoke_config, str(tmp_path))


def test_loss_args_parsed_over_loss_kwargs(smoke_config):
  smoke_config.loss = "generalized_cross_entropy"
  smoke_config.loss_kwargs = {"q": 0.5}
  smoke_config.loss_args = "q=0.7"
  assert losses.loss_kwargs(smoke_config) == {"q": 0.7}
  config_validation.validate_config(smoke_config)


def test_cli_reports_config_error_and_exit_code(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.train",
       "--config", os.path.join(root, "configs", "mock.py") + ":smoke",
       "--config.algorithm=nope", f"--workdir={tmp_path}"],
      capture_output=True, text=True, cwd=root, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "config.algorithm: unknown algorithm 'nope'" in proc.stderr
  assert "valid choices" in proc.stderr


def test_check_field_path_names_the_closest_field(smoke_config):
  config_validation.check_field_path(smoke_config, "hparams.sam.rho")
  with pytest.raises(ConfigError, match=r"^config.learning_rat: no such field; "
                     r"did you mean 'learning_rate'\?$"):
    config_validation.check_field_path(smoke_config, "learning_rat")
  with pytest.raises(ConfigError, match=r"^config.hparams.zzz: no such field; "
                     r"config.hparams has the fields \['coral', 'erm'"):
    config_validation.check_field_path(smoke_config, "hparams.zzz")
  with pytest.raises(ConfigError, match=r"^config.seed.x: no such field; "
                     r"config.seed has no fields$"):
    config_validation.check_field_path(smoke_config, "seed.x")


@pytest.mark.parametrize("keys,algorithms,match", [
    (["sam.rho"], ["erm"], r"^config.hparams.sam.rho: not used by algorithm "
     r"'erm'; it is used by \['sam'\]$"),
    (["hutchinson.grad_weight", "irm.weight"], ["hutchinson", "vrex"],
     r"^config.hparams.irm.weight: not used by any of the algorithms "
     r"\['hutchinson', 'vrex'\]; it is used by \['irm'\]$"),
])
def test_check_hparams_used(keys, algorithms, match):
  with pytest.raises(ConfigError, match=match):
    config_validation.check_hparams_used(keys, algorithms)


def test_hparams_read_by_the_algorithm_are_accepted():
  config_validation.check_hparams_used(["hutchinson.grad_weight"],
                                       ["hutchinson"])
  config_validation.check_hparams_used(["fishr.ema", "fishr.weight",
                                        "fishr.anneal_steps"], ["fishr"])
  config_validation.check_hparams_used([], ["erm"])
