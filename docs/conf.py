"""Sphinx configuration of the diversity_jax documentation.

Build (warnings are errors; also runs the docstring doctests)::

  bash docs/build.sh
"""

import glob
import inspect
import json
import os
import shutil
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)

# The package (and `experiments` / `configs`, which the notebooks import) come
# from this checkout, also in the notebook kernels started by myst-nb.
sys.path.insert(0, ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ["PATH"] = os.pathsep.join(
    (os.path.dirname(sys.executable), os.environ.get("PATH", "")))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from sphinx.pycode import ModuleAnalyzer  # pylint: disable=g-import-not-at-top,wrong-import-position

import diversity_jax  # pylint: disable=g-import-not-at-top,wrong-import-position

project = "diversity_jax"
author = "diversity_jax authors"
copyright = "2026, diversity_jax authors"  # pylint: disable=redefined-builtin
release = version = diversity_jax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",   # MathJax 3 served from _static: renders offline
    "sphinx_copybutton",
    "myst_nb",
]

# ---------------------------------------------------------------- sources
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb",
                 ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "README.md"]
templates_path = ["_templates"]
root_doc = "index"

# The notebooks live in ../notebooks (Colab links point there); they are copied
# here at configuration time (docs/notebooks/ is git-ignored) and executed.
_NB_SRC = os.path.join(ROOT, "notebooks")
_NB_DST = os.path.join(DOCS, "notebooks")
shutil.rmtree(_NB_DST, ignore_errors=True)
os.makedirs(_NB_DST)
_COLAB = ("https://colab.research.google.com/github/diversity-jax/"
          "diversity_jax/blob/main/notebooks/")


def _notebook_title(path):
  """The first Markdown heading of a notebook."""
  with open(path, encoding="utf-8") as f:
    cells = json.load(f)["cells"]
  for cell in cells:
    if cell["cell_type"] == "markdown":
      for line in "".join(cell["source"]).splitlines():
        if line.startswith("#"):
          return line.lstrip("#").strip()
  return os.path.splitext(os.path.basename(path))[0]


_gallery = []
for _nb in sorted(glob.glob(os.path.join(_NB_SRC, "*.ipynb"))):
  shutil.copy2(_nb, _NB_DST)
  _name = os.path.basename(_nb)
  _gallery.append(f"- {{doc}}`{_notebook_title(_nb)} <notebooks/{_name[:-6]}>` "
                  f"([open in Colab]({_COLAB}{_name}))\n")
with open(os.path.join(_NB_DST, "gallery.md.inc"), "w", encoding="utf-8") as f:
  f.writelines(_gallery)

# ---------------------------------------------------------------- autodoc
autosummary_generate = True
autosummary_ignore_module_all = False
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_default_options = {"exclude-members": "__init__"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True      # "Attributes:" as a field list, not new objects
napoleon_use_rtype = False
add_module_names = False
python_display_short_literal_types = True
python_use_unqualified_type_names = True


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
  """NamedTuple fields are documented in the class's ``Attributes:``."""
  del app, what, name, options
  doc = inspect.getdoc(obj) or ""
  if doc.startswith("Alias for field number"):
    return True
  return skip


def _attribute_docs(app, what, name, obj, options, lines):
  """Docs of re-exported constants: the ``#:`` comment where they are defined.

  A constant re-exported by a package ``__init__`` (``IMPLEMENTATIONS``) has
  no ``#:`` comment there, and autodoc would show its type's docstring
  (``dict``'s); take the comment from the submodule that assigns it.
  """
  del app, options
  if what != "data" or type(obj).__doc__ is None or \
      getattr(obj, "__doc__", None) != type(obj).__doc__:
    return
  package, _, attr = name.rpartition(".")
  for modname in sorted(sys.modules):
    if not modname.startswith(package + ".") or \
        getattr(sys.modules[modname], attr, None) is not obj:
      continue
    docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
    if ("", attr) in docs:
      lines[:] = list(docs[("", attr)])
      return


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_fields)
  app.connect("autodoc-process-docstring", _attribute_docs)


# ---------------------------------------------------------------- references
# Broken cross-references fail the build (``-W``, nitpicky). External types
# (no intersphinx: the build is offline) are listed here.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(jax|jnp|np|numpy|optax|chex|flax|tf|tfds|typing|"
              r"collections|abc|etils|ml_collections|functools)(\..*)?"),
    ("py:.*", r"(int|float|bool|str|bytes|None|NoneType|object|tuple|list|"
              r"dict|set|callable|Callable|Any|Optional|Union|Sequence|"
              r"Mapping|Iterable|Iterator|NamedTuple|type|ndarray|Array|"
              r"ArrayLike|PyTree|DTypeLike|Path|PathLike|os\.PathLike)"),
]

# ---------------------------------------------------------------- notebooks
nb_execution_mode = "force"
nb_execution_timeout = 180
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# ---------------------------------------------------------------- html
html_theme = "sphinx_book_theme"
html_title = "diversity_jax"
html_theme_options = {
    "repository_url": "https://github.com/diversity-jax/diversity_jax",
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_source_button": False,   # notebooks are copied: their paths differ
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
html_last_updated_fmt = None
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
