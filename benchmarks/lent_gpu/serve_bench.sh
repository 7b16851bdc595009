#!/usr/bin/env bash
# Issue 23's serve benchmark on a lent GPU machine in one call of at most 10 minutes: install the wheels carried as
# .whl (benchmarks/lent_gpu/prepare_wheels.sh), then benchmarks/serve_latency.py with its time bound, then the
# engine's host work per row and a replica's CPU per streamed token on the GPU, each written to $OUT as it ends.
# Use: bash benchmarks/lent_gpu/serve_bench.sh SERVE_SECONDS "PARTS"     e.g. 420 "engine int8 http"
# (the two smaller benchmarks take at most 120 s each; the wheels' install about 5 s).
set -uo pipefail
seconds=${1:?"give serve_latency.py's time bound in seconds"}
parts=${2:-"engine int8 http"}
out=${OUT:?"run on the device machine: \$OUT is where results come back"}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  2>&1 | tail -3
export PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:$PWD NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
git log -1 --format='codemill %h' 2>/dev/null || true
# shellcheck disable=SC2086  # the parts are words
timeout $(( ${seconds%.*} + 60 )) python3 benchmarks/serve_latency.py --out-dir "$out/serve" --max-seconds "$seconds" \
  --parts $parts 2>&1 | tail -40
timeout 120 python3 benchmarks/engine_host.py --device cuda --preset 125m --rows 64 512 --repeats 1 \
  --out "$out/engine_host_cuda.json" 2>&1 | tail -3
timeout 120 python3 benchmarks/replica_cpu.py --device cuda --preset 125m --out "$out/replica_cpu_cuda.json" 2>&1 \
  | tail -3
ls -la "$out" "$out/serve" 2>/dev/null
