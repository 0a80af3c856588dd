#!/usr/bin/env bash
# Judge one scheduling policy: prints a JSON line with the score and metrics, exit 1 if invalid or infeasible.
set -euo pipefail
exec "${EVOLVEFLOW_PYTHON:-python3}" "$(dirname "$0")/evaluator.py" "$1"
