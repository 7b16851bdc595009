"""Secrets never written, logged or shown: URL credentials redacted, secret-looking names recognised.

Used wherever a URL or a config can reach a log, an error, a manifest, a saved DAG config or a Ray runtime
env (which the dashboard shows).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"

# scheme://userinfo@host: userinfo may hold '@', '/' and ':' (a password nobody URL-encoded), so the
# credentials run to the LAST '@' before the host, within one whitespace- and quote-free token.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]*)@(?=[^\s'\"<>@]*)")

# Environment variable names whose values are secrets.
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE_KEY|AUTH)",
                          re.IGNORECASE)


def redact_url(text: str) -> str:
    """`https://user:p@ss/w@host/x` -> `https://***@host/x`, wherever URLs appear in `text`."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)


def is_secret_name(name: str) -> bool:
    """Whether an environment variable named so holds a secret (GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY, ...)."""
    return bool(_SECRET_NAME.search(name))


def redact_config(value: Any) -> Any:
    """A JSON-like config with every URL's credentials redacted (for manifests, logs and saved configs)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, list):
        return [redact_config(v) for v in value]
    if isinstance(value, dict):
        return {k: redact_config(v) for k, v in value.items()}
    return value
