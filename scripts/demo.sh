#!/usr/bin/env bash
# Setup (idempotent), then the local demo DAG: a local Ray head (dashboard on), local storage, and the
# real code installed in this virtualenv as the corpus. Outputs land under runs/demo/<stage>/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
exec .venv/bin/codemill dag run dags/local.yaml --out "${CODEMILL_DEMO_OUT:-runs/demo}" "$@"
