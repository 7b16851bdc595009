"""The four file rules of SPEC §1 at their boundaries, the measurements behind them, and the reason order."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest

from codemill.config import ConfigError, build_config
from codemill.crawl.schema import FILES_SCHEMA
from codemill.filter import rules, textstats
from codemill.filter.config import FilterConfig

CONFIG = FilterConfig()


def files_table(contents, paths=None, exts=None, repo_languages=None, content_type=pa.large_string()) -> pa.Table:
    n = len(contents)
    paths = paths or [f"src/f{i}.py" for i in range(n)]
    exts = exts or ["." + p.rsplit(".", 1)[-1].lower() if "." in p.rsplit("/", 1)[-1] else "" for p in paths]
    table = pa.table({
        "doc_id": [f"d{i}" for i in range(n)], "repo": ["o/r"] * n, "path": paths, "ext": exts,
        "content": pa.array(contents, content_type),
        "size_bytes": [len(c.encode()) if c is not None else 0 for c in contents], "sha256": ["0" * 64] * n,
        "encoding": ["utf-8"] * n, "repo_stars": [1] * n,
        "repo_language": pa.array(repo_languages or [None] * n, pa.string()),
    })
    return table if content_type != FILES_SCHEMA.field("content").type else table.cast(FILES_SCHEMA)


def decide_one(content: str, path: str = "src/module.py", config: FilterConfig = CONFIG, repo_language=None) -> dict:
    return rules.decide(files_table([content], [path], repo_languages=[repo_language]), config).to_pylist()[0]


def python_lines(n_lines: int, width: int) -> str:
    """Valid-looking code of `n_lines` lines of exactly `width` characters, all letters but one space."""
    return "".join("x = " + "a" * (width - 4) + "\n" for _ in range(n_lines))


# --- measurements -------------------------------------------------------------------------------------

def reference_stats(s: str) -> dict:
    lines = s.split("\n") if s else []
    if s.endswith("\n"):
        lines.pop()
    return {"bytes": len(s.encode()), "chars": len(s), "newlines": s.count("\n"), "lines": len(lines),
            "longest_line": max(map(len, lines), default=0), "letters": sum(map(str.isalpha, s))}


@pytest.mark.parametrize("content_type", [pa.large_string(), pa.string()])
def test_measurements_match_their_python_definitions(content_type):
    rng = random.Random(7)
    alphabet = "ab Z\n\n\r\t1_é中\U0001F600ßΩ٣"  # ASCII, 2-, 3- and 4-byte UTF-8, a non-letter digit (٣)
    for _ in range(200):
        docs = ["".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, 7, 40])))
                for _ in range(rng.randint(0, 9))]
        array = pa.array(docs, content_type)
        if len(docs) > 2:  # a slice has a non-zero offset into its buffers
            array, docs = array.slice(1, len(docs) - 2), docs[1:-1]
        stats = textstats.measure(array)
        for i, doc in enumerate(docs):
            for key, value in reference_stats(doc).items():
                assert getattr(stats, key)[i] == value, (key, doc)


def test_measurements_of_chunked_arrays_and_nulls():
    chunked = pa.chunked_array([pa.array(["ab\n", None], pa.large_string()), pa.array(["é\nxyz"], pa.large_string())])
    stats = textstats.measure(chunked)
    assert stats.bytes.tolist() == [3, 0, 6]
    assert stats.lines.tolist() == [1, 0, 2]
    assert stats.longest_line.tolist() == [2, 0, 3]
    assert stats.letters.tolist() == [2, 0, 4]


@pytest.mark.parametrize("text, lines, line_chars", [
    ("", 0, 0), ("\n", 1, 0), ("a", 1, 1), ("a\n", 1, 1), ("a\nb", 2, 2), ("a\nb\n", 2, 2), ("a\n\n", 2, 1),
    ("a\r\nb\r\n", 2, 4),  # "\r" is a character of its line
])
def test_line_counting(text, lines, line_chars):
    stats = textstats.measure(pa.array([text]))
    assert stats.lines[0] == lines and stats.line_chars[0] == line_chars


# --- rule 1: average line length ----------------------------------------------------------------------

def test_average_line_length_of_exactly_100_is_kept():
    row = decide_one(python_lines(20, 100))
    assert row["avg_line_length"] == 100.0 and row["reason"] is None


def test_average_line_length_above_100_is_dropped():
    row = decide_one(python_lines(19, 100) + python_lines(1, 101))
    assert row["avg_line_length"] == pytest.approx(100.05) and row["reason"] == "avg_line_length"


def test_trailing_newline_does_not_change_the_average():
    body = python_lines(20, 100)
    assert decide_one(body)["avg_line_length"] == decide_one(body.rstrip("\n"))["avg_line_length"] == 100.0


def test_average_line_length_threshold_is_configurable():
    config = build_config(FilterConfig, {"max_avg_line_length": 50})
    assert decide_one(python_lines(20, 60), config=config)["reason"] == "avg_line_length"


# --- rule 3: alphabet ratio ---------------------------------------------------------------------------

def test_alpha_ratio_of_exactly_040_is_kept():
    content = "abcd12345\n" * 200  # 4 letters in 10 characters
    row = decide_one(content)
    assert row["alpha_ratio"] == 0.4 and row["reason"] is None


def test_alpha_ratio_just_below_040_is_dropped():
    content = "abcd12345\n" * 199 + "abc123456\n"
    row = decide_one(content)
    assert row["alpha_ratio"] == pytest.approx(799 / 2000) and row["reason"] == "alpha_ratio"


def test_unicode_letters_count_as_alphabetic():
    greek = "αβγδ12345\n" * 200  # 4 Greek letters in 10 characters
    assert decide_one(greek)["alpha_ratio"] == 0.4
    digits = "١٢٣٤٥٦٧٨٩\n" * 200  # Arabic-Indic digits are not letters
    assert decide_one(digits)["reason"] == "alpha_ratio"


# --- rule 4: size -------------------------------------------------------------------------------------

def sized(n_bytes: int) -> str:
    """A passing file of exactly `n_bytes` UTF-8 bytes."""
    line = "value = 1\n"
    return (line * (n_bytes // len(line) + 1))[:n_bytes - 1] + "\n"


@pytest.mark.parametrize("n_bytes, kept", [(1023, False), (1024, True), (102_400, True), (102_401, False)])
def test_size_bounds(n_bytes, kept):
    row = decide_one(sized(n_bytes))
    assert row["utf8_bytes"] == n_bytes
    assert (row["reason"] is None) is kept and (kept or row["reason"] == "size")


def test_size_is_utf8_bytes_not_characters():
    lines = ("é" * 63 + "\n") * 8  # 127 bytes a line
    row = decide_one(lines + "ééé" + "a")  # 1,023 bytes in 516 characters
    assert (row["utf8_bytes"], len(lines) + 4) == (1023, 516) and row["reason"] == "size"
    assert decide_one(lines + "éééé")["reason"] is None  # 1,024 bytes


def test_empty_file_is_dropped_with_zero_measures():
    row = decide_one("")
    assert row["utf8_bytes"] == 0 and row["avg_line_length"] == 0 and row["alpha_ratio"] == 0
    assert row["reason"] == "alpha_ratio"  # the first failed rule: alpha ratio comes before size


# --- order and per-rule failures ----------------------------------------------------------------------

def test_first_failed_rule_is_the_reason_and_all_failures_are_reported():
    long_generated = "# Generated by the protocol buffer compiler.  DO NOT EDIT!\n" + "1" * 300 + "\n"
    table = rules.decide(files_table([long_generated, long_generated], ["a/x_pb2.py", "a/x.json"]), CONFIG)
    assert table.column("reason").to_pylist() == ["avg_line_length", "language"]
    failed = rules.failures(table, CONFIG)
    assert failed["avg_line_length"].tolist() == [True, True]
    assert failed["autogen"].tolist() == [True, True]
    assert failed["alpha_ratio"].tolist() == [True, True]
    assert failed["size"].tolist() == [True, True]
    assert failed["language"].tolist() == [False, True]
    assert table.column("autogen").to_pylist() == ["name", "marker"]


def test_decide_keeps_the_input_columns_and_adds_the_measures():
    table = rules.decide(files_table([sized(2000)]), CONFIG)
    assert table.column_names == FILES_SCHEMA.names + rules.SCORE_SCHEMA.names + ["reason"]
    assert table.column("language").to_pylist() == ["Python"]


# --- configuration ------------------------------------------------------------------------------------

def test_defaults_are_the_papers_thresholds():
    assert (CONFIG.max_avg_line_length, CONFIG.min_alpha_ratio) == (100, 0.40)
    assert (CONFIG.min_size_bytes, CONFIG.max_size_bytes) == (1024, 100 * 1024)
    assert len(CONFIG.languages) == 23 and CONFIG.format_python


@pytest.mark.parametrize("data, message", [
    ({"languages": ["Python", "Cobol"]}, "Cobol"),
    ({"languages": []}, "languages"),
    ({"min_size_bytes": 5000, "max_size_bytes": 4000}, "min_size_bytes"),
    ({"min_alpha_ratio": 1.5}, "min_alpha_ratio"),
    ({"autogen": {"markers": ["(?<=x)y"]}}, "RE2"),
    ({"max_avg_line_lenght": 3}, "not a known setting"),
])
def test_bad_configs_are_refused(data, message):
    with pytest.raises(ConfigError, match=message):
        build_config(FilterConfig, data)
