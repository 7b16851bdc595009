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
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(__file__).resolve().parents[1] / ".cache" / "torch_extensions"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def ray_head():
    """One real local Ray head (dashboard + token auth) for the whole session; tests connect to it."""
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
