"""Execute one sample: post-process, build its program, compile and run it in the sandbox, class the outcome.

Ray-free: the stage calls `execute_sample` inside Ray tasks; tests and the sequential baseline call it
directly. A run that times out is run once more (the compiled program is reused) before it counts. A run
passes only on positive evidence (codemill.eval.proof): exit status 0, the proof line for this run's key,
and no assertion failure anywhere in its output.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from codemill.eval import languages as L
from codemill.eval import proof
from codemill.eval.languages import Program, Step, Toolchain
from codemill.eval.sandbox import Limits, SandboxResult, run_sandboxed
from codemill.eval.toolchain import go_cache_dir, link_tree, work_root
from codemill.humaneval import Problem

STDERR_TAIL = 1000
GO_WARMUP_PACKAGES = {"math": "math.Abs", "strings": "strings.Contains", "fmt": "fmt.Sprint",
                      "strconv": "strconv.Itoa", "time": "time.Now", "bytes": "bytes.Equal",
                      "regexp": "regexp.MustCompile", "sort": "sort.Ints", "math/rand": "rand.Intn",
                      "crypto/md5": "md5.Sum", "unicode": "unicode.IsUpper", "errors": "errors.New",
                      "container/heap": "heap.Init", "math/big": "big.NewInt", "reflect": "reflect.TypeOf",
                      # what the harness's TestMain imports (harness/cm_harness_test.go)
                      "crypto/hmac": "hmac.New", "crypto/sha256": "sha256.New", "encoding/hex": "hex.EncodeToString",
                      "io": "io.ReadAll", "os": "os.NewFile"}


@dataclass(frozen=True)
class ExecLimits:
    """Limits of the compile steps and of the test run (whose wall limit the caller sets per task)."""

    run: Limits = field(default_factory=lambda: Limits(wall_s=10.0))
    compile: Limits = field(default_factory=lambda: Limits(wall_s=60.0, memory_bytes=4 << 30, processes=512,
                                                           file_bytes=256 << 20, open_files=1024,
                                                           tmp_bytes=256 << 20))
    retry_timeouts: bool = True


@dataclass
class Execution:
    outcome: str
    passed: bool
    seconds: float = 0.0             # wall seconds of the test run (the last one when it was retried)
    compile_seconds: float = 0.0
    returncode: int | None = None
    stderr: str = ""                 # tail
    retried: bool = False            # timed out once and was run again
    leftover_killed: int = 0
    assertions: int | None = None    # the count the proof of a pass carried
    memory_peak_bytes: int | None = None

    def to_json(self) -> dict:
        return asdict(self)


def _subst(text: str, work: str) -> str:
    return text.replace("{work}", work)


# How a finished test run (neither over a limit nor leaving processes behind) is judged: (outcome, a note for
# its stderr tail, the assertions its proof counted). The default is HumanEval-X's (humaneval_verdict).
Verdict = Callable[[Step, SandboxResult, bytes], tuple[str, str, int | None]]


@dataclass(frozen=True)
class Judge:
    verdict: Verdict
    markers: tuple[bytes, ...] = ()           # looked for anywhere in the run's output
    capture: re.Pattern[bytes] = proof.PROOF_LINE


def _run_step(step: Step, work: str, limits: Limits, program: Program, unsafe: bool,
              judge: Judge | None = None, key: bytes | None = None) -> SandboxResult:
    argv = [_subst(a, work) for a in step.argv]
    env = {k: _subst(v, work) for k, v in step.env.items()}
    run = step.kind == "run"  # the test run may write only to its private, size-limited /tmp and /dev/shm
    return run_sandboxed(argv, work, limits, env, ro_binds=program.ro_binds, unsafe=unsafe,
                         stdin_data=step.stdin.encode() if step.stdin is not None else None, secret=key,
                         detect_leftovers=run, writable=not run, scan=judge.markers if judge else (),
                         capture=judge.capture if judge else None)


def _tail(res: SandboxResult) -> str:
    text = res.stderr if res.stderr.strip() else res.stdout
    return text[-STDERR_TAIL:]


def run_program(program: Program, language: str, limits: ExecLimits, unsafe: bool = False,
                tc: Toolchain | None = None, judge: Judge | None = None) -> Execution:
    """Compile and run `program` in a fresh work directory; the outcome of its first failing step. Each run
    gets a fresh key for its proof (codemill.eval.proof); `judge` decides what a finished run means."""
    adapter = L.adapter(language)
    judge = judge or humaneval_judge(adapter)
    work = tempfile.mkdtemp(prefix="s-", dir=work_root())
    try:
        for name, text in program.files.items():
            Path(work, name).write_text(text, encoding="utf-8")
        if program.needs_go_cache:
            cache = ensure_go_cache(tc or Toolchain(), limits, unsafe)
            if cache is not None:
                link_tree(cache, Path(work) / ".gocache")
        compile_seconds = 0.0
        leftovers = 0
        for step in program.steps:
            if step.kind != "compile":
                continue
            res = _run_step(step, work, limits.compile, program, unsafe)
            compile_seconds += res.seconds
            leftovers += res.leftover_killed
            if res.timed_out or res.returncode != 0:
                note = f"compilation exceeded {limits.compile.wall_s:g} s\n" if res.timed_out else ""
                return Execution(L.COMPILE_ERROR, False, 0.0, compile_seconds, res.returncode, note + _tail(res),
                                 leftover_killed=leftovers)
        for name in program.remove_before_run:
            Path(work, name).unlink(missing_ok=True)  # the test run cannot read the test's source
        run_steps = [s for s in program.steps if s.kind == "run"]
        execution = Execution(L.PASSED, True, 0.0, compile_seconds)
        for step in run_steps:
            key = proof.new_key()
            res = _run_step(step, work, limits.run, program, unsafe, judge, key)
            retried = False
            if _is_timeout(res, limits.run) and limits.retry_timeouts:
                retried = True
                key = proof.new_key()
                res = _run_step(step, work, limits.run, program, unsafe, judge, key)
            leftovers += res.leftover_killed
            execution = _outcome(judge, step, res, limits.run, compile_seconds, retried, leftovers, key)
            if not execution.passed:
                break
        return execution
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _is_timeout(res: SandboxResult, limits: Limits) -> bool:
    # The wall limit, or the CPU-time limit (SIGXCPU, or SIGKILL at the hard limit) of a busy loop.
    return res.timed_out or res.signal in (24,) or (res.signal == 9 and res.seconds >= limits.cpu_seconds())


def _outcome(judge: Judge, step: Step, res: SandboxResult, limits: Limits, compile_seconds: float,
             retried: bool, leftovers: int, key: bytes) -> Execution:
    base = dict(seconds=res.seconds, compile_seconds=compile_seconds, returncode=res.returncode,
                stderr=_tail(res), retried=retried, leftover_killed=leftovers, memory_peak_bytes=res.memory_peak_bytes)

    def failed(outcome: str, note: str = "") -> Execution:
        return Execution(outcome, False, **{**base, "stderr": note + base["stderr"]})

    if res.stdout_bytes >= limits.file_bytes or res.stderr_bytes >= limits.file_bytes or res.signal == 25:
        return failed(L.RUNTIME_ERROR, f"output limit of {limits.file_bytes} bytes exceeded\n")  # 25: SIGXFSZ
    if _is_timeout(res, limits):
        return failed(L.TIMEOUT, f"timed out after {limits.wall_s:g} s" + (" (twice)\n" if retried else "\n"))
    if res.oom_killed:
        return failed(L.MEMORY_LIMIT, f"reached the execution's memory limit of {limits.memory_bytes >> 20} MiB\n")
    if res.outlived:
        return failed(L.RUNTIME_ERROR, f"{res.outlived} process(es) still running when the program ended (killed)\n")
    outcome, note, assertions = judge.verdict(step, res, key)
    if outcome == L.PASSED:
        return Execution(L.PASSED, True, **base, assertions=assertions)
    return failed(outcome, note)


def humaneval_judge(adapter: L.Adapter) -> Judge:
    """A HumanEval-X run passes on exit status 0, its proof line, and no assertion failure in its output."""

    def verdict(step: Step, res: SandboxResult, key: bytes) -> tuple[str, str, int | None]:
        count = proof.verified_count(key, res.captured) if res.returncode == 0 else None
        if count is not None and count >= 1 and not res.found:
            return L.PASSED, "", count
        outcome = adapter.classify(step, res.returncode if res.returncode is not None else -1, res.stdout,
                                   res.stderr, res.found)
        if res.found:
            return outcome, "assertion failures in the output: " + ", ".join(res.found) + "\n", None
        if res.returncode == 0:
            return (outcome if outcome != L.WRONG_ANSWER else L.RUNTIME_ERROR,
                    "exited with status 0 before its tests finished (no proof of a pass)\n", None)
        return outcome, "", None

    return Judge(verdict, adapter.failure_markers)


def execute_sample(problem: Problem, completion: str, mode: str, tc: Toolchain, limits: ExecLimits,
                   unsafe: bool = False, postprocess: bool = True) -> Execution:
    """A sample's outcome: `unfinished` when it never closes its function, else what its program does."""
    adapter = L.adapter(problem.language)
    if postprocess:
        completion, finished = adapter.postprocess(completion, adapter.target_prefix(problem, mode), tc)
        if not finished:
            return Execution(L.UNFINISHED, False, stderr="the generation does not complete the function")
    program = adapter.program(problem, completion, mode, tc)
    return run_program(program, problem.language, limits, unsafe, tc)


