"""End-to-end test of the dedup stage on the shared local Ray cluster: a small corpus made of this
repository's own source files, with exact copies, near copies, a benchmark solution and bad rows."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from dedup_corpus import HUMANEVAL_FILES, write_filter_output

from codemill import manifest as mf
from codemill import storage
from codemill.runner import stage_main


@pytest.fixture()
def filter_output(tmp_path):
    return write_filter_output(str(tmp_path / "filter"))


def test_dedup_stage_end_to_end(ray_session, filter_output, tmp_path):
    inp, table, expect = filter_output
    out = tmp_path / "dedup"
    argv = ["--input", str(inp), "--out", str(out), "--set", "docs_per_batch=7", "--set", "band_rows_per_partition=1000",
            "--set", f"decontaminate.paths={json.dumps(HUMANEVAL_FILES)}"]
    assert stage_main("dedup", argv) == 0

    dups = pq.read_table(str(out / "duplicates")).to_pylist()
    by_id = {d["doc_id"]: d for d in dups}
    for removed, keeper in expect["exact"].items():
        assert by_id[removed]["kind"] == "exact" and by_id[removed]["kept_doc_id"] == keeper
        assert by_id[removed]["similarity"] == 1.0
    for removed, keeper in expect["near"].items():
        assert by_id[removed]["kind"] == "near" and by_id[removed]["kept_doc_id"] == keeper
        assert 0.7 <= by_id[removed]["similarity"] <= 1.0  # estimated: a one-line edit may not show
    assert len(by_id) == len(dups), "a document is listed twice in duplicates/"
    for removed, task in expect["contamination"].items():
        assert by_id[removed]["kind"] == "contamination" and by_id[removed]["benchmark_task_id"] == task
    n_expected = sum(len(v) for v in expect.values())
    unexpected = [d for d in dups if not any(d["doc_id"] in v for v in expect.values())]
    assert not unexpected and len(dups) == n_expected

    kept = pq.read_table(str(out / "kept"))
    assert set(kept.column_names) == set(table.column_names)  # every input column, measurements included
    assert kept.num_rows == table.num_rows - n_expected
    assert not set(kept["doc_id"].to_pylist()) & set(by_id)
    assert None in kept["content"].to_pylist()  # the null-content row is kept, not lost

    stats = json.loads((out / "stats.json").read_text())
    assert stats["docs"] == table.num_rows and stats["kept"] == kept.num_rows
    assert stats["not_deduplicated"]["count"] == 1
    assert stats["removed_by_kind"]["exact"] == len(expect["exact"])
    assert stats["removed_by_kind"]["near"] == len(expect["near"])
    assert stats["removed_by_kind"]["contamination"] == 2
    python = stats["per_language"]["Python"]
    assert python["duplicate_rate"] == pytest.approx(n_expected / table.num_rows)
    assert (stats["lsh"]["bands"], stats["lsh"]["rows"]) == (25, 10) and stats["lsh"]["band_partitions"] >= 2

    manifest = mf.read_manifest(str(out))
    assert manifest.status == mf.STATUS_COMPLETE and manifest.counts["docs_kept"] == kept.num_rows
    assert stage_main("dedup", argv) == 0  # complete for this config and input: nothing to do
    assert mf.read_manifest(str(out)).timings == manifest.timings


def test_dedup_stage_on_s3(ray_session, s3_bucket):
    inp, table, expect = write_filter_output(f"{s3_bucket}/run/filter")
    out = f"{s3_bucket}/run/dedup"
    assert stage_main("dedup", ["--input", inp, "--out", out, "--set", "docs_per_batch=7"]) == 0
    dups = storage.read_table(storage.join(out, "duplicates"))
    # No decontamination configured here: the leaked file's copy (fewer stars) is just an exact duplicate.
    leak_copy = {r["doc_id"] for r in table.to_pylist() if r["repo"] == "x/leak-copy"}
    removed = set(expect["exact"]) | set(expect["near"]) | leak_copy
    assert set(dups.column("doc_id").to_pylist()) == removed
    kept = storage.read_table(storage.join(out, "kept"))
    assert kept.num_rows == table.num_rows - len(removed)
    assert storage.read_json(storage.join(out, "stats.json"))["kept"] == kept.num_rows
    assert mf.read_manifest(out).status == mf.STATUS_COMPLETE



def test_dedup_tasks_report_done_of_total_rate_and_eta_while_they_run(ray_session, caplog):
    import logging
    import time

    from codemill.dedup.stage import ray_map

    # time.sleep as the step: importable on the workers, and slow enough for a few progress intervals.
    with caplog.at_level(logging.INFO, logger="codemill.dedup"):
        assert ray_map(time.sleep, [(0.4,)] * 6, every_s=0.2) == [None] * 6
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dedup sleep: ")]
    assert any(" of 6 tasks (" in line and ", ETA " in line for line in lines[:-1]), lines
    assert lines[-1].startswith("dedup sleep: 6 of 6 tasks (100%), ") and ", done in " in lines[-1]
