"""The demo DAG (`dags/local.yaml`) end to end on a real Ray head, then the reruns a user makes: a changed
crawl config reruns every stage below it, a changed tokenize config reruns tokenize and the stages below it
only. Every stage's counts must add up on its real output. The reruns go as far as tokenize: train, whose input
that is, is decided stale by the runner's own rule without spending a minute running it again (and the stages
below train read its output, so they follow it as filter, dedup and tokenize follow the crawl)."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow.compute as pc

from codemill import manifest as mf
from codemill import storage
from codemill.dag import decide, load_dag, plan, run_dag, topological_order

REPO = Path(__file__).resolve().parents[2]
DAG = str(REPO / "dags" / "local.yaml")
# The demo, shrunk to CI's two cores: fewer repositories, fewer training steps.
SMALL = {"crawl": ["max_repos=12"], "train": ["steps=4", "checkpoint_every=2", "eval_every=2", "log_every=1"]}
ALL = [st.name for st in topological_order(load_dag(DAG).stages)]
DATA_STAGES = ["crawl", "filter", "dedup", "tokenize", "train"]
RERUN_UNTIL = "tokenize"  # the reruns stop here; the stages below are decided stale, not run
RERUN = DATA_STAGES[:DATA_STAGES.index(RERUN_UNTIL) + 1]


def stats(out: str, stage: str) -> dict:
    return storage.read_json(storage.join(out, stage, "stats.json"))


def check_counts(out: str, trained: bool = True) -> None:
    """items in = items kept + items dropped, per reason, with nothing counted twice, at every stage, and
    each stage's input equal to the previous stage's output."""
    from codemill.crawl.stats import check_counts as crawl_problems

    crawl = stats(out, "crawl")
    assert crawl_problems(crawl) == []
    crawled_files = storage.read_table(storage.join(out, "crawl", "files"), columns=["doc_id"])

    filt = stats(out, "filter")
    assert filt["files"]["input"] == crawled_files.num_rows
    assert filt["files"]["input"] == filt["files"]["kept"] + filt["files"]["rejected"]
    assert sum(v["files"] for v in filt["by_reason"].values()) == filt["files"]["rejected"]
    kept = storage.read_table(storage.join(out, "filter", "kept"), columns=["doc_id"])
    rejected = storage.read_table(storage.join(out, "filter", "rejected"), columns=["doc_id"])
    assert kept.num_rows == filt["files"]["kept"] and rejected.num_rows == filt["files"]["rejected"]

    dedup = stats(out, "dedup")
    duplicates = storage.read_table(storage.join(out, "dedup", "duplicates"), columns=["doc_id", "kind"])
    assert dedup["docs"] == kept.num_rows
    assert pc.count_distinct(duplicates["doc_id"]).as_py() == duplicates.num_rows, "a document removed twice"
    assert sum(dedup["removed_by_kind"].values()) == duplicates.num_rows
    assert dedup["kept"] + duplicates.num_rows == dedup["docs"]
    dedup_kept = storage.read_table(storage.join(out, "dedup", "kept"), columns=["doc_id"])
    assert dedup_kept.num_rows == dedup["kept"]

    tok = stats(out, "tokenize")
    assert tok["documents"]["input"] == dedup_kept.num_rows
    assert tok["documents"]["input"] == tok["documents"]["tokenized"] + tok["documents"]["rejected"]
    assert sum(tok["rejected"].values()) == tok["documents"]["rejected"]
    assert sum(s["documents"] for s in tok["splits"].values()) == tok["documents"]["tokenized"]

    if not trained:
        return
    train = stats(out, "train")
    for key in ("first_loss", "final_loss"):
        assert math.isfinite(train[key]) and 0 < train[key] < 20, (key, train[key])
    assert train["steps"] == 4


def same_run(ran: list[str], expected: list[str]) -> bool:
    """Stages after train (eval, the serve check) run in parallel and may finish in either order."""
    linear = [s for s in expected if s in DATA_STAGES]
    return sorted(ran) == sorted(expected) and [s for s in ran if s in DATA_STAGES] == linear


def ran_and_skipped(out: str, before: dict[str, float]) -> list[str]:
    """The stages whose manifest is newer than `before` (those that ran)."""
    return [s for s in before if mf.read_manifest(storage.join(out, s)).timings["finished_at"] > before[s]]


def finished_at(out: str) -> dict[str, float]:
    return {s: mf.read_manifest(storage.join(out, s)).timings["finished_at"] for s in ALL}


def train_decision(out: str, overrides: dict) -> tuple[bool, str]:
    """What the runner would decide, now, for train (the stage that reads tokenize's output)."""
    planned = {ps.name: ps for ps in plan(load_dag(DAG), Path(DAG), out, overrides)}
    return decide(planned["train"])


def test_demo_dag_runs_then_reruns_exactly_what_changed(tmp_path, ray_head):
    out = str(tmp_path / "demo")
    assert same_run(run_dag(DAG, out, address=ray_head.dashboard_url, overrides=SMALL), ALL)
    check_counts(out)
    repos = storage.read_table(storage.join(out, "crawl", "repos"), columns=["full_name"])
    assert repos.num_rows == 12

    # Nothing changed: nothing runs.
    assert run_dag(DAG, out, address=ray_head.dashboard_url, overrides=SMALL) == []

    # The reproduction: fewer repositories. Every stage below the crawl must run again: the data stages
    # are run (to tokenize) and checked; train, which reads tokenize's new output, is decided stale.
    before = finished_at(out)
    fewer = {**SMALL, "crawl": ["max_repos=5"]}
    assert run_dag(DAG, out, address=ray_head.dashboard_url, overrides=fewer, until=RERUN_UNTIL) == RERUN
    assert sorted(ran_and_skipped(out, before)) == sorted(RERUN)
    for folder in ("repos", "files"):
        names = storage.read_table(storage.join(out, "crawl", folder), columns=["repo" if folder == "files"
                                                                                 else "full_name"])
        assert len(set(names.column(0).to_pylist())) <= 5
    assert storage.read_table(storage.join(out, "crawl", "repos")).num_rows == 5
    assert mf.read_manifest(storage.join(out, "crawl")).config["max_repos"] == 5
    check_counts(out, trained=False)
    assert train_decision(out, fewer) == (True, "input changed (data)"), train_decision(out, fewer)

    # A tokenize change: the stages above it are skipped, tokenize runs (and train would: decided stale as above).
    before = finished_at(out)
    reseeded = {**fewer, "tokenize": ["seed=7"]}
    ran = run_dag(DAG, out, address=ray_head.dashboard_url, overrides=reseeded, until=RERUN_UNTIL)
    assert ran == ["tokenize"]
    assert sorted(ran_and_skipped(out, before)) == sorted(ran)
    check_counts(out, trained=False)
    assert mf.read_manifest(storage.join(out, "tokenize")).config["seed"] == 7
    assert train_decision(out, reseeded) == (True, "input changed (data)"), train_decision(out, reseeded)