def with_run_wall(limits: ExecLimits, wall_s: float) -> ExecLimits:
    return replace(limits, run=replace(limits.run, wall_s=wall_s))


def ensure_go_cache(tc: Toolchain, limits: ExecLimits, unsafe: bool) -> Path | None:
    """The machine's Go build cache with the standard packages and testify compiled (built once, in the
    sandbox, under a lock); None when Go cannot build it (each sample then compiles everything itself)."""
    folder = go_cache_dir(tc)
    if folder.is_dir():
        return folder
    lock_path = folder.parent / "gocache.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if folder.is_dir():
            return folder
        imports = "".join(f'    "{p}"\n' for p in GO_WARMUP_PACKAGES)
        uses = "".join(f"var _ = {u}\n" for u in GO_WARMUP_PACKAGES.values())
        text = ('package main\n\nimport (\n    "testing"\n    "github.com/stretchr/testify/assert"\n' + imports +
                ")\n\n" + uses + "\nfunc TestWarm(t *testing.T) {\n    assert.Equal(t, 1, 1)\n}\n")
        work = tempfile.mkdtemp(prefix="gowarm-", dir=work_root())
        try:
            Path(work, "main_test.go").write_text(text)
            program = L.adapter("Go").program(Problem("Go/warm", "Go", "", "", "", ""), "", "generation", tc)
            res = _run_step(program.steps[0], work, limits.compile, program, unsafe)
            cache = Path(work) / ".gocache"
            if res.returncode != 0 or not cache.is_dir():
                return None
            mine = (os.geteuid(), os.getegid())
            for root, _dirs, files in os.walk(cache):
                os.chown(root, *mine)
                os.chmod(root, 0o755)
                for name in files:
                    os.chown(os.path.join(root, name), *mine)
                    os.chmod(os.path.join(root, name), 0o644)
            os.rename(cache, folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return folder


def exec_limits(cfg, wall_s: float) -> ExecLimits:
    """ExecLimits from an `ExecutionConfig` and the task's run-time limit."""
    run = Limits(wall_s=wall_s, memory_bytes=cfg.memory_mb << 20, processes=cfg.processes,
                 file_bytes=cfg.output_mb << 20, tmp_bytes=cfg.tmp_mb << 20, shm_bytes=cfg.shm_mb << 20,
                 cgroups=cfg.cgroups)
    compile_ = Limits(wall_s=cfg.compile_time_s, memory_bytes=cfg.compile_memory_mb << 20,
                      processes=max(512, cfg.processes), file_bytes=max(256, cfg.output_mb) << 20, open_files=1024,
                      tmp_bytes=256 << 20, shm_bytes=cfg.shm_mb << 20, cgroups=cfg.cgroups)
    return ExecLimits(run=run, compile=compile_, retry_timeouts=cfg.retry_timeouts)
