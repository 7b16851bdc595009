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
import threading
import time
from pathlib import Path

import pytest
from code_corpus import make_corpus
from multinode import HEAD_IP, WORKER_IP, TwoNodeCluster, session_processes, start_cluster, stop_cluster

from codemill import manifest as mf
from codemill import storage
from codemill.stages import CRAWL_REPOS, FILTER_KEPT

# Logical CPUs of each node: one node could hold both workers of the training run, so only STRICT_SPREAD
# puts them on different nodes.
CPUS_PER_NODE = 2


@pytest.fixture(scope="module")
def cluster(s3_server):
    """Two nodes of one Ray cluster, apart from the session's shared head; this process is a driver of it."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    saved = os.environ.get("RAY_ADDRESS")
    two = start_cluster(Path(os.environ["RAY_AUTH_TOKEN_PATH"]), cpus_per_node=CPUS_PER_NODE)
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


def test_the_cluster_is_two_raylets_at_two_addresses(cluster, nodes):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    assert set(nodes) == {HEAD_IP, WORKER_IP} and len(set(nodes.values())) == 2
    # One raylet in each node's own session (process group): killing one group kills one node.
    for process in (cluster.head.process, cluster.worker.process):
        assert list(session_processes(process.pid).values()).count("raylet") == 1

    @ray.remote(num_cpus=0)
    def where() -> tuple[str, str]:
        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    for ip, node_id in nodes.items():
        placed = where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
        assert ray.get(placed.remote(), timeout=120) == (node_id, ip)


# -- a data stage ------------------------------------------------------------------------------------------

N_REPOS = 40


@pytest.fixture(scope="module")
def data_dag(tmp_path_factory) -> Path:
    """crawl -> filter over N_REPOS local repositories (a path every node of this machine can read)."""
    root = tmp_path_factory.mktemp("multinode-data")
    corpus = root / "corpus"
    make_corpus(corpus, N_REPOS, second_module=True)
    dag = root / "data.yaml"
    dag.write_text(textwrap.dedent(f"""
        name: multinode
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
              # A node's every CPU per task: a busy head sends the next task to the worker node (with
              # tasks of 1 CPU, Ray's hybrid scheduling keeps nearly all of them on the driver's node).
              task_num_cpus: {float(CPUS_PER_NODE)}
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
    print(f"crawl tasks per node: {per_node}")
    assert set(per_node) == set(nodes.values()), (per_node, nodes)
    assert len(storage.list_files(storage.join(data_run, "crawl", CRAWL_REPOS), ".parquet")) == N_REPOS
    assert len(kept_doc_ids(data_run)) == 2 * N_REPOS


# -- the train stage ---------------------------------------------------------------------------------------

STEPS = 12
CHECKPOINT_EVERY = 4
TRAIN_SETTINGS = {
    "model.preset": "tiny", "model.seq_length": 64, "model.dropout": 0.1,
    "scaling.num_workers": 2, "scaling.use_gpu": False, "scaling.cpus_per_worker": 1,
    "scaling.placement_strategy": "STRICT_SPREAD", "scaling.resource_wait_s": 60,
    "deepspeed.precision": "fp32", "deepspeed.zero_stage": 2,
    "steps": STEPS, "global_batch_size": 8, "micro_batch_size": 2,
    "optimizer.lr_max": 3e-3, "optimizer.lr_min": 3e-4, "optimizer.warmup_steps": 2, "optimizer.decay_steps": STEPS,
    "log_every": 2, "eval_every": 6, "eval_batches": 2, "checkpoint_every": CHECKPOINT_EVERY,
    "run.max_failures": 6,
}


@pytest.fixture(scope="module")
def train_bucket(s3_server) -> str:
    import boto3

    boto3.client("s3").create_bucket(Bucket="multinode-train")
    return "s3://multinode-train"


@pytest.fixture(scope="module")
def shards(train_bucket) -> str:
    """Tokenized shards on S3, written by the tokenize stage's own writer (every node reads them there)."""
    from codemill.tokenize.pack import write_shards_from_texts

    python = [("def add(a, b):\n    return a + b\n\n\n" * 12) + f"print(add({i}, {i + 1}))\n" for i in range(30)]
    go = [("func add(a int, b int) int {\n\treturn a + b\n}\n\n" * 12) + f"// {i}\n" for i in range(30)]
    out = f"{train_bucket}/tokenize"
    write_shards_from_texts({"Python": python, "Go": go}, out, seq_len=65, validation_fraction=0.1)
    mf.write_manifest(out, mf.Manifest(stage="tokenize", status=mf.STATUS_COMPLETE, config_hash="test", config={}))
    return out


