#!/usr/bin/env bash
# Setup (idempotent), the lint check, then the whole test suite inside a loopback-only network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test.sh: ruff check"
.venv/bin/ruff check .
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
set +e
bash scripts/in-netns.sh .venv/bin/python -m pytest -q -ra --durations=30 "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests: that is a failure" >&2; exit 1; fi
exit $rc
