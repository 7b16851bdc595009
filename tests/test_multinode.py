"""Multi-node, on this machine: a Ray cluster of two nodes (head on 127.0.0.1, a worker node on 127.0.0.2, each
its own raylet; see tests/multinode.py), S3 (moto) as the shared storage.

- a data stage (crawl, then filter, as a DAG of Ray jobs) runs its tasks on both nodes (Ray's task records);
- the train stage puts its 2 workers on different nodes (STRICT_SPREAD; gloo, ZeRO-2, fp32, checkpoints on S3);
- the worker node killed during training: the run waits for a node, continues from its latest checkpoint
  once the node is back, and its losses equal the uninterrupted run's;
- the worker node killed during the crawl: Ray retries the lost tasks on the head and the output equals an
  undisturbed run's.
"""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest
from multinode import TwoNodeCluster, start_cluster, stop_cluster

from codemill import manifest as mf
from codemill import storage
from codemill.stages import CRAWL_REPOS, FILTER_KEPT

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(s3_server):
    """Two nodes of one Ray cluster, apart from the session's shared head; this process is a driver of it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.get("RAY_ADDRESS")
    two = start_cluster(Path(os.environ["RAY_AUTH_TOKEN_PATH"]))
    try:
        os.environ["RAY_ADDRESS"] = two.head.address
        ray.init(address=two.head.address, log_to_driver=False)
        nodes = two.wait_both()
        assert len(set(nodes.values())) == 2
        yield two
    finally:
        try:
            ray.shutdown()
        finally:
            if saved is None:
                os.environ.pop("RAY_ADDRESS", None)
            else:
                os.environ["RAY_ADDRESS"] = saved
            stop_cluster(two)


@pytest.fixture()
def nodes(cluster) -> dict[str, str]:
    """Both nodes up (a test that killed the worker node may have left it down); IP -> node id."""
    return cluster.ensure_worker()


# -- a data stage ------------------------------------------------------------------------------------------

N_REPOS = 40

CODE = textwrap.dedent('''
    """A small module of real-looking code, long enough for the size rule."""
    import os


    def walk_tree(root):
        """Yield every file below root, sorted, skipping hidden folders."""
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                yield os.path.join(folder, name)
    ''') * 8


@pytest.fixture(scope="module")
def data_dag(tmp_path_factory) -> Path:
    """crawl -> filter over N_REPOS local repositories (a path every node of this machine can read)."""
    root = tmp_path_factory.mktemp("multinode-data")
    corpus = root / "corpus"
    for i in range(N_REPOS):
        pkg = corpus / f"repo{i:03d}"
        pkg.mkdir(parents=True)
        (pkg / "walk.py").write_text(CODE + f"\n# {i}\n")
        (pkg / "other.py").write_text(CODE.replace("walk_tree", f"walk_tree_{i}"))
    dag = root / "data.yaml"
    dag.write_text(textwrap.dedent(f"""
        name: multinode
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
          - name: filter
            stage: filter
            input: crawl
        """))
    return dag


def job_tasks(cluster: TwoNodeCluster, out: str, stage: str, name: str, expect: int | None = None) -> list:
    """Ray's task records of the stage's Ray job, by task name (task events reach the GCS within seconds)."""
    from ray.job_submission import JobSubmissionClient
    from ray.util.state import list_tasks

    from codemill.dag.state import read_state

    submission_id = read_state(out)["stages"][stage]["job_id"]
    job_id = JobSubmissionClient(cluster.dashboard_url).get_job_info(submission_id).job_id
    deadline = time.time() + 60
    while True:
        tasks = list_tasks(address=cluster.dashboard_url, filters=[("job_id", "=", job_id), ("name", "=", name)],
                           detail=True, limit=10_000, raise_on_missing_output=False)
        if expect is None or sum(t.state == "FINISHED" for t in tasks) >= expect or time.time() > deadline:
            return tasks
        time.sleep(1)


def kept_doc_ids(out: str) -> set[str]:
    ids: set[str] = set()
    for part in storage.list_files(storage.join(out, "filter", FILTER_KEPT), ".parquet"):
        ids.update(storage.read_table(part, columns=["doc_id"]).column("doc_id").to_pylist())
    return ids


@pytest.fixture(scope="module")
def data_run(cluster, data_dag, s3_server, tmp_path_factory):
    """The undisturbed run of the data DAG on both nodes; its output on S3."""
    import boto3

    from codemill.dag import run_dag

    boto3.client("s3").create_bucket(Bucket="multinode-data")
    cluster.ensure_worker()
    out = "s3://multinode-data/undisturbed"
    started = time.time()
    assert run_dag(str(data_dag), out, address=cluster.dashboard_url) == ["crawl", "filter"]
    print(f"undisturbed data DAG: {time.time() - started:.1f} s")
    return out


def test_a_data_stage_runs_its_tasks_on_both_nodes(cluster, nodes, data_run):
    crawl = mf.read_manifest(storage.join(data_run, "crawl"))
    assert crawl.status == mf.STATUS_COMPLETE and crawl.counts["repos_fetched_this_run"] == N_REPOS, crawl.counts
    tasks = job_tasks(cluster, data_run, "crawl", "_crawl_task", expect=N_REPOS)
    finished = [t for t in tasks if t.state == "FINISHED"]
    assert len(finished) == N_REPOS, [(t.state, t.node_id) for t in tasks]
    per_node = {nid: sum(t.node_id == nid for t in finished) for nid in {t.node_id for t in finished}}
    assert set(per_node) == set(nodes.values()), (per_node, nodes)
    assert len(storage.list_files(storage.join(data_run, "crawl", CRAWL_REPOS), ".parquet")) == N_REPOS
    assert len(kept_doc_ids(data_run)) == 2 * N_REPOS
