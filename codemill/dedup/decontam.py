"""Decontamination: find documents that share long code-token n-grams with benchmark problems.

The benchmark side is JSON Lines of either layout: HumanEval-X (`task_id`, `prompt`, `canonical_solution`,
...: each problem's chosen fields, concatenated) or MTPB (`id`, `description`, `prompts`: the description and
the turn prompts in order, as a notebook copying the problem would hold them; MTPB has no solutions). The text
is tokenised exactly like the corpus (code tokens, see `codemill.dedup.shingles`) and cut into n-grams; an
n-gram is kept as a 64-bit hash. N-grams that occur in many different problems are boilerplate (include
blocks, imports, class headers) and are dropped, so that only problem-specific text can flag a document. The
same problem in several languages counts once (task ids "CPP/12" and "Java/12" are HumanEval-X problem 12;
"MTPB/12" is another problem).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from numba import njit

from codemill.dedup.kernels import mix64, token_buffers, token_hash, tokenize, utf8_buffers
from codemill.humaneval import problem_number, read_records

MTPB_TASK_PREFIX = "MTPB/"  # as codemill.eval.mtpb names its problems
_NGRAM_MULTIPLIER = 0x2545F4914F6CDD1D  # odd: the polynomial over token hashes stays a bijection per step


@njit(cache=True)
def _window_hash(tok_hash, first, n):
    h = 0
    for j in range(first, first + n):
        h = h * _NGRAM_MULTIPLIER + tok_hash[j]
    return mix64(h)


@njit(cache=True)
def _doc_token_hashes(data, start, end, tok_start, tok_end, tok_hash):
    n_tokens = tokenize(data, start, end, tok_start, tok_end)
    for t in range(n_tokens):
        tok_hash[t] = token_hash(data, tok_start[t], tok_end[t])
    return n_tokens


@njit(cache=True)
def _ngram_hashes(data, offsets, n):
    n_docs = len(offsets) - 1
    total_len = offsets[n_docs] - offsets[0]
    tok_start = np.empty(total_len + 1, np.int64)
    tok_end = np.empty(total_len + 1, np.int64)
    tok_hash = np.empty(total_len + 1, np.int64)
    out = np.empty(total_len + 1, np.int64)
    owner = np.empty(total_len + 1, np.int64)
    m = 0
    for d in range(n_docs):
        n_tokens = _doc_token_hashes(data, offsets[d], offsets[d + 1], tok_start, tok_end, tok_hash)
        for i in range(n_tokens - n + 1):
            out[m] = _window_hash(tok_hash, i, n)
            owner[m] = d
            m += 1
    return out[:m], owner[:m]


@njit(cache=True)
def _count_hits(data, offsets, n, table, hits, grams, first_hit):
    n_docs = len(offsets) - 1
    tok_start, tok_end, longest = token_buffers(offsets)
    tok_hash = np.empty(longest + 1, np.int64)
    for d in range(n_docs):
        n_tokens = _doc_token_hashes(data, offsets[d], offsets[d + 1], tok_start, tok_end, tok_hash)
        count = 0
        first = -1
        for i in range(n_tokens - n + 1):
            h = _window_hash(tok_hash, i, n)
            k = np.searchsorted(table, h)
            if k < len(table) and table[k] == h:
                count += 1
                if first < 0:
                    first = k
        hits[d] = count
        grams[d] = max(n_tokens - n + 1, 0)
        first_hit[d] = first


def ngram_hashes(texts: list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hash of every token n-gram, index of the text it came from)."""
    data, offsets = utf8_buffers(pa.array(texts, pa.large_string()))
    return _ngram_hashes(data, offsets, n)


@dataclass(frozen=True)
class BenchmarkIndex:
    """Sorted n-gram hashes of the benchmark problems, and the task id each one came from."""

    ngram: int
    hashes: np.ndarray  # int64, sorted, unique
    task_ids: np.ndarray  # object array of str, aligned with `hashes`
    n_problems: int

    @classmethod
    def empty(cls, ngram: int) -> BenchmarkIndex:
        return cls(ngram, np.zeros(0, np.int64), np.zeros(0, object), 0)


def is_mtpb_record(record: dict) -> bool:
    return isinstance(record.get("prompts"), list) and "id" in record


def benchmark_problems(paths: list[str], fields: list[str]) -> list[tuple[str, str]]:
    """(task_id, text) of every problem in the given files: HumanEval-X records by `fields`, MTPB records by
    their description and turn prompts (MTPB has no `task_id`; its problems are named `MTPB/<id>`)."""
    problems = []
    for path in paths:
        for r in read_records(path):
            if is_mtpb_record(r):
                text = "\n".join([str(r.get("description") or ""), *map(str, r["prompts"])])
                problems.append((f"{MTPB_TASK_PREFIX}{r['id']}", text))
            else:
                problems.append((str(r["task_id"]), "\n".join(str(r.get(k) or "") for k in fields)))
    return problems


def problem_key(task_id: str) -> str:
    """One problem across its languages: 'CPP/12' and 'Java/12' -> 'HumanEval-X/12'; 'MTPB/12' stays itself."""
    if task_id.startswith(MTPB_TASK_PREFIX):
        return task_id
    return "HumanEval-X/" + problem_number(task_id)


def build_index(problems: list[tuple[str, str]], ngram: int, boilerplate_min_problems: int) -> BenchmarkIndex:
    if not problems:
        return BenchmarkIndex.empty(ngram)
    hashes, owner = ngram_hashes([text for _, text in problems], ngram)
    numbers = np.array([problem_key(t) for t, _ in problems])
    task_ids = np.array([t for t, _ in problems], dtype=object)
    # Distinct (n-gram, problem number) pairs, then how many problems each n-gram occurs in.
    _, number_codes = np.unique(numbers, return_inverse=True)
    pairs = np.unique(np.stack([hashes, number_codes[owner]], axis=1), axis=0)
    grams, problem_counts = np.unique(pairs[:, 0], return_counts=True)
    specific = grams[problem_counts < boilerplate_min_problems]
    first_owner = owner[np.unique(hashes, return_index=True)[1]]  # np.unique sorts: aligned with `grams`
    return BenchmarkIndex(ngram, specific, task_ids[first_owner[problem_counts < boilerplate_min_problems]],
                          len({problem_key(t) for t, _ in problems}))


def load_index(paths: list[str], ngram: int, fields: list[str], boilerplate_min_problems: int) -> BenchmarkIndex:
    return build_index(benchmark_problems(paths, fields), ngram, boilerplate_min_problems)


@dataclass(frozen=True)
class ContaminationHits:
    hits: np.ndarray  # benchmark n-grams found in each document
    ngrams: np.ndarray  # n-grams in each document
    task_ids: list[str | None]  # the benchmark task of the first hit, if any


def find_contamination(contents: pa.Array | pa.ChunkedArray, index: BenchmarkIndex) -> ContaminationHits:
    data, offsets = utf8_buffers(contents)
    n_docs = len(offsets) - 1
    hits = np.zeros(n_docs, np.int64)
    grams = np.zeros(n_docs, np.int64)
    first = np.full(n_docs, -1, np.int64)
    if len(index.hashes):
        _count_hits(data, offsets, index.ngram, index.hashes, hits, grams, first)
    return ContaminationHits(hits, grams, [index.task_ids[k] if k >= 0 else None for k in first])
