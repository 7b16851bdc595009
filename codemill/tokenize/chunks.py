"""Packing chunks: each (split, language) stream is cut into chunks packed independently, so a packing task
holds one chunk's ids, never a whole language's (Python at CodeGeeX's scale: tens of GB).

A stream of T ids (its documents' ids plus one `<|endoftext|>` each) has n = ceil(T / chunk_tokens) chunks;
chunk c holds the documents whose chunk key (a salted hash of the doc_id, `split.chunk_key`) falls in the
c-th of n equal key ranges. A chunk thus holds at most `chunk_tokens` ids on average, and the hash spreads
documents so evenly that a chunk exceeds that only by the sampling spread of its documents' sizes (a few
percent for chunks of millions of ids). A document's chunk depends only on its doc_id and its stream's
size, never on which task saw it first: the same input and config give the same chunks.

Each chunk is packed like a stream of its own (documents in doc_id order), so it ends in at most one padded
row: chunking pads at most one row per chunk more than packing each stream whole, which is what lets it keep
the rows-per-token efficiency (one chunk of 16M ids is ~8,000 rows). A chunk's rows are numbered after those
of the chunks before it in its stream (`plan`), so `stream_row` and the shuffle keys still number each
stream's rows once, from 0; a stream of one chunk packs exactly as it did whole.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from codemill.tokenize.shards import shard_of_keys, stream_rows

CHUNK_TOKENS = 1 << 24  # ids per chunk (16,777,216: 32 MiB as uint16): small against a worker, ~8,000 rows


def chunk_count(stream_ids: int, chunk_tokens: int) -> int:
    """How many chunks a stream of `stream_ids` ids (documents + separators) is cut into."""
    return max(1, -(-stream_ids // chunk_tokens))


def stream_chunk_counts(summary: list[dict], chunk_tokens: int) -> dict[tuple[str, str], int]:
    """Chunks per (split, language), from the per-stream counts of `batches.summarize_documents`."""
    return {(s["split"], s["language"]): chunk_count(s["doc_tokens"] + s["documents"], chunk_tokens)
            for s in summary}


def first_parts(n_chunks: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Each stream's first chunk in one dense numbering of all chunks, streams in (split, language) order:
    chunk c of stream s is part `first_parts[s] + c` (what the stage's shuffle partitions on)."""
    out, total = {}, 0
    for stream in sorted(n_chunks):
        out[stream], total = total, total + n_chunks[stream]
    return out


def chunk_of_keys(keys: np.ndarray, n_chunks: np.ndarray) -> np.ndarray:
    """Each document's chunk from its chunk key and its stream's chunk count: the same range partition as
    shards use, so chunk c of n holds the keys of the c-th of n equal ranges."""
    return shard_of_keys(keys, n_chunks)


def plan(chunk_summary: list[dict], tag_lens: dict[str, int], seq_len: int) -> list[dict]:
    """Each chunk's rows and first row in its stream, in (split, language, chunk) order, from its counts
    (`split`, `language`, `chunk`, `documents`, `doc_tokens`): the chunks of a stream follow one another."""
    next_row: dict[tuple[str, str], int] = defaultdict(int)
    planned = []
    for c in sorted(chunk_summary, key=lambda c: (c["split"], c["language"], c["chunk"])):
        stream = (c["split"], c["language"])
        rows = stream_rows(c["doc_tokens"], c["documents"], tag_lens[c["language"]], seq_len)
        planned.append({**c, "rows": rows, "first_row": next_row[stream]})
        next_row[stream] += rows
    return planned


def packing_stats(planned: list[dict], summary: list[dict], tag_lens: dict[str, int], seq_len: int,
                  chunk_tokens: int) -> dict:
    """What chunking costs: rows against packing each stream whole (`rows_unchunked`), the extra rows
    that the chunks' own last rows add, and how many streams and chunks there were."""
    rows = sum(c["rows"] for c in planned)
    whole = sum(stream_rows(s["doc_tokens"], s["documents"], tag_lens[s["language"]], seq_len) for s in summary)
    return {"chunk_tokens": chunk_tokens, "streams": len(summary), "chunks": len(planned), "rows": rows,
            "rows_unchunked": whole, "extra_rows": rows - whole,
            "extra_row_fraction": round((rows - whole) / whole, 8) if whole else 0.0}
