"""The `ray job submit` command docs/operations.md shows, run as written with the real `ray` CLI against the
shared local head (token auth on): the config by a relative path, uploaded with `--working-dir`; only the
address, token file and output are this test's. (Without a token the job API refuses a client:
tests/e2e/test_dag_jobs.py.)"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from codemill import manifest as mf

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "operations.md"
MARKER = "# tested: tests/stages/test_ray_job_submit_cli.py"


def documented_command() -> tuple[dict[str, str], list[str]]:
    """The environment assignments and the argv of the tested block of docs/operations.md."""
    block = re.search(rf"```bash\n{re.escape(MARKER)}[^\n]*\n(.*?)```", DOC.read_text(), re.S).group(1)
    words = shlex.split(" ".join(line.rstrip("\\") for line in block.splitlines()))
    env = {}
    while re.match(r"^[A-Z_]+=", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def with_value(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[:i + 1], value, *argv[i + 2:]]


def test_the_documented_ray_job_submit_runs_a_stage_from_a_relative_config(ray_head, tmp_path):
    env, argv = documented_command()
    assert argv[:3] == ["ray", "job", "submit"] and env["RAY_AUTH_MODE"] == "token" and "RAY_AUTH_TOKEN_PATH" in env
    assert argv[argv.index("--working-dir") + 1] == "."
    config = argv[argv.index("--config") + 1]
    assert not os.path.isabs(config) and (REPO / config).is_file(), config
    out = str(tmp_path / "crawl")
    argv = with_value(with_value(argv, "--address", ray_head.dashboard_url), "--out", out)
    ray_cli = str(Path(sys.executable).with_name("ray"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    base["HOME"] = str(tmp_path / "home")  # only the documented token file, never ~/.ray/auth_token
    done = subprocess.run([ray_cli, *argv[1:]], env={**base, **env, "RAY_AUTH_TOKEN_PATH": str(ray_head.token_path)},
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout.lower(), done.stdout[-2000:]
    manifest = mf.read_manifest(out)
    assert manifest is not None and manifest.status == mf.STATUS_COMPLETE
    assert manifest.counts["repos_selected"] == 1 and manifest.counts["files"] > 50  # the uploaded codemill/
