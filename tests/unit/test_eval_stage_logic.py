"""The eval stage's Ray-free parts: the registry's stage flags (generic, in codemill/runner.py), samples files
(sample ids of either kind, errors naming the line), resumable partial results, progress lines, the cgroup
hierarchy chosen from a mount table and a v2 parent prepared in a fake cgroupfs, the fresh-uid range in a user
namespace, and the shape of the eval package (Ray only in its wiring modules, no import cycle)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from codemill.eval import cgroups, sandbox
from codemill.eval.partial import PartialResults
from codemill.eval.progress import Progress, duration
from codemill.eval.samples import SamplesError, parse_samples
from codemill.runner import identity_hash, parsed_flags, stage_parser
from codemill.stages import STAGES, FlagSpec

EVAL = STAGES["eval"]
PACKAGE = Path(__file__).resolve().parents[2] / "codemill" / "eval"


# ------------------------------------------------------------------------------------------- stage flags


def test_eval_flags_come_from_the_registry():
    p = stage_parser(EVAL)
    args = p.parse_args(["--samples", "s.jsonl", "--out", "o", "--benchmark", "mtpb", "--mtpb-mode", "both",
                         "--unsafe-no-sandbox"])
    overrides, flags = parsed_flags(EVAL, args)
    assert overrides == ["benchmark=mtpb", "mtpb_mode=both"]
    assert flags["unsafe_no_sandbox"] is True and flags["samples"].endswith("/s.jsonl")
    assert "check_benchmark" not in flags and "endpoint" not in flags
    for argv in (["--out", "o"], ["--out", "o", "--samples", "a", "--endpoint", "u"],
                 ["--out", "o", "--check-benchmark", "--model", "m"], ["--out", "o", "--check-benchmark",
                                                                       "--benchmark", "rust"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)  # one source exactly; choices checked


def test_identity_is_the_config_alone_unless_a_flag_or_a_plain_path_adds_to_it():
    from codemill.config import config_hash
    from codemill.eval.config import EvalConfig

    config = EvalConfig()
    assert identity_hash(config, {}, {}) == config_hash(config)  # what the DAG runner computes
    with_flag = identity_hash(config, {"endpoint": "http://x"}, {})
    assert with_flag != config_hash(config) and with_flag == identity_hash(config, {"endpoint": "http://x"}, {})
    assert identity_hash(config, {}, {"model": "/exports/a"}) != identity_hash(config, {}, {"model": "/exports/b"})


def test_flag_specs_say_how_they_are_named():
    assert FlagSpec("check_benchmark", "x", switch=True).flag == "--check-benchmark"
    names = {f.name for f in EVAL.flags}
    assert {"endpoint", "samples", "check_benchmark", "benchmark", "mtpb_mode", "api_key_env", "unsafe_no_sandbox",
            "ignore_benchmark_check"} == names
    assert EVAL.body == "codemill.eval.stage:body" and EVAL.main is None and EVAL.required_group == "source"


# ------------------------------------------------------------------------------------------- samples


def test_sample_ids_may_be_integers_or_strings():
    text = "\n".join(json.dumps(x) for x in [
        {"task_id": "CPP/1", "completion": "a", "sample_id": "a"},
        {"task_id": "CPP/1", "completion": "b", "sample_id": 4},
        {"task_id": "CPP/1", "completion": "c"},
        {"task_id": "Go/1", "completion": "d"}])
    assert [(s.task_id, s.sample_id) for s in parse_samples(text)] == [("CPP/1", "a"), ("CPP/1", 4), ("CPP/1", 5),
                                                                       ("Go/1", 0)]


@pytest.mark.parametrize("line,message", [
    ('{"task_id": "CPP/1", "completion": "x", "sample_id": true}', "s.jsonl:2: sample_id must be an integer or a"),
    ('{"task_id": "CPP/1", "completion": "x", "sample_id": [1]}', "s.jsonl:2: sample_id must be"),
    ('{"task_id": "CPP/1", "completion": "x", "sample_id": 0}', "s.jsonl:2: sample 0 of CPP/1 appears twice (first on line 1)"),
    ('{"task_id": 12, "completion": "x"}', "s.jsonl:2: task_id must be a string"),
    ('{"task_id": "CPP/1", "completion": 5}', "s.jsonl:2: `completion`"),
    ('["CPP/1", "x"]', "s.jsonl:2: expected an object"),
    ("{not json", "s.jsonl:2: not JSON"),
    ('{"task_id": "CPP/999", "completion": "x"}', "s.jsonl:2: task 'CPP/999' is not in the benchmark's data"),
])
def test_a_bad_samples_line_is_named(line, message):
    first = '{"task_id": "CPP/1", "completion": "x", "sample_id": 0}'
    with pytest.raises(SamplesError) as err:
        parse_samples(first + "\n" + line + "\n", "s.jsonl", known_tasks={"CPP/1"})
    assert str(err.value).startswith(message), str(err.value)


def test_an_empty_samples_file_is_refused():
    with pytest.raises(SamplesError, match="no samples"):
        parse_samples("\n\n", "empty.jsonl")


# ------------------------------------------------------------------------------------------- resume and progress


def test_partial_results_resume_only_the_same_identity(tmp_path):
    folder = str(tmp_path / "partial" / "score")
    store = PartialResults(folder, "id-1", flush_every_s=0)
    assert store.load() == {}
    store.add([{"key": "a", "outcome": "passed"}, {"key": "b", "outcome": "infrastructure_error"}])
    store.add([{"key": "c", "outcome": "wrong_answer"}])
    (tmp_path / "partial" / "score" / "rows-cut.jsonl").write_text('{"key": "d", "outcome": "passed"}\n{"key": "e", "out')
    again = PartialResults(folder, "id-1").load()
    assert sorted(again) == ["a", "c", "d"]  # not the lost one, not the line cut short
    assert PartialResults(folder, "id-2").load() == {}  # another config: started over
    assert sorted(p.name for p in (tmp_path / "partial" / "score").iterdir()) == ["_identity.json"]


def test_progress_lines_say_done_rate_and_time_left(caplog):
    now = [0.0]
    progress = Progress("programs", 100, every_s=5, clock=lambda: now[0])
    with caplog.at_level("INFO", logger="codemill.eval"):
        now[0] = 1.0
        progress.advance(10)          # too soon: no line
        now[0] = 10.0
        progress.advance(10)
        now[0] = 50.0
        progress.advance(80)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("codemill.eval")]
    assert lines == ["eval: programs: 20/100 (20.0%), 2.00/s, ETA 40s (elapsed 10s)",
                     "eval: programs: 100/100 (100.0%), 2.00/s, done (elapsed 50s)"]
    assert duration(3725) == "1h02m" and duration(75) == "1m15s"


# ------------------------------------------------------------------------------------------- cgroups and uids

HYBRID = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw"""


