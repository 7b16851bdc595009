"""Results written as batches finish, so that a run that stops (a killed driver, a lost node) resumes: a rerun
reads them back and executes only what is missing.

`<out>/partial/` holds `_identity.json` (what the results belong to: the run's config, flags and inputs, and
the phase) and files of result rows, one JSON object a line, each with the execution's `key`. Rows are
flushed every few seconds (one small write each: no appends, so S3 works too). Rows that are not the
sample's doing (`infrastructure_error`) are not reused: a rerun executes them again.
"""

from __future__ import annotations

import json
import logging
import os
import time

from codemill import storage
from codemill.eval.languages import INFRASTRUCTURE_ERROR

log = logging.getLogger("codemill.eval")

IDENTITY_FILE = "_identity.json"
FLUSH_EVERY_S = 5.0
FLUSH_EVERY_ROWS = 5000


class PartialResults:
    def __init__(self, folder: str, identity: str, flush_every_s: float = FLUSH_EVERY_S):
        self.folder, self.identity, self.flush_every_s = folder, identity, flush_every_s
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()
        self.serial = 0

    def load(self) -> dict[str, dict]:
        """The rows an earlier run of the same identity left (by key); anything else there is removed."""
        marker = storage.join(self.folder, IDENTITY_FILE)
        if storage.exists(marker):
            try:
                same = json.loads(storage.read_bytes(marker)).get("identity") == self.identity
            except ValueError:
                same = False
            if not same:
                log.info("eval: partial results in %s belong to another config; starting over", self.folder)
                storage.delete(self.folder)
        elif storage.exists(self.folder):
            storage.delete(self.folder)
        rows: dict[str, dict] = {}
        if storage.exists(marker):
            for name in sorted(storage.list_names(self.folder)):
                if name == IDENTITY_FILE:
                    continue
                for line in storage.read_bytes(storage.join(self.folder, name)).decode().splitlines():
                    try:
                        row = json.loads(line)
                    except ValueError:
                        continue  # a file cut short by the kill: its complete lines count
                    if isinstance(row, dict) and "key" in row and row.get("outcome") != INFRASTRUCTURE_ERROR:
                        rows[str(row["key"])] = row
        else:
            storage.write_json(marker, {"identity": self.identity})
        return rows

    def add(self, rows: list[dict]) -> None:
        self.pending.extend(rows)
        if len(self.pending) >= FLUSH_EVERY_ROWS or time.monotonic() - self.last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.serial += 1
            name = f"rows-{time.time_ns()}-{os.getpid()}-{self.serial}.jsonl"
            storage.write_bytes(storage.join(self.folder, name),
                                "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.pending).encode())
            self.pending = []
        self.last_flush = time.monotonic()

    def remove(self) -> None:
        storage.delete(self.folder)
