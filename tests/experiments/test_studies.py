"""Studies are found by ``config.task``; train and sweep dispatch to them."""

import ml_collections
import pytest

from experiments import studies
from experiments import sweep

_TOY = '''
from experiments import config_validation

def validate(config):
  if config.n < 1:
    config_validation.fail("n", "must be >= 1")

def run(config, workdir):
  validate(config)
  return [{"title": "toy run", "markdown": str(config.n), "rows": [],
           "stem": "results"}]

def sweep(config, workdir):
  validate(config)
  return [{"title": "toy sweep", "markdown": workdir, "rows": [],
           "stem": "sweep"}]
'''


@pytest.fixture
def toy_study(tmp_path, monkeypatch):
  (tmp_path / "toy_study.py").write_text(_TOY)
  monkeypatch.setattr(studies, "__path__", list(studies.__path__) +
                      [str(tmp_path)])
  yield
  import sys
  sys.modules.pop("experiments.studies.toy_study", None)


def test_sweep_dispatches_on_the_task(toy_study, tmp_path):
  assert "toy_study" in studies.names() and "dg" in studies.names()
  assert "dg_recipe" not in studies.names()  # a builder, not a study
  config = ml_collections.ConfigDict({"task": "toy_study", "n": 2})
  assert studies.get("toy_study").run(config, "w")[0]["markdown"] == "2"
  (table,) = sweep.sweep(config, str(tmp_path / "sw"))
  assert table["title"] == "toy sweep"
  assert table["markdown"] == str(tmp_path / "sw")
  config.n = 0
  with pytest.raises(ValueError, match=r"^config.n: must be >= 1$"):
    sweep.sweep(config, str(tmp_path / "sw"))
