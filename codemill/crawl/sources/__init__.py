"""Where repositories come from: GitHub's REST API, git clone URLs, or folders and archives on disk.

`source.type` in the crawl config picks one; `make_source` builds it.
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from codemill.pipeline.sources.base import RepoSource
from codemill.pipeline.sources.git import GitSource, GitSourceConfig
from codemill.pipeline.sources.github import GithubSource, GithubSourceConfig
from codemill.pipeline.sources.local import LocalSource, LocalSourceConfig

SourceConfig = Annotated[Union[GithubSourceConfig, GitSourceConfig, LocalSourceConfig], Field(discriminator="type")]


def make_source(config: GithubSourceConfig | GitSourceConfig | LocalSourceConfig, limiter=None) -> RepoSource:
    """The source for `config`; `limiter` (GitHub only) shares one API budget across processes."""
    if isinstance(config, GithubSourceConfig):
        return GithubSource(config, limiter=limiter)
    if isinstance(config, GitSourceConfig):
        return GitSource(config)
    return LocalSource(config)
