"""A train killed while its worker builds DeepSpeed's comm op leaves torch's build lock behind (the worker held
it); the next train on the node removes it, says so, and runs. Before, the next train waited on the lock
forever without a word (issue 21: 17 minutes, until someone removed the file).

Both trains are real train stages submitted as Ray jobs to the shared head, on a private TORCH_EXTENSIONS_DIR
seeded with the op setup.sh built, less its library, so a load must link it again under the lock. The
killed train's compiler is a wrapper that waits before compiling, so the kill lands while the lock is held
(as a SIGKILLed run or a preempted node leaves it), not by luck of timing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codemill import manifest as mf
from codemill import storage
from codemill.train.extensions import TORCH_LOCK, lock_holders

OP = "deepspeed_shm_comm"
SETTINGS = {
    "model.preset": "tiny", "model.seq_length": 32, "scaling.num_workers": 1, "scaling.use_gpu": "false",
    "scaling.cpus_per_worker": 1, "deepspeed.precision": "fp32", "steps": 2, "global_batch_size": 2,
    "micro_batch_size": 2, "log_every": 1, "eval_every": 2, "eval_batches": 1, "checkpoint_every": 2,
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from codemill.tokenize.pack import write_shards_from_texts

    out = str(tmp_path_factory.mktemp("tokenize"))
    texts = {"Python": [f"def f{i}(a, b):\n    return a + b * {i}\n" * 8 for i in range(20)]}
    write_shards_from_texts(texts, out, seq_len=33, validation_fraction=0.1)
    mf.write_manifest(out, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="test", config={}))
    return out


def built_op() -> Path:
    """The op as scripts/setup.sh builds it under the suite's TORCH_EXTENSIONS_DIR (built here if missing)."""
    folder = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / OP
    if not list(folder.glob(f"{OP}*.so")):
        subprocess.run([sys.executable, "-m", "codemill.train.extensions"], check=True, timeout=1200)
    return folder


def seeded_extensions(tmp_path: Path) -> Path:
    root = tmp_path / "torch_extensions"
    shutil.copytree(built_op(), root / OP)  # copy2: timestamps kept, so ninja sees the objects up to date
    for library in (root / OP).glob("*.so"):
        library.unlink()
    (root / OP / TORCH_LOCK).unlink(missing_ok=True)
    return root


def slow_compiler(tmp_path: Path) -> Path:
    wrapper = tmp_path / "slow-c++"
    wrapper.write_text(f'#!/bin/sh\ntouch "{tmp_path}/compiler-started"\nsleep 300\nexec c++ "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def submit_train(client, shards: str, out: Path, env: dict[str, str]) -> str:
    sets = " ".join(f"--set {k}={v}" for k, v in SETTINGS.items())
    return client.submit_job(entrypoint=f"python -m codemill.train --input {shards} --out {out} {sets}",
                             runtime_env={"env_vars": {"PYTHONUNBUFFERED": "1", **env}})


def wait_terminal(client, job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while (status := client.get_job_status(job_id).value) not in ("SUCCEEDED", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, f"job {job_id} still {status} after {timeout_s:.0f} s"
        time.sleep(1)
    return status


def test_a_train_killed_while_it_builds_the_op_does_not_block_the_next(tmp_path, shards, ray_head):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(ray_head.dashboard_url, headers=ray_head.auth_headers())
    extensions = seeded_extensions(tmp_path)
    lock = extensions / OP / TORCH_LOCK

    # 1. A train whose worker is building the op (the compiler waits), killed there.
    first = submit_train(client, shards, tmp_path / "train-1",
                         {"TORCH_EXTENSIONS_DIR": str(extensions), "CXX": str(slow_compiler(tmp_path))})
    deadline = time.monotonic() + 600
    while not (tmp_path / "compiler-started").exists():
        assert client.get_job_status(first).value in ("PENDING", "RUNNING"), client.get_job_logs(first)[-3000:]
        assert time.monotonic() < deadline, "the first train never started building the op"
        time.sleep(0.5)
    holders = lock_holders(lock)
    assert len(holders) == 1, f"the build lock {lock} should be held by the building worker: {holders}"
    for pid in descendants(holders[0]):  # the worker, ninja, the compiler: as a SIGKILLed node loses them
        os.kill(pid, signal.SIGKILL)
    client.stop_job(first)
    assert wait_terminal(client, first, 120) in ("FAILED", "STOPPED")
    assert lock.exists() and lock_holders(lock) == [], "the killed worker should have left a stale lock"

    # 2. The next train on the node: the stale lock is removed with a log line, the op loads, training runs.
    second = submit_train(client, shards, tmp_path / "train-2", {"TORCH_EXTENSIONS_DIR": str(extensions)})
    status = wait_terminal(client, second, 900)
    logs = client.get_job_logs(second)
    assert status == "SUCCEEDED", logs[-5000:]
    assert f"removed the stale build lock {lock}" in logs, logs[-5000:]
    assert mf.read_manifest(str(tmp_path / "train-2")).status == mf.STATUS_COMPLETE
    assert storage.read_json(str(tmp_path / "train-2" / "stats.json"))["steps"] == 2
    assert not lock.exists() and list((extensions / OP).glob(f"{OP}*.so"))
