"""The filter stage's configuration; every default is the paper's value (SPEC §1) or documented where
the paper gives none (autogen patterns, PEP 8 line length)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from codemill.config import StrictModel
from codemill.filter import autogen, rules
from codemill.languages import LANGUAGE_NAMES

# Python's own line limit (PEP 8 "Limit all lines to a maximum of 79 characters"); ruff's and black's default is 88.
PEP8_LINE_LENGTH = 79
# Rows per Ray Data batch: large enough that the vectorised rules amortise their per-batch cost, small
# enough (about 10 MB of code at a typical 10 KB per file) to keep worker memory modest.
BATCH_ROWS = 1024


class AutogenConfig(StrictModel):
    head_chars: int = Field(autogen.HEAD_CHARS, ge=1, description="characters searched for markers")
    markers: list[str] = Field(default_factory=lambda: list(autogen.MARKERS),
                               description="regular expressions (RE2 and Python syntax), ignoring case")
    name_globs: list[str] = Field(default_factory=lambda: list(autogen.NAME_GLOBS),
                                  description="file-name globs (* and ?), compared lower-cased")
    minified_line_chars: int = Field(autogen.MINIFIED_LINE_CHARS, ge=1)
    minified_line_share: float = Field(autogen.MINIFIED_LINE_SHARE, ge=0.0, le=1.0)

    @field_validator("markers")
    @classmethod
    def _markers_compile(cls, markers: list[str]) -> list[str]:
        import pyarrow as pa
        import pyarrow.compute as pc

        for marker in markers:
            try:
                re.compile(marker)
                pc.match_substring_regex(pa.array([""]), autogen.markers_regex([marker]))
            except (re.error, pa.ArrowInvalid) as exc:
                raise ValueError(f"marker {marker!r} is not a regular expression both RE2 and Python read: {exc}") \
                    from None
        return markers


class FilterConfig(StrictModel):
    max_avg_line_length: float = Field(rules.MAX_AVG_LINE_LENGTH, gt=0)
    min_alpha_ratio: float = Field(rules.MIN_ALPHA_RATIO, ge=0.0, le=1.0)
    min_size_bytes: int = Field(rules.MIN_SIZE_BYTES, ge=0)
    max_size_bytes: int = Field(rules.MAX_SIZE_BYTES, ge=1)
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGE_NAMES), min_length=1,
                                 description="languages kept, in the paper's spelling")
    autogen: AutogenConfig = Field(default_factory=AutogenConfig)
    # The paper formatted its Python to PEP 8 before training, so the default follows it.
    format_python: bool = True
    pep8_line_length: int = Field(PEP8_LINE_LENGTH, ge=20)
    batch_rows: int = Field(BATCH_ROWS, ge=1)

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, languages: list[str]) -> list[str]:
        unknown = [name for name in languages if name not in LANGUAGE_NAMES]
        if unknown:
            raise ValueError(f"unknown language(s) {unknown}; known: {', '.join(LANGUAGE_NAMES)}")
        return languages

    @model_validator(mode="after")
    def _size_bounds_ordered(self) -> FilterConfig:
        if self.min_size_bytes > self.max_size_bytes:
            raise ValueError(f"min_size_bytes ({self.min_size_bytes}) is above max_size_bytes ({self.max_size_bytes})")
        return self
