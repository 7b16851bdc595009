"""The filter stage: PEP 8 formatting, statistics, the language-mix figure, and whole runs on a real Ray
(local folder and S3) through the stage runner."""

from __future__ import annotations

import hashlib
import importlib.metadata

import pyarrow as pa
import pyarrow.compute as pc

from codemill import manifest as mf
from codemill import storage
from codemill.config import StrictModel, build_config
from codemill.crawl.schema import FILES_SCHEMA, make_doc_id
from codemill.filter import pep8, rules
from codemill.filter import stage as filter_stage
from codemill.filter import stats as filter_stats
from codemill.filter.config import FilterConfig
from codemill.filter.schema import KEPT_SCHEMA, REJECTED_SCHEMA
from codemill.plots import language_mix_png
from codemill.runner import run_stage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

UNFORMATTED_PY = "".join(f"def add_{i}( left,right ):\n    return {{'key':left,'value':right}}\n" for i in range(40))
FORMATTED_PY = "\n\n".join(f'def add_{i}(left, right):\n    return {{"key": left, "value": right}}\n'
                           for i in range(40))
PYTHON2 = "".join(f'print "value {i}"\n' for i in range(80))
C_CODE = "".join(f"static int add{i}(int a, int b) {{ return a + b; }}\n" for i in range(40))
JS_CODE = "".join(f"function add{i}(a, b) {{ return a + b; }}\n" for i in range(40))

# (repo, path, repo language, content, expected reason)
DOCUMENTS = [
    ("o/py", "pkg/ugly.py", "Python", UNFORMATTED_PY, None),
    ("o/py", "pkg/pretty.py", "Python", FORMATTED_PY, None),
    ("o/py", "pkg/legacy.py", "Python", PYTHON2, None),
    ("o/py", "pkg/api_pb2.py", "Python", FORMATTED_PY, "autogen"),
    ("o/py", "pkg/tiny.py", "Python", "value = 1\n", "size"),
    ("o/py", "pkg/table.py", "Python", "T = [" + "1, " * 2000 + "]\n", "avg_line_length"),
    ("o/py", "pkg/numbers.py", "Python", "1234567890\n" * 200, "alpha_ratio"),
    ("o/py", "README.md", "Python", "# Title\n" * 200, "language"),
    ("o/cpp", "include/add.h", "C++", C_CODE, None),
    ("o/c", "include/add.h", "C", C_CODE, None),
    ("o/js", "web/app.js", "JavaScript", JS_CODE, None),
    ("o/js", "web/app.min.js", "JavaScript", JS_CODE, "autogen"),
]


def files_table(documents=DOCUMENTS) -> pa.Table:
    rows = []
    for repo, path, language, content, _ in documents:
        digest = hashlib.sha256(content.encode()).hexdigest()
        rows.append({"doc_id": make_doc_id(repo, path, digest), "repo": repo, "path": path,
                     "ext": "." + path.rsplit(".", 1)[-1].lower(), "content": content,
                     "size_bytes": len(content.encode()), "sha256": digest, "encoding": "utf-8",
                     "repo_stars": 3, "repo_language": language})
    return pa.Table.from_pylist(rows, schema=FILES_SCHEMA)


# --- PEP 8 -------------------------------------------------------------------------------------------

def decided(config: FilterConfig = FilterConfig()) -> pa.Table:
    return rules.decide(files_table(), config)


