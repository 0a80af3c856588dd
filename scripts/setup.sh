#!/usr/bin/env bash
# Create .venv and install evolveflow with its pinned dependencies (skipped when up to date): the
# exact versions in constraints.txt, the same on every machine (refresh it with scripts/lock.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "evolveflow needs Python 3.11+ (its pinned duckdb and pyarrow have no 3.10 wheels) (set PYTHON=/path/to/python3.x)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.evolveflow-installed
# The stamp records which constraints.txt .venv was installed from (tests/test_constraints.py reads it).
lock_id="$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("constraints.txt", "rb").read()).hexdigest(), "constraints.txt")')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ] \
   || [ "$(cat "$stamp")" != "$lock_id" ]; then
  echo "installing evolveflow and its pinned dependencies into .venv (about a minute the first time)..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]' -c constraints.txt
  echo "$lock_id" > "$stamp"
fi
if ! command -v bwrap >/dev/null 2>&1; then
  echo "note: bubblewrap (bwrap) is not installed: candidates run with the 'process' sandbox level" \
       "(see docs/sandbox.md; 'apt-get install bubblewrap' for the stronger one)" >&2
fi
