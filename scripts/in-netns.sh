#!/usr/bin/env bash
# Runs a command in a private network namespace with only loopback up: Ray, moto and the test HTTP
# servers then bind 127.0.0.1, and no test traffic can leave the machine.
set -euo pipefail
if [ "${CODEMILL_IN_NETNS:-}" = 1 ]; then exec "$@"; fi
exec unshare -n -- env CODEMILL_IN_NETNS=1 bash -c 'ip link set lo up && exec "$@"' bash "$@"
