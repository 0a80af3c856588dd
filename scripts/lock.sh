#!/usr/bin/env bash
# Regenerate constraints.txt (the exact versions of evolveflow's whole dependency set, '.[test]' and
# everything it pulls in) after a change to the dependencies in pyproject.toml: a fresh venv in a
# temporary folder, `pip install -e '.[test]'` WITHOUT constraints (so pip picks the newest versions
# that pyproject.toml allows, as a first install would), `pip check`, then `pip freeze`.
# Run it with the Python the machines use (PYTHON=python3.11 scripts/lock.sh), then run the tests
# (scripts/test.sh re-installs .venv from the new file) and commit constraints.txt with
# pyproject.toml. See docs/environment.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "evolveflow needs Python 3.10+ (set PYTHON=/path/to/python3.x)" >&2
  exit 1
fi
# An exported PIP_CONSTRAINT (e.g. the old constraints.txt) would only re-freeze the old set.
unset PIP_CONSTRAINT
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
echo "resolving '.[test]' without constraints in a fresh venv (about a minute)..."
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet -e '.[test]'
"$py" -m pip check
# pip freeze leaves out pip, setuptools and wheel (no dependency of evolveflow needs them at run
# time; tests/test_constraints.py fails if one ever does) and, with --exclude-editable, evolveflow.
"$py" -m pip freeze --exclude-editable > "$tmp/frozen"
if grep -v -E '^[A-Za-z0-9][A-Za-z0-9._-]*==[^ ;]+$' "$tmp/frozen"; then
  echo "scripts/lock.sh: the lines above are not 'name==version' pins; constraints.txt not written" >&2
  exit 1
fi
about="$("$py" -c 'import platform, sys; print(platform.python_implementation(), platform.python_version(), "on", sys.platform, platform.machine())')"
{
  cat <<EOF
# constraints.txt: the exact versions of evolveflow's whole dependency set ('.[test]' and everything
# it pulls in), so that the search machine, the Dask scheduler and every worker run the same code.
# Used by scripts/setup.sh (pip install -e '.[test]' -c constraints.txt) and by the worker install
# in docs/environment.md. pyproject.toml keeps the ranges; this file picks one version in each.
#
# Do not edit by hand: after changing the dependencies in pyproject.toml, refresh it with
#     scripts/lock.sh
# (a fresh venv, pip install -e '.[test]' without constraints, pip freeze) and commit both files.
# tests/test_constraints.py checks that it covers pyproject.toml and that .venv matches it.
#
# Made by scripts/lock.sh with $about, $(date -u +%Y-%m-%d).
# Use that Python minor version on every machine: pins of packages a platform does not need are
# ignored by pip, but another Python may need a package that is not pinned here.
EOF
  cat "$tmp/frozen"
} > "$tmp/constraints.txt"
mv "$tmp/constraints.txt" constraints.txt
echo "wrote constraints.txt: $(grep -c -v -E '^(#|$)' constraints.txt) pinned packages ($about)"
