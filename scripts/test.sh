#!/usr/bin/env bash
# The test command: set up (idempotent), lint, then the whole suite, live audio-server tests
# included (the tests start their own private PipeWire server). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=${PYTHON:-python3}
"$PY" -m ruff check .
"$PY" -m pytest -q -p no:cacheprovider "$@"
