"""Which repositories the crawl keeps (SPEC §1): at least 1 star, at most 10 MB, not on an exclusion list.

The paper's corpus excludes repositories already in The Pile and CodeParrot, so the exclusion list is a
first-class input: names inline or a file (local or s3://) with one `owner/name` per line.
"""

from __future__ import annotations

import re

from pydantic import Field, StrictBool, StrictInt

from codemill import storage
from codemill.config import StrictModel
from codemill.crawl.sources.base import RepoRef

MIN_STARS = 1
MAX_REPO_SIZE_KB = 10 * 1024  # GitHub's `size` is in KB: 10 MB


class SelectionConfig(StrictModel):
    min_stars: StrictInt = Field(MIN_STARS, ge=0)
    max_size_kb: StrictInt = Field(MAX_REPO_SIZE_KB, ge=0)
    # Where a source does not know a repository's stars (a bare git URL with no metadata), keep it:
    # the star rule is a popularity proxy that such sources cannot apply.
    keep_unknown_stars: StrictBool = True
    exclude: list[str] = []
    exclude_file: str | None = None
    # Keep only repositories whose main language is one of these (paper spelling); empty keeps all.
    main_languages: list[str] = []


WEB_URL_PREFIX = re.compile(r"^(?:https?://)?(?:www\.)?github\.com/", re.IGNORECASE)


def exclusion_key(text: str) -> str:
    """`owner/name`, `https://github.com/owner/name(.git)` -> `owner/name` lower-cased (GitHub names are
    case-insensitive), so lists copied from other corpora's metadata match in any of these forms."""
    text = WEB_URL_PREFIX.sub("", text.strip()).rstrip("/")
    return text.removesuffix(".git").lower()


def load_exclusions(cfg: SelectionConfig) -> frozenset[str]:
    """The exclusion list: inline names plus a file (local or s3://) of one name a line; `#` comments."""
    lines = list(cfg.exclude)
    if cfg.exclude_file:
        lines += storage.read_bytes(cfg.exclude_file).decode("utf-8").splitlines()
    return frozenset(k for k in (exclusion_key(line.split("#", 1)[0]) for line in lines) if k)


def rejection_reason(ref: RepoRef, cfg: SelectionConfig, excluded: frozenset[str]) -> str | None:
    """Why `ref` is not crawled, or None when it is. Checks only what `ref` already knows; the size and
    language of a local or git repository are checked again once it is fetched."""
    if ref.full_name.lower() in excluded:
        return "excluded"
    if ref.stars is None:
        if not cfg.keep_unknown_stars:
            return "stars_unknown"
    elif ref.stars < cfg.min_stars:
        return f"stars<{cfg.min_stars}"
    if ref.size_kb is not None and ref.size_kb > cfg.max_size_kb:
        return f"size>{cfg.max_size_kb}KB"
    if cfg.main_languages and ref.main_language is not None and ref.main_language not in cfg.main_languages:
        return "main_language"
    return None
