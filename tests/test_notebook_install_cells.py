"""Every notebook's first code cell installs diversity_jax as pyproject declares.

The cell (CONTRIBUTING.md, "Notebooks") pip-installs
``diversity_jax[EXTRAS] @ git+<[project.urls] Repository>`` when the package is
not importable, with extras that exist in ``[project.optional-dependencies]``
(always ``notebooks``), and never names jax or jaxlib, so a Colab runtime keeps
its accelerator jax.
"""

import ast
import glob
import importlib.util
import os
import subprocess
import sys
import tomllib

import nbformat
from packaging.requirements import Requirement
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))

with open(os.path.join(ROOT, "pyproject.toml"), "rb") as _f:
  PROJECT = tomllib.load(_f)["project"]

TEMPLATE = '''\
# Colab: install diversity_jax from its repository (keeps the runtime's jax and jaxlib);
# a no-op where diversity_jax is already importable.
import importlib.util, subprocess, sys
if importlib.util.find_spec("diversity_jax") is None:
  subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                  "diversity_jax[{extras}] @ git+{url}"],
                 check=True)'''

# Top-level imports that only the `experiments` extra provides.
EXPERIMENTS_ONLY = {"experiments", "configs", "flax", "orbax", "ml_collections",
                    "tensorflow_datasets", "array_record", "mlxtend", "sklearn",
                    "tensorboardX", "diversity_jax.data"}


def _code_cells(path):
  nb = nbformat.read(path, as_version=4)
  return [c.source for c in nb.cells if c.cell_type == "code"]


def _requirement(cell):
  """The requirement string of the cell's pip command (run with pip mocked)."""
  calls = []
  real_find_spec = importlib.util.find_spec
  def find_spec(name, *args, **kwargs):
    if name == "diversity_jax":
      return None
    return real_find_spec(name, *args, **kwargs)
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(importlib.util, "find_spec", find_spec)
    mp.setattr(subprocess, "run", lambda args, **kw: calls.append((args, kw)))
    exec(compile(cell, "<install cell>", "exec"), {})  # pylint: disable=exec-used
  assert len(calls) == 1, calls
  args, kwargs = calls[0]
  assert args[:4] == [sys.executable, "-m", "pip", "install"], args
  assert kwargs.get("check") is True
  options = [a for a in args[4:] if a.startswith("-")]
  reqs = [a for a in args[4:] if not a.startswith("-")]
  assert set(options) <= {"-q"}, options    # no --upgrade / --force-reinstall
  assert len(reqs) == 1, reqs                # diversity_jax only: no jax, jaxlib
  return Requirement(reqs[0])


def test_there_are_notebooks():
  assert NOTEBOOKS


def test_repository_url_is_declared():
  assert PROJECT["urls"]["Repository"].startswith("https://")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_install_cell(path):
  cells = _code_cells(path)
  cell = cells[0]
  req = _requirement(cell)
  assert req.name == PROJECT["name"]
  assert req.url == "git+" + PROJECT["urls"]["Repository"]
  assert "notebooks" in req.extras
  unknown = req.extras - set(PROJECT["optional-dependencies"])
  assert not unknown, f"extras not in pyproject: {sorted(unknown)}"
  # The notebook asks for the experiments stack when it imports from it.
  imported = set()
  for src in cells:
    src = "\n".join(l for l in src.splitlines()
                    if not l.lstrip().startswith(("!", "%")))
    for node in ast.walk(ast.parse(src)):
      if isinstance(node, ast.Import):
        imported |= {a.name for a in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module:
        imported |= {node.module} | {f"{node.module}.{a.name}"
                                     for a in node.names}
  needs = {m for m in imported
           if m in EXPERIMENTS_ONLY or m.split(".")[0] in EXPERIMENTS_ONLY}
  if needs:
    assert "experiments" in req.extras, f"imports {sorted(needs)}"
  # Exactly the install cell of CONTRIBUTING.md, extras in pyproject's order.
  order = list(PROJECT["optional-dependencies"])
  extras = ",".join(sorted(req.extras, key=order.index))
  assert cell == TEMPLATE.format(extras=extras,
                                 url=PROJECT["urls"]["Repository"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_install_cell_is_a_no_op_when_importable(path, monkeypatch):
  assert importlib.util.find_spec("diversity_jax") is not None
  def fail(*args, **kwargs):
    raise AssertionError(f"pip ran: {args}")
  monkeypatch.setattr(subprocess, "run", fail)
  exec(compile(_code_cells(path)[0], "<install cell>", "exec"), {})  # pylint: disable=exec-used