def test_the_hierarchy_is_chosen_from_the_mount_table(tmp_path):
    backend, _ = cgroups.find_backend(HYBRID, env={})
    assert backend == cgroups.Backend(1, Path("/sys/fs/cgroup/memory/codemill-eval"),
                                      Path("/sys/fs/cgroup/pids/codemill-eval"))
    root = tmp_path / "v2"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    v2 = f"30 1 0:26 / {root} rw - cgroup2 cgroup2 rw"
    assert cgroups.find_backend(v2, env={})[0] == cgroups.Backend(2, root / "codemill-eval", root / "codemill-eval")
    delegated = cgroups.find_backend(v2, env={cgroups.PARENT_ENV: str(root / "svc")})[0]
    assert delegated.memory_parent == root / "svc"
    (root / "cgroup.controllers").write_text("cpu io\n")  # no memory controller here: nothing to use
    none, why = cgroups.find_backend(v2, env={})
    assert none is None and "memory and pids" in why


def test_a_v2_execution_cgroup_is_made_with_its_limits(tmp_path):
    root = tmp_path / "fs"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("")
    backend = cgroups.Backend(2, root / "codemill-eval", root / "codemill-eval")

    # A fake cgroupfs: a new folder gets the files the kernel would create.
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        real_mkdir(self, *a, **k)
        for name in ("cgroup.procs", "cgroup.subtree_control", "memory.max", "memory.swap.max", "pids.max",
                     "memory.events", "memory.peak"):
            (self / name).write_text("")

    Path.mkdir = mkdir
    try:
        cgroups.prepare(backend)
        assert (root / "cgroup.subtree_control").read_text() == "+memory +pids"
        assert (root / "codemill-eval" / "cgroup.subtree_control").read_text() == "+memory +pids"
        cg = cgroups.ExecutionCgroup(backend, 512 << 20, 64)
    finally:
        Path.mkdir = real_mkdir
    assert (cg.memory / "memory.max").read_text() == str(512 << 20)
    assert (cg.memory / "memory.swap.max").read_text() == "0"
    assert (cg.memory / "pids.max").read_text() == "64"
    assert cg.procs_files == [str(cg.memory / "cgroup.procs")]
    (cg.memory / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n")
    (cg.memory / "memory.peak").write_text("123456\n")
    assert cg.oom_kills() == 2 and cg.peak_bytes() == 123456


def test_fresh_uids_come_from_what_the_user_namespace_maps():
    assert sandbox.uid_range("         0          0 4294967295\n") == sandbox.UID_RANGE
    assert sandbox.uid_range("         0  833617920      65536\n") == (sandbox.SMALL_NAMESPACE_FIRST_UID, 65536)
    with pytest.raises(RuntimeError, match="no uid range"):
        sandbox.uid_range("0 1000 1\n")


# ------------------------------------------------------------------------------------------- the package's shape

WIRING = {"stage.py", "fanout.py", "generation.py", "__main__.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_only_the_wiring_imports_ray():
    offenders = [p.name for p in PACKAGE.rglob("*.py") if p.name not in WIRING
                 and any(m == "ray" or m.startswith("ray.") or m == "codemill.raysupport" for m in _imports(p))]
    assert offenders == []


def test_no_import_cycle_between_eval_modules():
    modules = {f"codemill.eval.{p.stem}" if p.parent == PACKAGE else f"codemill.eval.harness.{p.stem}": p
               for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in seen:
            return
        stack.append(m)
        for n in graph[m]:
            visit(n)
        stack.pop()
        seen.add(m)

    for m in graph:
        visit(m)


def test_the_check_stops_before_executing_when_a_toolchain_is_too_old(tmp_path):
    from codemill.eval import benchmark_check as bc
    from codemill.eval.benchmark import Environment
    from codemill.eval.config import EvalConfig
    from codemill.eval.humaneval_x import HumanEvalX
    from codemill.eval.stage import check
    from codemill.runner import StageRun

    versions = {"python": "Python 3.10.12", "g++": "g++ 11.4.0", "javac": "javac 11.0.20",
                "java": 'openjdk version "11.0.20" 2023-07-18', "node": "v12.22.9", "go": "go version go1.18.1",
                "bwrap": "bubblewrap 0.6.1"}
    env = Environment(problems={}, fingerprint="fp", toolchains=versions, dataset_sha256="d", sandbox={})
    run = StageRun("eval", EvalConfig(), str(tmp_path))
    with pytest.raises(bc.ToolchainTooOld) as err:
        check(run, HumanEvalX(), env, ["JavaScript/39"], "results.jsonl")
    message = str(err.value)
    assert "node 12.22.9 is older than 16.6" in message and "java 11.0.20 is older than 16" in message
    assert not (tmp_path / "results.jsonl").exists()
