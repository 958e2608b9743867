"""The API reference (docs/api/*.rst) lists every public name, and only those.

Each subpackage's ``__all__`` is its registry; a name added there and not to
an ``autosummary`` table of its page fails here (no Sphinx build needed).
"""

import importlib
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API = os.path.join(ROOT, "docs", "api")

# module whose __all__ is documented -> the page that documents it.
PAGES = {
    "diversity_jax.losses": "losses.rst",
    "diversity_jax.metric_learning": "metric_learning.rst",
    "diversity_jax.diversity": "diversity.rst",
    "diversity_jax.transforms": "transforms.rst",
    "diversity_jax.kernels": "kernels.rst",
    "diversity_jax.kernels.linear_cross_entropy": "kernels.rst",
    "diversity_jax.data": "data.rst",
    "diversity_jax.selection": "selection.rst",
}


def documented_names(page):
  """``{module: [names]}`` from the ``autosummary`` tables of one page."""
  with open(os.path.join(API, page), encoding="utf-8") as f:
    lines = f.read().splitlines()
  names, module, in_table = {}, None, False
  for line in lines:
    if m := re.match(r"\.\. (?:current)?module:: (\S+)", line):
      module, in_table = m.group(1), False
    elif line.startswith(".. autosummary::"):
      in_table = True
    elif in_table and line and not line[0].isspace():
      in_table = False
    elif in_table and line.strip() and not line.strip().startswith(":"):
      names.setdefault(module, []).append(line.strip())
  return names


def public_names(module_name):
  # ``diversity_jax.kernels.linear_cross_entropy`` is also the function's
  # name in ``diversity_jax.kernels``: import the module, not the attribute.
  importlib.import_module(module_name)
  return sys.modules[module_name].__all__


def documented_objects():
  """ids of every object documented on any API page."""
  ids = set()
  for page in set(PAGES.values()):
    for module_name, names in documented_names(page).items():
      importlib.import_module(module_name)
      module = sys.modules[module_name]
      ids.update(id(getattr(module, name, None)) for name in names)
  return ids


@pytest.mark.parametrize("module_name", sorted(PAGES))
def test_every_public_name_has_a_page_entry(module_name):
  listed = documented_names(PAGES[module_name]).get(module_name, [])
  public = public_names(module_name)
  module = sys.modules[module_name]
  # A re-export documented under its shorter path counts (the function
  # ``linear_cross_entropy`` is documented as ``diversity_jax.kernels``'s).
  elsewhere = documented_objects()
  missing = [n for n in public
             if n not in listed and id(getattr(module, n)) not in elsewhere]
  assert missing == [], (
      f"add these names of {module_name}.__all__ to an autosummary table "
      f"in docs/api/{PAGES[module_name]}")
  assert sorted(set(listed) - set(public)) == [], (
      f"docs/api/{PAGES[module_name]} lists names that are not in "
      f"{module_name}.__all__")
  assert len(listed) == len(set(listed)), "a name is listed twice"


def test_every_api_page_is_checked():
  pages = {p for p in os.listdir(API) if p.endswith(".rst")} - {"index.rst"}
  assert pages == set(PAGES.values())
  for page in pages:
    assert set(documented_names(page)) <= set(PAGES), page


def test_the_parser_sees_a_table():
  names = documented_names("losses.rst")["diversity_jax.losses"]
  assert "comp_sum" in names and "opis" in names
