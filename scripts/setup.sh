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

# DeepSpeed's CPU comm op, built ahead where the tests and the demo load it (scripts/test.sh and demo.sh use
# this TORCH_EXTENSIONS_DIR), so no train stage builds it on first use; a file check once it is built. The
# build (1-3 minutes of compiling) runs beside the installation of everything but torch and DeepSpeed.
EXT_DIR="${TORCH_EXTENSIONS_DIR:-$ROOT/.cache/torch_extensions}"
OP_LOG="$ROOT/.cache/deepspeed-op-build.log"
op_build=""
build_op() {
  if ! compgen -G "$EXT_DIR/deepspeed_shm_comm/deepspeed_shm_comm*.so" >/dev/null; then
    echo "setup: building DeepSpeed's CPU comm op under $EXT_DIR (once: 1-3 minutes; log: $OP_LOG)"
    mkdir -p "$(dirname "$OP_LOG")"
    TORCH_EXTENSIONS_DIR="$EXT_DIR" "$VENV/bin/python" -m codemill.train.extensions > "$OP_LOG" 2>&1 &
    op_build=$!
  fi
}

started=$SECONDS
if ! { [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && "$VENV/bin/python" -c "import codemill, torch, ray" 2>/dev/null; }; then
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  # torch first: a bare `torch` requirement resolved with the rest would pull a multi-GB CUDA build.
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  "$VENV/bin/python" -c "import torch" 2>/dev/null || "$VENV/bin/pip" install -q "torch==$TORCH_VERSION"
  # Then DeepSpeed (the version pyproject.toml pins) and codemill's package, so its op builds meanwhile.
  "$VENV/bin/pip" install -q "$(grep -o 'deepspeed==[0-9.]*' pyproject.toml)"
  "$VENV/bin/pip" install -q --no-deps -e .
  build_op
  "$VENV/bin/pip" install -q -e ".[train,serve,dev]"
  echo "$want" > "$STAMP"
  echo "setup: Python packages installed in $((SECONDS - started)) s"
else
  build_op
fi
if [ -n "$op_build" ]; then
  if ! wait "$op_build"; then
    tail -20 "$OP_LOG" >&2
    echo "setup: building DeepSpeed's CPU comm op failed (the log above, whole in $OP_LOG)" >&2
    exit 1
  fi
  echo "setup: DeepSpeed's CPU comm op built ($((SECONDS - started)) s since the installation began)"
fi