def test_pep8_formats_kept_python_and_updates_size_and_hash():
    table = pep8.format_python(decided(), line_length=79)
    rows = {r["path"] + r["repo"]: r for r in table.to_pylist()}
    ugly = rows["pkg/ugly.pyo/py"]
    assert ugly["pep8"] == "formatted" and ugly["content"] == FORMATTED_PY
    assert ugly["size_bytes"] == len(FORMATTED_PY.encode())
    assert ugly["sha256"] == hashlib.sha256(FORMATTED_PY.encode()).hexdigest()
    assert ugly["doc_id"] == files_table().column("doc_id")[0].as_py()  # the crawl's id stays
    assert rows["pkg/pretty.pyo/py"]["pep8"] == "unchanged"
    legacy = rows["pkg/legacy.pyo/py"]
    assert legacy["pep8"] == "unparsable" and legacy["content"] == PYTHON2 and legacy["reason"] is None
    assert rows["pkg/api_pb2.pyo/py"]["pep8"] is None  # rejected files are not formatted
    assert rows["include/add.ho/cpp"]["pep8"] is None and rows["web/app.jso/js"]["pep8"] is None


def test_pep8_line_length_and_stub_style():
    long_call = "result = some_function(argument_one, argument_two, argument_three, arg4)\n"  # 75 characters
    assert pep8.format_source(long_call, 79) == (long_call, "unchanged")
    assert pep8.format_source(long_call, 60)[1] == "formatted"
    stub = "def f(x: int) -> int:\n    ...\n\n\ndef g() -> None: ...\n"
    assert pep8.format_source(stub, 79, is_stub=True)[0] == "def f(x: int) -> int: ...\ndef g() -> None: ...\n"


# --- statistics and figure ---------------------------------------------------------------------------

def test_statistics_add_up_across_batches():
    config = FilterConfig()
    table = pep8.format_python(decided(config), 79)
    whole = filter_stats.summarize([filter_stats.batch_stats(table, config)])
    split = filter_stats.summarize([filter_stats.batch_stats(table.slice(0, 5), config),
                                    filter_stats.batch_stats(table.slice(5), config),
                                    filter_stats.batch_stats(table.slice(0, 0), config)])
    assert whole == split
    expected = {}
    for *_, reason in DOCUMENTS:
        expected[reason] = expected.get(reason, 0) + 1
    assert whole["files"] == {"input": 12, "kept": expected[None], "rejected": 12 - expected[None]}
    assert {r: v["files"] for r, v in whole["by_reason"].items()} == {
        r: expected.get(r, 0) for r in rules.REASONS}
    # table.py fails three rules (line length, minified, alphabet ratio); its reason is the first.
    assert {r: v["files"] for r, v in whole["by_rule"].items()} == {
        "language": 1, "avg_line_length": 1, "autogen": 3, "alpha_ratio": 2, "size": 1}
    assert whole["autogen_signals"]["name"]["files"] == 2 and whole["autogen_signals"]["minified"]["files"] == 1
    assert whole["pep8"]["formatted"]["files"] == 1 and whole["pep8"]["unparsable"]["files"] == 1
    assert whole["by_language"]["C++"]["kept_files"] == 1 and whole["by_language"]["C"]["kept_files"] == 1
    assert whole["bytes"]["input"] == sum(len(d[3].encode()) for d in DOCUMENTS)
    assert whole["bytes"]["kept_output"] != whole["bytes"]["kept"]  # formatting changed a file


def test_language_mix_png():
    png = language_mix_png({"Python": 3000, "C++": 1000})
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    assert language_mix_png({}).startswith(PNG_MAGIC)  # nothing kept still draws the paper's shares


# --- the stage on Ray ---------------------------------------------------------------------------------

class _CrawlOutput(StrictModel):
    """Stands for the crawl's config: the input here is written by the test, through the same runner."""
    documents: int = len(DOCUMENTS)


def write_input(root: str, tables: list[pa.Table]) -> str:
    uri = storage.join(root, "crawl")

    def body(run):
        for i, table in enumerate(tables):
            storage.write_table(table, run.path("files", f"part-{i}.parquet"))
            # its completion marker: the filter reads only repositories that have one
            storage.write_table(pa.table({"full_name": [f"test/part-{i}"], "selected": [True], "config_hash": ["t"]}),
                                run.path("repos", f"part-{i}.parquet"))
        return {"files": sum(t.num_rows for t in tables)}

    run_stage("crawl", _CrawlOutput(), uri, body)
    return uri


