#!/usr/bin/env bash
# The proof run on a lent GPU machine that allows 10 minutes a command: install the wheels carried as .whl
# (benchmarks/lent_gpu/prepare_wheels.sh), copy the working tree aside (later calls sync the tree; a running job
# must not see it change), launch benchmarks/proof_run.py detached, show its first lines.
# Use: bash benchmarks/lent_gpu/start_proof_run.sh DEADLINE_MIN GENERATE_MIN "EXTRA FLAGS" [WAIT_S]
# then poll_proof_run.sh in back-to-back calls while the machine is held.
set -uo pipefail
t0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -3
echo "install: $(( $(date +%s) - t0 )) s"
rm -rf /tmp/proof/repo && mkdir -p /tmp/proof/repo
tar --exclude=./.whl -cf - . | tar -xf - -C /tmp/proof/repo
cd /tmp/proof/repo
export PATH=/tmp/site/bin:$PATH PYTHONPATH=/tmp/site:/tmp/proof/repo NCCL_NVLS_ENABLE=0
date +%s > /tmp/proof/t0
setsid nohup python3 benchmarks/proof_run.py --out /tmp/proof/out --work /tmp/proof/work \
  --deadline-minutes "$1" --generate-minutes "$2" $3 > /tmp/proof/log.txt 2>&1 < /dev/null &
echo "launched pid $!"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
nproc; python3 -c "import torch, ray, deepspeed; print(torch.__version__, ray.__version__, deepspeed.__version__)"
sleep "${4:-40}"
tail -25 /tmp/proof/log.txt
