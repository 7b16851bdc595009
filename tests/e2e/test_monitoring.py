"""codemill's metrics reach Prometheus: a real Prometheus (Debian's package, on loopback) scrapes the shared
Ray head through the service-discovery file Ray writes, while a stage runs and publishes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request

import pyarrow as pa
import pytest

from codemill import storage
from codemill.config import StrictModel
from codemill.raycluster import free_port
from codemill.runner import run_stage


class Demo(StrictModel):
    rows: int = 7


def _query(url: str, promql: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v1/query?query={urllib.parse.quote(promql)}", timeout=10) as resp:
        return json.loads(resp.read())["data"]["result"]


@pytest.fixture()
def prometheus(ray_head, tmp_path):
    exe = shutil.which("prometheus")
    assert exe, "prometheus is not installed (scripts/setup.sh installs Debian's package)"
    discovery = ray_head.root / "t" / "session_latest" / "prom_metrics_service_discovery.json"
    deadline = time.time() + 60
    while not discovery.exists() and time.time() < deadline:
        time.sleep(0.5)
    assert discovery.exists(), f"Ray wrote no {discovery.name}"
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "ray", "file_sd_configs": [{"files": [str(discovery)],
                                                                    "refresh_interval": "1s"}]}],
    }))
    port = free_port()
    proc = subprocess.Popen([exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/-/ready", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_stages_metrics_reach_prometheus(prometheus, ray_session, tmp_path):
    def body(run):
        storage.write_table(pa.table({"x": list(range(run.config.rows))}), run.path("data", "part-0.parquet"))
        return {"rows_in": run.config.rows, "rows_out": run.config.rows - 2,
                "dropped_by_reason": {"too_short": 2}}

    run_stage("monitoring-demo", Demo(), str(tmp_path / "out"), body)
    wanted = 'ray_codemill_stage_count{stage="monitoring-demo",run="standalone"}'
    deadline = time.time() + 120
    found: list[dict] = []
    while time.time() < deadline and len(found) < 3:
        found = _query(prometheus, wanted)
        time.sleep(1)
    values = {r["metric"]["count"]: float(r["value"][1]) for r in found}
    assert values == {"rows_in": 7.0, "rows_out": 5.0, "dropped_by_reason.too_short": 2.0}, found
    seconds = _query(prometheus, 'ray_codemill_stage_seconds{stage="monitoring-demo"}')
    assert seconds and all(float(r["value"][1]) >= 0 for r in seconds)