def run_train(shards: str, out: str) -> int:
    from codemill.runner import stage_main

    argv = ["--input", shards, "--out", out]
    for key, value in {**TRAIN_SETTINGS, "run.storage_path": f"{out}-checkpoints"}.items():
        argv += ["--set", f"{key}={value}"]
    return stage_main("train", argv)


def train_records(out: str) -> dict[int, dict]:
    from codemill.train.metrics import METRICS_FILE, read_records

    return {r["step"]: r for r in read_records(storage.join(out, METRICS_FILE))}


def train_workers() -> dict[str, object]:
    """Ray Train's worker actors this driver has started, alive or dead: actor id -> record."""
    import ray
    from ray.util.state import list_actors

    job = ray.get_runtime_context().get_job_id()
    return {a.actor_id: a for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"), ("job_id", "=", job)],
                                                detail=True, limit=10_000, raise_on_missing_output=False)}


def checkpoint_steps(out: str) -> set[int]:
    return {storage.read_json(p)["step"] for p in storage.list_files(f"{out}-checkpoints", "train_state.json")}


@pytest.fixture(scope="module")
def train_run(cluster, shards, train_bucket):
    """The uninterrupted run on both nodes; its output and the Ray Train worker actors it started."""
    cluster.ensure_worker()
    before = set(train_workers())
    out = f"{train_bucket}/uninterrupted"
    started = time.time()
    assert run_train(shards, out) == 0
    print(f"uninterrupted train run: {time.time() - started:.1f} s")
    workers = {k: v for k, v in train_workers().items() if k not in before}
    return out, workers


def test_b_train_workers_run_on_different_nodes(cluster, nodes, train_run):
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group

    # A packing placement of the same 2 bundles fits on one node of this cluster: different nodes for the
    # training workers are STRICT_SPREAD's doing.
    pg = placement_group([{"CPU": 1}] * 2, strategy="PACK")
    try:
        ray.get(pg.ready(), timeout=60)
        assert len(set(placement_group_table(pg)["bundles_to_node_id"].values())) == 1
    finally:
        remove_placement_group(pg)
    out, workers = train_run
    placed = {actor: w.node_id for actor, w in workers.items()}
    assert len(placed) == 2 and sorted(placed.values()) == sorted(nodes.values()), (placed, nodes)
    records = train_records(out)
    assert sorted(records) == list(range(1, STEPS + 1))
    assert all(r["resumes"] == 0 for r in records.values())
    assert records[STEPS]["loss"] < records[1]["loss"] / 2, (records[1]["loss"], records[STEPS]["loss"])
    # Both ranks' parts of each checkpoint (ZeRO-2 partitions its optimizer state) are on S3.
    assert {CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY, STEPS} >= checkpoint_steps(out) >= {STEPS}
    ckpt = max(storage.list_files(f"{out}-checkpoints", "train_state.json"),
               key=lambda p: storage.read_json(p)["step"]).rsplit("/", 1)[0]
    parts = [p for p in storage.list_files(ckpt) if "optim_states" in p]
    assert len(parts) == 2, parts
    assert mf.read_manifest(out).counts["steps"] == STEPS


# -- faults ------------------------------------------------------------------------------------------------


NODE_FAILURE_TIMEOUT_S = 300


class NodeFailure(threading.Thread):
    """In the background: once `due()` says so, SIGKILL the worker node, wait until the GCS has marked it dead,
    keep it down `down_s` seconds, then (if `restart`) start it again."""

    def __init__(self, cluster: TwoNodeCluster, due, down_s: float = 5.0, restart: bool = True,
                 timeout_s: float = 300):
        super().__init__(daemon=True)
        self.cluster, self.due, self.down_s, self.restart, self.timeout_s = cluster, due, down_s, restart, timeout_s
        self.old_node: str | None = None
        self.new_node: str | None = None
        self.killed_at = self.back_at = 0.0
        self.error: BaseException | None = None
        self.cancelled = threading.Event()

    def __enter__(self) -> NodeFailure:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        """The test is over (or failed): no kill after this; a kill or restart under way is waited for."""
        self.cancelled.set()
        self.join(NODE_FAILURE_TIMEOUT_S)

    def run(self) -> None:
        try:
            deadline = time.time() + self.timeout_s
            while not self.due():
                if self.cancelled.is_set():
                    return
                if time.time() > deadline:
                    raise TimeoutError("the moment to kill the worker node never came")
                time.sleep(0.3)
            self.killed_at = time.time()
            self.old_node = self.cluster.fail_worker()
            if self.restart:
                time.sleep(self.down_s)
                self.cluster.worker.start()
                self.new_node = self.cluster.wait_both()[WORKER_IP]
                self.back_at = time.time()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def result(self) -> NodeFailure:
        self.join(NODE_FAILURE_TIMEOUT_S)
        assert not self.is_alive(), "the node failure thread did not finish"
        if self.error is not None:
            raise self.error
        assert self.killed_at, "the worker node was not killed"
        return self


