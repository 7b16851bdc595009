"""The one log format of every codemill process (stages, the DAG runner, Ray workers, benchmarks); its own
module so a process that needs nothing else of codemill (the op build of scripts/setup.sh) can use it."""

from __future__ import annotations

import logging
import sys


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", stream=sys.stderr)
