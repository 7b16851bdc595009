"""A repository's main language, the way GitHub's linguist picks it: the language with the most bytes.

Used when the source has no answer of its own (the `git` and `local` sources; GitHub's API gives one).
Only the 23 languages of the corpus count (`codemill.languages`), by file suffix. A suffix shared by
several languages (`.h`) has its bytes given to whichever of its candidate languages holds the most
bytes in unambiguous files of the same repository (`.c` vs `.cpp` vs `.m` ...), or to the first
candidate (C) when none of them is present; so the headers of a C++ project count as C++, and a
header-only library counts as C. Ties go to the language listed first in `codemill.languages`
(the larger share of the corpus).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from codemill.crawl.extract import RepoFile
from codemill.languages import AMBIGUOUS_EXTENSIONS, EXTENSION_TO_LANGUAGE, LANGUAGE_NAMES, normalize_language

_ORDER = {name: i for i, name in enumerate(LANGUAGE_NAMES)}


def bytes_by_extension(files: Iterable[RepoFile]) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for f in files:
        totals[f.ext] += f.size_bytes
    return dict(totals)


def bytes_by_language(bytes_by_ext: Mapping[str, int]) -> dict[str, int]:
    """Bytes per corpus language, ambiguous suffixes resolved as the module docstring says."""
    totals: Counter[str] = Counter()
    for ext, n in bytes_by_ext.items():
        language = EXTENSION_TO_LANGUAGE.get(ext.lower())
        if language:
            totals[language] += n
    for ext, candidates in AMBIGUOUS_EXTENSIONS.items():
        n = sum(v for e, v in bytes_by_ext.items() if e.lower() == ext)
        if n:
            # max() keeps the first of equal candidates, and the candidates are listed in priority order.
            winner = max(candidates, key=lambda lang: totals[lang])
            totals[winner] += n
    return {lang: n for lang, n in totals.items() if n > 0}


def main_language(bytes_by_ext: Mapping[str, int], repo_hint: str | None = None) -> str | None:
    """`repo_hint` (a source's own answer, e.g. GitHub's, computed over the whole repository) wins when
    given; otherwise the corpus language with the most bytes, or None when the repository has none."""
    if repo_hint:
        return normalize_language(repo_hint)
    totals = bytes_by_language(bytes_by_ext)
    if not totals:
        return None
    return min(totals, key=lambda lang: (-totals[lang], _ORDER[lang]))
