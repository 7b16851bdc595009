#!/usr/bin/env bash
# Wait up to WAIT_S for the detached proof run (start_proof_run.sh) to finish, then copy what it has written to
# $OUT: the samples (gzipped, flat), meta.tar.gz (summary.json, metrics, the driver log, the loss curve) and
# dag_meta.tar.gz (every stage's manifest and stats). Use: bash benchmarks/lent_gpu/poll_proof_run.sh WAIT_S
set -uo pipefail
wait_s=${1:-540}
t0=$(cat /tmp/proof/t0)
start=$(date +%s)
pid=$(pgrep -f "benchmarks/proof_run.py" | head -1)
while [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ $(( $(date +%s) - start )) -lt "$wait_s" ]; do sleep 5; done
echo "elapsed since launch: $(( $(date +%s) - t0 )) s; running: $(pgrep -f benchmarks/proof_run.py | head -1)"
tail -40 /tmp/proof/log.txt
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
out=${OUT:-/tmp/proof/ret}; mkdir -p "$out"
cp /tmp/proof/out/samples_*.jsonl.gz "$out"/ 2>/dev/null
gzip -9c /tmp/proof/log.txt > /tmp/proof/out/device_log.txt.gz
(cd /tmp/proof/out && tar -czf "$out/meta.tar.gz" --exclude='samples_*' .)
(cd /tmp/proof/work/dag 2>/dev/null && tar -czf "$out/dag_meta.tar.gz" --exclude='*.arrow' --exclude='*.parquet' \
   --exclude='*.pt' --exclude='*.bin' --exclude='*.safetensors' --exclude='checkpoints' --exclude='export/*.pt' \
   $(find . -maxdepth 2 \( -name 'manifest.json' -o -name '*.json' -o -name '*.jsonl' -o -name '*.log' -o -name '*.png' \) -size -4M))
ls -la "$out"
