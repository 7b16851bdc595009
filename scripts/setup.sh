#!/usr/bin/env bash
# Idempotent setup: .venv at the repo root, torch's CPU build first, then codemill with its extras,
# then the system packages that tests and evaluation need. Fast when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
TORCH_VERSION="${CODEMILL_TORCH_VERSION:-2.13.0}"
STAMP="$VENV/.codemill-setup"
want="$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"

apt_missing=()
command -v unshare >/dev/null || apt_missing+=(util-linux)
command -v ip >/dev/null || apt_missing+=(iproute2)
command -v git >/dev/null || apt_missing+=(git)
command -v prometheus >/dev/null || apt_missing+=(prometheus)  # the monitoring test scrapes Ray with it
if [ ${#apt_missing[@]} -gt 0 ]; then
  echo "setup: installing ${apt_missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}") >/dev/null
fi

# Toolchains for evaluation (sandbox, compilers, test libraries): installed only when missing.
bash scripts/setup-eval.sh

started=$SECONDS
if ! { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import codemill, torch, ray" 2>/dev/null; }; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # torch first: a bare `torch` requirement resolved with the rest would pull a multi-GB CUDA build.
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q --no-compile "torch==$TORCH_VERSION"
  "$VENV/bin/pip" install -q --no-compile -e ".[train,serve,dev]"
  # Byte-compiled here on every core, not by pip on one (about a minute of ~28,000 modules), and not left to
  # first use either: the first test processes (Ray's, all at once) would each compile torch and ray again.
  "$VENV/bin/python" -m compileall -q -j 0 "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" >/dev/null || true
  echo "$want" > "$STAMP"
  echo "setup: Python packages installed in $((SECONDS - started)) s"
fi

# DeepSpeed's CPU comm op, built ahead where the tests and the demo load it (scripts/test.sh and demo.sh use
# this TORCH_EXTENSIONS_DIR), so no train stage builds it on first use; a file check once it is built.
EXT_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.cache/torch_extensions}"
if ! compgen -G "$EXT_DIR/deepspeed_shm_comm/deepspeed_shm_comm*.so" >/dev/null; then
  echo "setup: building DeepSpeed's CPU comm op under $EXT_DIR (once: 1-3 minutes)"
  started=$SECONDS
  TORCH_EXTENSIONS_DIR="$EXT_DIR" "$VENV/bin/python" -m codemill.train.extensions
  echo "setup: DeepSpeed's CPU comm op built in $((SECONDS - started)) s"
fi
