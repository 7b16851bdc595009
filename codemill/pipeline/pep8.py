"""PEP 8 formatting of the kept Python files, as the paper did before training (SPEC §1), with black.

black is deterministic and changes layout only (it is built to keep the syntax tree; its slower
`--safe` re-check is not run per file), so the code's meaning is kept; the line length defaults to
PEP 8's 79 rather than black's 88. Stub files
(`.pyi`) use black's stub style. A file black cannot parse (Python 2, syntax errors, other dialects) is
kept exactly as it was and counted as `unparsable`; any other failure of the formatter likewise keeps
the file and counts it as `failed`. A reformatted file gets new `size_bytes` and `sha256`; its `doc_id`
stays the crawl's, so it can still be traced to its source.

Each file gets a `pep8` status: formatted | unchanged | unparsable | failed, or null for files that are
not kept Python files.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PYTHON = "Python"
STUB_EXTENSION = ".pyi"
STATUSES = ("formatted", "unchanged", "unparsable", "failed")


def format_source(source: str, line_length: int, is_stub: bool = False) -> tuple[str, str]:
    """(new source, status) for one Python file."""
    import black  # imported here: only this step needs it, and it takes a while to import

    try:
        formatted = black.format_str(source, mode=black.Mode(line_length=line_length, is_pyi=is_stub))
    except black.InvalidInput:
        return source, "unparsable"
    except Exception:  # noqa: BLE001 - a formatter bug must not lose the file; it is kept and counted
        return source, "failed"
    return formatted, ("unchanged" if formatted == source else "formatted")


def format_python(decided: pa.Table, line_length: int) -> pa.Table:
    """Reformat the kept Python files of a decided batch (see `codemill.pipeline.rules.decide`) and add
    the `pep8` status column."""
    todo = pc.and_(pc.is_null(decided.column("reason")), pc.equal(decided.column("language"), PYTHON))
    todo = pc.fill_null(todo, False).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(todo)
    status = np.full(decided.num_rows, None, dtype=object)
    if len(rows) == 0:
        return decided.append_column("pep8", pa.array(status, pa.string()))
    sources = decided.column("content").take(rows).to_pylist()
    exts = decided.column("ext").take(rows).to_pylist()
    results = [format_source(src, line_length, is_stub=(ext == STUB_EXTENSION)) for src, ext in zip(sources, exts)]
    status[rows] = [s for _, s in results]
    changed = np.zeros(decided.num_rows, dtype=bool)
    changed[rows] = [s == "formatted" for _, s in results]
    new_sources = [src for (src, s) in results if s == "formatted"]
    if new_sources:
        mask = pa.array(changed)
        encoded = [src.encode("utf-8") for src in new_sources]
        replacements = {
            "content": pa.array(new_sources, decided.schema.field("content").type),
            "size_bytes": pa.array([len(b) for b in encoded], pa.int64()),
            "sha256": pa.array([hashlib.sha256(b).hexdigest() for b in encoded], pa.string()),
        }
        for name, values in replacements.items():
            column = decided.column(name).combine_chunks()
            decided = decided.set_column(decided.schema.get_field_index(name), name,
                                         pc.replace_with_mask(column, mask, values))
    return decided.append_column("pep8", pa.array(status, pa.string()))
