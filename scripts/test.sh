#!/usr/bin/env bash
# Install (if needed) and run the whole test suite (offline; about 2-4 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
