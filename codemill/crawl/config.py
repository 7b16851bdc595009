"""The crawl stage's configuration: where repositories come from, which are kept, how files are read."""

from __future__ import annotations

from pydantic import Field

from codemill.config import StrictModel
from codemill.crawl.extract import ExtractLimits
from codemill.crawl.selection import SelectionConfig
from codemill.crawl.sources import SourceConfig


class CrawlConfig(StrictModel):
    source: SourceConfig
    selection: SelectionConfig = SelectionConfig()
    extract: ExtractLimits = ExtractLimits()
    max_repos: int | None = Field(None, gt=0, description="stop after this many repositories (None: all)")
    # A task fetches and reads one repository; network sources wait more than they compute, so they can
    # ask for less than a CPU each and keep more downloads in flight.
    task_num_cpus: float = Field(1.0, gt=0)
    task_max_retries: int = Field(2, ge=0, description="Ray retries of a task whose worker died")
    max_in_flight: int | None = Field(None, gt=0, description="tasks in flight (default: 2 x cluster CPUs)")
