#!/usr/bin/env bash
# Create .venv and install evolveflow with its pinned dependencies (skipped when up to date).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "evolveflow needs Python 3.10+ (set PYTHON=/path/to/python3.x)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.evolveflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing evolveflow and its pinned dependencies into .venv (about a minute the first time)..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  touch "$stamp"
fi
if ! command -v bwrap >/dev/null 2>&1; then
  echo "note: bubblewrap (bwrap) is not installed: candidates run with the 'process' sandbox level" \
       "(see docs/sandbox.md; 'apt-get install bubblewrap' for the stronger one)" >&2
fi
