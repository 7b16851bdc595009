"""Shared fixtures. Tests run inside a loopback-only network namespace (scripts/in-netns.sh).

Ray reads its auth settings when it is imported, so they are set here, before any test module imports it:
every Ray client in the test session uses the token of the one shared local head.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_TOKEN_DIR = Path(tempfile.mkdtemp(prefix="cm-test-token-"))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_TOKEN_DIR / "auth_token")
os.environ.pop("RAY_ADDRESS", None)
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# The tests run on CPUs, where the fused decode kernels run in Triton's interpreter. Triton defines its own
# library (tl.zeros, ...) when it is first imported, and torch.compile imports it early, so the interpreter is
# chosen here, before any test module loads.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# A test's tier is the folder it lives in (never a marker set by hand): `-m unit` is what `make check` runs.
TIERS = {
    "unit": "no Ray, no servers, no subprocesses: logic in milliseconds (make check)",
    "stages": "the shared Ray head, the S3 server, compilers and the sandbox",
    "e2e": "whole DAG runs, clusters of their own, the benchmark check, Serve over HTTP",
}
# Fixtures that start a server or a cluster: a unit test that asks for one belongs in another tier.
SERVER_FIXTURES = {"ray_head", "ray_session", "s3_server", "s3_bucket"}


def pytest_configure(config):
    for tier, what in TIERS.items():
        config.addinivalue_line("markers", f"{tier}: {what} (set from the folder tests/{tier}/)")


def pytest_collection_modifyitems(config, items):
    misplaced = []
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        tier = parts[0] if len(parts) > 1 else None
        if tier not in TIERS:
            misplaced.append(f"{item.nodeid}: tests live in tests/unit/, tests/stages/ or tests/e2e/")
            continue
        item.add_marker(getattr(pytest.mark, tier))
        servers = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
        if tier == "unit" and servers:
            misplaced.append(f"{item.nodeid}: a unit test uses {sorted(servers)}; move it to tests/stages/")
    if misplaced:
        raise pytest.UsageError("tests in the wrong tier:\n  " + "\n  ".join(misplaced))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Workers take a file at a time in this order: the longest tier first, and the unit tier's many short
        # files last, where they fill the gap while the other worker ends its last long file.
        order = {"e2e": 0, "stages": 1, "unit": 2}
        items.sort(key=lambda item: order[Path(str(item.path)).resolve().relative_to(TESTS).parts[0]])


@pytest.fixture(scope="session")
def ray_head(s3_server):
    """One real local Ray head (dashboard + token auth) for the whole session; tests connect to it.
    It starts after the S3 server, so its workers inherit the AWS_* settings that point at it."""
    from codemill.raycluster import LocalRayHead

    head = LocalRayHead(token_file=Path(os.environ["RAY_AUTH_TOKEN_PATH"]))
    head.start()
    os.environ["RAY_ADDRESS"] = head.address
    try:
        yield head
    finally:
        try:
            import ray
            if ray.is_initialized():
                ray.shutdown()
        finally:
            os.environ.pop("RAY_ADDRESS", None)
            head.stop()


@pytest.fixture()
def ray_session(ray_head):
    """A driver connected to the shared head (for code that calls Ray in-process)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_head.address, log_to_driver=False)
    yield ray_head


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto_server) on loopback; AWS_* settings point every client at it."""
    import shutil
    import subprocess
    import sys
    import time
    import urllib.request

    from codemill.raycluster import free_port

    port = free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except Exception:
            if time.time() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.3)
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update({"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"})
    try:
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def s3_bucket(s3_server, request):
    """A new empty bucket on the moto server, as an `s3://` URI."""
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:6]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture(scope="module")
def eval_cache(tmp_path_factory):
    """A private ~/.cache for one test module: the machine's real benchmark-check cache is not touched."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield Path(os.environ["XDG_CACHE_HOME"])
    if old is None:
        os.environ.pop("XDG_CACHE_HOME")
    else:
        os.environ["XDG_CACHE_HOME"] = old
