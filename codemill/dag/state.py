"""`<out>/_dag/run.json`: the state of a DAG run (run id, each stage's Ray job, status, times, attempts), kept
current as the run goes, read by `codemill dag status OUT`, and reused when the run is resumed."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

from codemill import storage
from codemill.dag.plan import DAG_STATE_DIR

RUN_FILE = "run.json"
PENDING, RUNNING, SUCCEEDED, SKIPPED, FAILED, STOPPED, SERVING = (
    "pending", "running", "succeeded", "skipped", "failed", "stopped", "serving")
FINISHED = {SUCCEEDED, SKIPPED, SERVING}


def run_file(out: str) -> str:
    return storage.join(out, DAG_STATE_DIR, RUN_FILE)


def read_state(out: str) -> dict | None:
    uri = run_file(out)
    if not storage.exists(uri):
        return None
    try:
        data = storage.read_json(uri)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


@dataclass
class RunState:
    out: str
    dag: str
    stages: list[str]
    data: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        previous = read_state(self.out)
        resumed = previous is not None and previous.get("status") != SUCCEEDED and previous.get("dag") == self.dag
        self.data = {
            "run_id": previous["run_id"] if resumed else uuid.uuid4().hex[:12],
            "dag": self.dag, "status": RUNNING, "started": time.time(), "ended": None,
            "resumed": resumed, "dashboard": None,
            "stages": {name: {"status": PENDING, "job_id": None, "attempt": 0, "start": None, "end": None,
                              "why": None} for name in self.stages},
        }
        self.save()

    @property
    def run_id(self) -> str:
        return self.data["run_id"]

    def update(self, stage: str | None = None, **values) -> None:
        with self._lock:
            target = self.data["stages"][stage] if stage else self.data
            target.update(values)
            self.save()

    def stage(self, name: str) -> dict:
        return self.data["stages"][name]

    def save(self) -> None:
        storage.write_json(run_file(self.out), self.data)


def format_table(data: dict, manifests: dict[str, dict] | None = None) -> str:
    """One line per stage: status, time, key counts, output; for `dag status` and the end of a run."""
    manifests = manifests or {}
    lines = [f"run {data.get('run_id')} of {data.get('dag')}: {data.get('status')}"
             + (f" (dashboard {data['dashboard']})" if data.get("dashboard") else "")]
    lines.append(f"  {'stage':12s} {'status':10s} {'attempt':>7s} {'time':>8s}  counts")
    for name, st in data.get("stages", {}).items():
        seconds = (st["end"] - st["start"]) if st.get("start") and st.get("end") else None
        counts = manifests.get(name, {})
        shown = ", ".join(f"{k}={v}" for k, v in list(_key_counts(counts).items())[:4])
        lines.append(f"  {name:12s} {st.get('status', '?'):10s} {st.get('attempt', 0):>7d} "
                     f"{(f'{seconds:.1f} s' if seconds is not None else '-'):>8s}  {shown}")
    return "\n".join(lines)


def _key_counts(counts: dict) -> dict:
    """The counts worth a glance: URLs and pass rates first, then whole numbers."""
    first = {k: v for k, v in counts.items() if k in ("url", "pass@1") or k.startswith("pass@1")}
    rest = {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool) and k not in first}
    return {**first, **rest}