def test_c_worker_node_killed_during_training_resumes_from_the_checkpoint(cluster, nodes, shards, train_bucket,
                                                                           train_run):
    reference = train_records(train_run[0])
    out = f"{train_bucket}/node-killed"

    def after_the_first_checkpoint() -> bool:
        try:
            return max(train_records(out), default=0) >= CHECKPOINT_EVERY + 2
        except (FileNotFoundError, OSError):
            return False

    before = set(train_workers())
    started = time.time()
    with NodeFailure(cluster, after_the_first_checkpoint) as failure:
        assert run_train(shards, out) == 0
        failure.result()
    print(f"train run with the worker node killed: {time.time() - started:.1f} s "
          f"(killed at +{failure.killed_at - started:.1f} s, back at +{failure.back_at - started:.1f} s)")
    assert failure.old_node == nodes[WORKER_IP] and failure.new_node not in (None, failure.old_node)

    records = train_records(out)
    assert sorted(records) == list(range(1, STEPS + 1))
    resumed_from = max(s for s, r in records.items() if r["resumes"] == 0)
    # The first attempt's steps up to a checkpoint, then the second attempt's from that checkpoint on.
    assert resumed_from in (CHECKPOINT_EVERY, 2 * CHECKPOINT_EVERY), records
    assert [records[s]["resumes"] for s in range(1, STEPS + 1)] == [0] * resumed_from + [1] * (STEPS - resumed_from)
    for step in range(1, STEPS + 1):
        assert records[step]["loss"] == pytest.approx(reference[step]["loss"], rel=1e-6, abs=1e-7), step
    # Two worker groups: the first on the old worker node and the head, the second on the head and the node
    # that came back (STRICT_SPREAD: it could not start before).
    workers = [w for k, w in train_workers().items() if k not in before]
    used = sorted(w.node_id for w in workers)
    head = nodes[HEAD_IP]
    assert len(workers) >= 4 and failure.old_node in used and failure.new_node in used, (used, failure.__dict__)
    assert used.count(head) == len(workers) // 2, used
    assert mf.read_manifest(out).counts["steps"] == STEPS


def test_d_worker_node_killed_during_the_crawl_is_retried_with_the_same_output(cluster, nodes, data_dag, data_run):
    from ray.util.state import list_tasks

    from codemill.dag import run_dag

    out = "s3://multinode-data/node-killed"
    worker_node = nodes[WORKER_IP]

    def crawl_task_running_on_the_worker_node() -> bool:
        tasks = list_tasks(address=cluster.dashboard_url,
                           filters=[("name", "=", "_crawl_task"), ("state", "=", "RUNNING"),
                                    ("node_id", "=", worker_node)], limit=100, raise_on_missing_output=False)
        return bool(tasks)

    # The node stays down: Ray retries the lost tasks on the head, which finishes the stage alone.
    started = time.time()
    with NodeFailure(cluster, crawl_task_running_on_the_worker_node, restart=False, timeout_s=240) as failure:
        assert run_dag(str(data_dag), out, address=cluster.dashboard_url) == ["crawl", "filter"]
        failure.result()
    print(f"data DAG with the worker node killed: {time.time() - started:.1f} s "
          f"(killed at +{failure.killed_at - started:.1f} s)")

    crawl = mf.read_manifest(storage.join(out, "crawl"))
    assert crawl.status == mf.STATUS_COMPLETE, crawl.counts
    assert crawl.counts["repos_failed"] == 0 and crawl.counts["repos_fetched_this_run"] == N_REPOS, crawl.counts
    # Ray's records: attempts lost with the node, each retried (a new attempt) and finished on the head.
    tasks = job_tasks(cluster, out, "crawl", "_crawl_task", expect=N_REPOS)
    lost = [t for t in tasks if t.node_id == worker_node and t.state != "FINISHED"]
    assert lost, [(t.task_id, t.attempt_number, t.state, t.node_id) for t in tasks]
    for t in lost:
        retries = [r for r in tasks if r.task_id == t.task_id and r.attempt_number > t.attempt_number]
        assert any(r.state == "FINISHED" and r.node_id == nodes[HEAD_IP] for r in retries), (t, retries)
    finished = {t.task_id for t in tasks if t.state == "FINISHED"}
    assert len(finished) == N_REPOS
    assert kept_doc_ids(out) == kept_doc_ids(data_run)
    assert mf.read_manifest(storage.join(out, "filter")).counts == mf.read_manifest(
        storage.join(data_run, "filter")).counts
