"""Every config: documented command, :smoke preset, and smoke training on the
offline dataset builders."""

import glob
import importlib
import os

import pytest

from experiments import studies
from experiments.studies import dg
from experiments.lm import validation as lm_validation

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIGS = sorted(os.path.basename(p)[:-3] for p in glob.glob(
    os.path.join(ROOT, "configs", "*.py"))
                 if not os.path.basename(p).startswith(("_", "common")))


def test_all_configs_listed():
  assert {"rotated_mnist", "colored_mnist", "digits", "mock"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_documented_and_valid(name):
  module = importlib.import_module(f"configs.{name}")
  doc = module.__doc__
  assert f"python -m experiments.train --config configs/{name}.py" in doc
  lm = module.get_config().get("task") == "lm"   # experiments/lm/
  assert "Expected runtime" in doc
  assert ("Expected result" if lm else "Expected accuracy") in doc
  assert "PLACEHOLDER" not in doc
  validate = (lm_validation.validate if lm
              else studies.get(module.get_config().get("task", "dg")).validate)
  for arg in (None, "smoke"):
    validate(module.get_config(arg))
  with pytest.raises(ValueError, match="unknown preset 'nope'"):
    module.get_config("nope")


@pytest.mark.parametrize("name", ["rotated_mnist", "colored_mnist", "digits"])
def test_smoke_training_on_offline_builders(name, tmp_path):
  from diversity_jax import data
  c = importlib.import_module(f"configs.{name}").get_config("smoke")
  # Build into this test's own directory (seconds): no shared cache, no race
  # between pytest-xdist workers.
  c.data_dir = str(tmp_path / "tensorflow_datasets")
  ds = data.load(c.dataset, data_dir=c.data_dir)
  c.test_domains = (ds.domains[-1],)
  c.num_steps, c.eval_every, c.checkpoint_every = 2, 2, 2
  result = dg.train_one(c, str(tmp_path / "run"), ds.domains[-1],
                             dataset=ds)
  assert result["compiles"] == 1 and 0 <= result["test_acc"] <= 1
