"""Where repositories come from: GitHub's REST API, git clone URLs, or folders and archives on disk.

`source.type` in the crawl config picks one; `make_source` builds it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from codemill.crawl.sources.base import RepoSource
from codemill.crawl.sources.git import GitSource, GitSourceConfig
from codemill.crawl.sources.github import GithubSource, GithubSourceConfig
from codemill.crawl.sources.local import LocalSource, LocalSourceConfig

SourceConfig = Annotated[GithubSourceConfig | GitSourceConfig | LocalSourceConfig, Field(discriminator="type")]


def make_source(config: GithubSourceConfig | GitSourceConfig | LocalSourceConfig, limiter=None) -> RepoSource:
    """The source for `config`; `limiter` (GitHub only) shares one API budget across processes."""
    if isinstance(config, GithubSourceConfig):
        return GithubSource(config, limiter=limiter)
    if isinstance(config, GitSourceConfig):
        return GitSource(config)
    return LocalSource(config)
