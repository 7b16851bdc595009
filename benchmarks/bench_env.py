"""What every benchmark script shares besides the machine's description: where a `--smoke` run writes (never
over benchmarks/results/), and the Ray head a run uses.

`--smoke` runs a script end to end on tiny inputs, on CPUs, in seconds (tests/stages/test_benchmark_smoke.py runs
each), so a script that no longer matches the code fails the suite instead of rotting. A smoke run's figures
mean nothing: they go to a temporary file unless `--out` says otherwise.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from types import SimpleNamespace

RESULTS = Path(__file__).resolve().parent / "results"
# A JSON file holding a running head's `LocalRayHead.record()`: smoke runs use that head instead of their own.
SHARED_HEAD_ENV = "CODEMILL_BENCH_RAY_HEAD"


def results_path(out: str | Path | None, name: str, smoke: bool) -> Path:
    """`--out` if given; else benchmarks/results/<name>, or a temporary file for a smoke run."""
    if out:
        return Path(out)
    if smoke:
        return Path(tempfile.mkdtemp(prefix="cm-bench-smoke-")) / name
    return RESULTS / name


class RecordedHead:
    """A head another process started, as the parts of LocalRayHead the benchmarks use (env, pid, root)."""

    def __init__(self, record: dict):
        self.process = SimpleNamespace(pid=int(record["head_pid"]))
        self.root = Path(record["root"])
        self.address, self.dashboard_url, self.token_path = record["address"], record["dashboard_url"], \
            Path(record["token_path"])

    def env(self) -> dict[str, str]:
        from codemill.raycluster import auth_env

        return {**auth_env(self.token_path), "RAY_ADDRESS": self.address}

    def start(self) -> RecordedHead:
        return self

    def stop(self) -> None:
        pass  # not ours to stop

    def __enter__(self) -> RecordedHead:
        return self

    def __exit__(self, *exc) -> None:
        pass


def shared_dashboard_url() -> str | None:
    """The shared head's dashboard (for the DAG runner's `address`), when SHARED_HEAD_ENV names one."""
    shared = os.environ.get(SHARED_HEAD_ENV)
    return json.loads(Path(shared).read_text())["dashboard_url"] if shared else None


def ray_head(num_cpus: int, **kwargs):
    """A fresh local head of `num_cpus` (what figures are measured on), or the shared one SHARED_HEAD_ENV
    names (smoke runs in the test suite). Use as a context manager, or start()/stop()."""
    shared = os.environ.get(SHARED_HEAD_ENV)
    if shared:
        return RecordedHead(json.loads(Path(shared).read_text()))
    from codemill.raycluster import LocalRayHead

    return LocalRayHead(num_cpus=num_cpus, **kwargs)
