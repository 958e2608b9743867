#!/usr/bin/env bash
# Builds the documentation (warnings are errors, broken cross-references
# included; the notebooks and the executable pages run) and runs every
# docstring `Example:` block of the package as a doctest.
#
#   pip install -e '.[docs]' && bash docs/build.sh      # -> docs/_build/html/index.html
#
# Needs the `docs` extra (Sphinx, myst-nb, the theme, MathJax served locally) and
# the package's `data` dependencies (tensorflow-datasets) for the API pages.
set -euo pipefail
cd "$(dirname "$0")/.."
# One CPU device, whatever the caller set for its tests.
export XLA_FLAGS="" JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" TF_CPP_MIN_LOG_LEVEL=3
python -m pytest -q -p no:cacheprovider -o addopts="" -o testpaths="" \
  -o doctest_optionflags="ELLIPSIS NORMALIZE_WHITESPACE NUMBER" \
  --doctest-modules diversity_jax
rm -rf docs/_build/html docs/_build/doctrees
python -m sphinx -W --keep-going -n -j 1 -b html docs docs/_build/html
echo "docs: docs/_build/html/index.html"