def check_outputs(out: str, table: pa.Table) -> tuple[pa.Table, pa.Table, dict]:
    kept = storage.read_table(storage.join(out, "kept"))
    rejected = storage.read_table(storage.join(out, "rejected"))
    assert kept.schema.equals(KEPT_SCHEMA) and rejected.schema.equals(REJECTED_SCHEMA)
    kept_ids, rejected_ids = kept.column("doc_id").to_pylist(), rejected.column("doc_id").to_pylist()
    assert sorted(kept_ids + rejected_ids) == sorted(table.column("doc_id").to_pylist())
    assert not set(kept_ids) & set(rejected_ids)
    stats = storage.read_json(storage.join(out, "stats.json"))
    assert stats["files"] == {"input": table.num_rows, "kept": kept.num_rows, "rejected": rejected.num_rows}
    assert storage.read_bytes(storage.join(out, "language_mix.png")).startswith(PNG_MAGIC)
    manifest = mf.read_manifest(out)
    assert manifest.status == "complete" and manifest.counts["kept_files"] == kept.num_rows
    return kept, rejected, stats


def test_stage_on_ray_local(ray_session, tmp_path):
    table = files_table()
    crawl = write_input(str(tmp_path), [table.slice(0, 7), table.slice(7)])
    out = str(tmp_path / "filter")
    run_stage("filter", FilterConfig(), out, filter_stage.body, inputs={"input": crawl})
    kept, rejected, stats = check_outputs(out, table)

    expected = {(repo, path): reason for repo, path, _, _, reason in DOCUMENTS}
    got = {(r["repo"], r["path"]): None for r in kept.to_pylist()}
    got.update({(r["repo"], r["path"]): r["reason"] for r in rejected.to_pylist()})
    assert got == expected
    by_key = {(r["repo"], r["path"]): r for r in kept.to_pylist()}
    assert by_key[("o/cpp", "include/add.h")]["language"] == "C++"
    assert by_key[("o/c", "include/add.h")]["language"] == "C"
    assert by_key[("o/py", "pkg/ugly.py")]["content"] == FORMATTED_PY
    assert by_key[("o/py", "pkg/legacy.py")]["content"] == PYTHON2
    assert stats["pep8"]["unparsable"]["files"] == 1
    # The formatter that wrote the kept Python files, in the stats and the manifest: the pinned ruff.
    assert stats["pep8_formatter"] == f"ruff {importlib.metadata.version('ruff')}"
    assert mf.read_manifest(out).counts["pep8_formatter"] == stats["pep8_formatter"]
    numbers = next(r for r in rejected.to_pylist() if r["path"] == "pkg/numbers.py")
    assert numbers["alpha_ratio"] == 0.0 and numbers["utf8_bytes"] == 2200 and numbers["language"] == "Python"

    # A rerun on a smaller input replaces the outputs: no part of the first run is left behind.
    smaller = table.slice(0, 4)
    crawl = write_input(str(tmp_path / "second"), [smaller])
    config = build_config(FilterConfig, {"format_python": False})
    run_stage("filter", config, out, filter_stage.body, inputs={"input": crawl})
    kept, _, stats = check_outputs(out, smaller)
    assert stats["pep8"]["formatted"]["files"] == 0 and stats["pep8_formatter"] is None
    assert UNFORMATTED_PY in kept.column("content").to_pylist()


def test_stage_on_ray_s3_with_nothing_kept(ray_session, s3_bucket):
    table = files_table([d for d in DOCUMENTS if d[4] is not None])
    crawl = write_input(s3_bucket + "/run", [table])
    out = s3_bucket + "/run/filter"
    run_stage("filter", FilterConfig(), out, filter_stage.body, inputs={"input": crawl})
    kept, rejected, stats = check_outputs(out, table)
    assert kept.num_rows == 0 and rejected.num_rows == table.num_rows
    assert pc.all(pc.is_valid(rejected.column("reason"))).as_py()
