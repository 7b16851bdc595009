"""The crawl stage's configuration: where repositories come from, which are kept, how files are read."""

from __future__ import annotations

from pydantic import Field, StrictFloat, StrictInt

from codemill.config import StrictModel
from codemill.crawl.extract import ExtractLimits
from codemill.crawl.selection import SelectionConfig
from codemill.crawl.sources import SourceConfig

# A task holds one repository in memory: up to `extract.max_repo_bytes` (200 MiB) read, its decoded text
# and the Arrow table written from it. Ray schedules by this request, so a node runs only as many
# tasks at once as their requests fit in its memory.
DEFAULT_TASK_MEMORY_MB = 1024
# A repository of at most 10 MB takes seconds; 30 minutes leaves room for a slow clone or a throttled
# download (which have their own limits) and ends a task stuck on a hostile archive.
DEFAULT_TASK_TIMEOUT_S = 1800.0


class CrawlConfig(StrictModel):
    source: SourceConfig
    selection: SelectionConfig = SelectionConfig()
    extract: ExtractLimits = ExtractLimits()
    max_repos: StrictInt | None = Field(None, gt=0, description="stop after this many repositories (None: all)")
    # A task fetches and reads one repository; network sources wait more than they compute, so they can
    # ask for less than a CPU each and keep more downloads in flight.
    task_num_cpus: StrictFloat = Field(1.0, gt=0, allow_inf_nan=False)
    # At most 1 TiB: Ray's resource arithmetic overflows far above it (2**50 bytes is scheduled as nothing).
    task_memory_mb: StrictInt = Field(DEFAULT_TASK_MEMORY_MB, ge=64, le=1 << 20,
                                      description="Ray memory request of a task")
    task_timeout_s: StrictFloat = Field(DEFAULT_TASK_TIMEOUT_S, gt=0, allow_inf_nan=False,
                                  description="a task not done this long after it was submitted is cancelled "
                                              "and its repository recorded as failed (timeout)")
    task_max_retries: StrictInt = Field(2, ge=0, description="Ray retries of a task whose worker died")
    max_in_flight: StrictInt | None = Field(None, gt=0, description="tasks in flight (default: 2 x cluster CPUs)")
