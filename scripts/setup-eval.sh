#!/usr/bin/env bash
# Evaluation toolchains (bubblewrap sandbox and util-linux's setpriv/prlimit that start it, Go + testify,
# Boost, OpenSSL, OpenJDK 17, Node, js-md5, numpy/pandas/scikit-learn for MTPB's programs, Chromium for the
# report test): installed only when missing, so a second run does nothing. `apt-get update` runs at most once,
# and only when a package is missing. js-md5 goes into the project-local `.cache/node_modules` (gitignored).
# At the end the toolchains are checked against the benchmark's minimums (codemill.eval.toolchain), which
# names any that is too old (e.g. a distribution's Node 12 or JDK 11).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

missing=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

have_cmd bwrap || missing+=(bubblewrap)
have_cmd setpriv && have_cmd prlimit || missing+=(util-linux)
have_cmd go || missing+=(golang-go)
have_pkg golang-github-stretchr-testify-dev || missing+=(golang-github-stretchr-testify-dev)
[ -f /usr/include/boost/version.hpp ] || missing+=(libboost-dev)
[ -f /usr/include/openssl/md5.h ] || missing+=(libssl-dev)
have_cmd g++ || missing+=(g++)
have_cmd javac || missing+=(openjdk-17-jdk-headless)
have_cmd node || missing+=(nodejs)
have_cmd npm || missing+=(npm)
have_cmd chromium || missing+=(chromium)
# MTPB's programs import these; the sandbox runs the system's /usr/bin/python3, so they are Debian's packages.
/usr/bin/python3 -c "import numpy" 2>/dev/null || missing+=(python3-numpy)
/usr/bin/python3 -c "import pandas" 2>/dev/null || missing+=(python3-pandas)
/usr/bin/python3 -c "import sklearn" 2>/dev/null || missing+=(python3-sklearn)

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-eval: installing ${missing[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}") >/dev/null
fi

# js-md5 for JavaScript/162, offline at evaluation time.
if [ ! -f "$ROOT/.cache/node_modules/js-md5/package.json" ]; then
  echo "setup-eval: installing js-md5 into .cache/node_modules"
  mkdir -p "$ROOT/.cache"
  npm install --silent --no-audit --no-fund --prefix "$ROOT/.cache" js-md5 >/dev/null
fi

# The minimums the benchmark check needs (Node >= 16.6, JDK >= 16, ...): say which toolchain is too old.
if [ -x "$ROOT/.venv/bin/python" ]; then
  "$ROOT/.venv/bin/python" - <<'EOF'
from codemill.eval.toolchain import default_toolchain, too_old, toolchain_versions
old = too_old(toolchain_versions(default_toolchain(prepare=False)))
if old:
    raise SystemExit("setup-eval: toolchains too old for the benchmark check:\n  " + "\n  ".join(old))
print("setup-eval: toolchains meet the benchmark check's minimums")
EOF
fi
