"""The Parquet schemas of the filter's outputs."""

from __future__ import annotations

import pyarrow as pa

from codemill.crawl.schema import FILES_SCHEMA

# filter/kept: every files/ column plus the language identified (codemill.filter.langid).
KEPT_SCHEMA = FILES_SCHEMA.append(pa.field("language", pa.string()))

# filter/rejected: which file, the first rule it failed, and the values the rules measured
# (codemill.filter.rules; utf8_bytes is the size the size rule judged).
REJECTED_SCHEMA = pa.schema([
    ("doc_id", pa.string()), ("repo", pa.string()), ("path", pa.string()), ("ext", pa.string()),
    ("language", pa.string()), ("reason", pa.string()), ("utf8_bytes", pa.int64()),
    ("avg_line_length", pa.float64()), ("alpha_ratio", pa.float64()), ("max_line_length", pa.int64()),
    ("autogen", pa.string()),
])
