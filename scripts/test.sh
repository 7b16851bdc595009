#!/usr/bin/env bash
# Setup (idempotent), the lint check, then the whole test suite inside a loopback-only network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "test.sh: ruff check"
.venv/bin/ruff check .
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$PWD/.cache/torch_extensions}"
# Two pytest workers, each with its own Ray head and S3 server, a test file at a time (its module fixtures stay
# in one worker). The suite is CPU-bound but waits too (process starts, polls, job ends): on the 2-core machine
# two workers finish it in about 0.8x the time of one. CODEMILL_TEST_WORKERS=0 runs it in this process.
workers="${CODEMILL_TEST_WORKERS:-2}"
dist=()
[ "$workers" != 0 ] && dist=(-n "$workers" --dist loadfile --no-loadscope-reorder)
set +e
bash scripts/in-netns.sh .venv/bin/python -m pytest -q -ra --durations=30 "${dist[@]}" "$@"
rc=$?
set -e
if [ $rc -eq 5 ]; then echo "test.sh: pytest collected no tests: that is a failure" >&2; exit 1; fi
exit $rc
