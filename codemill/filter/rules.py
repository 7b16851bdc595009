"""The file filter of SPEC §1 as score + keep on whole Arrow batches: every measurement is kept as a column,
and each file gets the first rule it fails, in this order, as its `reason` (null = kept):

1. `language`: no language of the configured list (see `codemill.filter.langid`).
2. `avg_line_length`: characters per line, averaged, above `max_avg_line_length` (100). The average is
   (characters that are not "\\n") / (number of lines); a final "\\n" ends the last line and does not
   start an empty one, "\\r" counts as a character (see `codemill.filter.textstats`). Exactly 100 is kept.
3. `autogen`: automatically generated, by name, marker or minified content (see `codemill.filter.autogen`).
4. `alpha_ratio`: alphabetic characters / all characters (newlines and spaces included) below
   `min_alpha_ratio` (0.40); a character is alphabetic when Python's `str.isalpha()` says so, so Unicode
   letters count. Exactly 0.40 is kept; an empty file has ratio 0.
5. `size`: UTF-8 bytes of the content below `min_size_bytes` (1 KB = 1,024) or above `max_size_bytes`
   (100 KB = 102,400). Both bounds are kept: 1,024 and 102,400 bytes pass.

Language comes first because the corpus is defined by its 23 languages; the four rules follow SPEC §1's
order. Every rule is measured on every file, so `failures` also gives per-rule counts that do not depend
on the order. The rules judge the file as crawled (before any PEP 8 formatting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from codemill.filter import textstats
from codemill.filter.autogen import autogen_signals
from codemill.filter.langid import identify_languages

if TYPE_CHECKING:
    from codemill.filter.config import FilterConfig

MAX_AVG_LINE_LENGTH = 100.0
MIN_ALPHA_RATIO = 0.40
MIN_SIZE_BYTES = 1024
MAX_SIZE_BYTES = 100 * 1024

REASONS: tuple[str, ...] = ("language", "avg_line_length", "autogen", "alpha_ratio", "size")

# The measured values, as columns of the decided batch and of rejected/.
SCORE_SCHEMA = pa.schema([
    ("language", pa.string()), ("utf8_bytes", pa.int64()), ("avg_line_length", pa.float64()),
    ("alpha_ratio", pa.float64()), ("max_line_length", pa.int64()), ("autogen", pa.string()),
])


def score(batch: pa.Table, config: FilterConfig) -> pa.Table:
    """The measured values of every file of `batch` (a table with the files/ columns)."""
    stats = textstats.measure(batch.column("content"))
    avg_line_length = np.divide(stats.line_chars, stats.lines, out=np.zeros(len(stats.lines)),
                                where=stats.lines > 0)
    alpha_ratio = np.divide(stats.letters, stats.chars, out=np.zeros(len(stats.chars)), where=stats.chars > 0)
    ag = config.autogen
    autogen = autogen_signals(batch.column("path"), batch.column("content"), stats, head_chars=ag.head_chars,
                              markers=ag.markers, name_globs=ag.name_globs,
                              minified_line_chars=ag.minified_line_chars,
                              minified_line_share=ag.minified_line_share)
    language = identify_languages(batch.column("ext"), batch.column("repo_language"), config.languages)
    return pa.table([language, stats.bytes, avg_line_length, alpha_ratio, stats.longest_line, autogen],
                    schema=SCORE_SCHEMA)


def failures(scores: pa.Table, config: FilterConfig) -> dict[str, np.ndarray]:
    """For each rule (in `REASONS` order), which files fail it."""
    size = scores.column("utf8_bytes").to_numpy()
    return {
        "language": scores.column("language").is_null().to_numpy(zero_copy_only=False),
        "avg_line_length": scores.column("avg_line_length").to_numpy() > config.max_avg_line_length,
        "autogen": scores.column("autogen").is_valid().to_numpy(zero_copy_only=False),
        "alpha_ratio": scores.column("alpha_ratio").to_numpy() < config.min_alpha_ratio,
        "size": (size < config.min_size_bytes) | (size > config.max_size_bytes),
    }


def first_reason(failed: dict[str, np.ndarray]) -> pa.Array:
    """The first failed rule of each file, or null for a file that passes them all."""
    masks = [failed[r] for r in REASONS]
    index = np.select(masks, list(range(1, len(REASONS) + 1)), default=0)
    return pa.array(np.array((None,) + REASONS, dtype=object)[index], pa.string())


def decide(batch: pa.Table, config: FilterConfig) -> pa.Table:
    """`batch` plus the measured values and `reason` (null = kept)."""
    scores = score(batch, config)
    reason = first_reason(failures(scores, config))
    out = batch
    for name in scores.column_names:
        out = out.append_column(name, scores.column(name))
    return out.append_column("reason", reason)


def is_kept(decided: pa.Table) -> pa.Array:
    return pc.is_null(decided.column("reason"))
