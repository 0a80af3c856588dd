#!/usr/bin/env bash
# Install (if needed) and run the offline circle-packing demo: 30 rounds, no API key, no network.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/evolveflow run circle_packing --rounds "${ROUNDS:-30}" "$@"
