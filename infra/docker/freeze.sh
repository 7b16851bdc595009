#!/usr/bin/env bash
# Rewrite constraints.txt from the project's virtualenv (.venv, made by scripts/setup.sh), i.e. the versions
# the test suite runs with. torch is left out (the image installs its CUDA build, pinned by the Dockerfile's
# TORCH_VERSION) and so is codemill itself.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=infra/docker/constraints.txt
{
  echo "# Every Python package of codemill's image, pinned: the versions the test suite ran with (torch and codemill"
  echo "# itself are installed separately; see Dockerfile). tests/unit/test_infra.py checks them against pyproject.toml."
  echo "# Regenerate after a dependency change: bash infra/docker/freeze.sh"
  .venv/bin/python -m pip freeze --exclude-editable | grep -v -e '^#' -e '^torch==' -e '^codemill=='
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(grep -vc '^#' "$out") pins)"
