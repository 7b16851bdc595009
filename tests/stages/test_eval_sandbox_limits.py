"""One execution is bounded as a whole (codemill.eval.cgroups on this machine: cgroup v1's memory and pids
hierarchies): a program that fills memory from many processes, or /tmp and /dev/shm, or forks without end,
ends as memory_limit or runtime_error and the host loses at most the limit; the root and /dev are read-only;
with cgroups off, the documented fallback (rlimits per process, size-limited tmpfs) still stops each process.
The default limits pass every canonical solution: that is the benchmark check's business (tests/e2e)."""

from __future__ import annotations

import tempfile

import pytest

from codemill.eval import cgroups, sandbox
from codemill.eval import languages as L
from codemill.eval.execute import ExecLimits, execute_sample
from codemill.eval.sandbox import Limits
from codemill.eval.toolchain import default_toolchain, work_root
from codemill.humaneval import load_problems

MiB = 1 << 20
# Eight processes that each touch 100 MiB: 800 MiB in all, over the execution's 256 MiB (each under its own
# data limit, so only a limit on the whole execution stops them).
MANY_HOGS = ("import os, time\nfor i in range(8):\n    if os.fork() == 0:\n        b = bytearray(100 << 20)\n"
             "        for j in range(0, len(b), 4096):\n            b[j] = 1\n        time.sleep(3)\n        os._exit(0)\n"
             "codes = [os.wait()[1] for _ in range(8)]\nprint('children', codes)\n")


def run(code: str, limits: Limits):
    work = tempfile.mkdtemp(dir=work_root())
    return sandbox.run_sandboxed(["python3", "-I", "-S", "-c", code], work, limits, env={}, writable=False,
                                 detect_leftovers=True)


def test_this_machine_bounds_executions_with_cgroups():
    backend, why = cgroups.probe()
    assert backend is not None, why  # root, and the memory and pids controllers: the CI machines are the same


def test_memory_of_the_whole_process_tree_is_bounded():
    res = run(MANY_HOGS, Limits(wall_s=30, memory_bytes=256 * MiB, processes=64))
    assert res.limiter.startswith("cgroup-")
    assert res.oom_killed >= 1
    assert res.memory_peak_bytes is not None and res.memory_peak_bytes <= 256 * MiB
    assert "children" in res.stdout and any(code != 0 for code in eval(res.stdout.split("children", 1)[1]))


def test_tmpfs_mounts_have_their_sizes_and_count_against_the_memory_limit():
    fill = ("import os\nfor d in ('/tmp', '/dev/shm'):\n    try:\n        with open(d + '/f', 'wb') as f:\n"
            "            for i in range(200):\n                f.write(b'x' * (1 << 20))\n    except OSError as e:\n"
            "        print(d, type(e).__name__, e.errno)\n")
    roomy = run(fill, Limits(wall_s=30, memory_bytes=512 * MiB, tmp_bytes=64 * MiB, shm_bytes=64 * MiB,
                             file_bytes=512 * MiB))
    assert "/tmp OSError 28" in roomy.stdout and "/dev/shm OSError 28" in roomy.stdout  # ENOSPC at their sizes
    assert roomy.memory_peak_bytes >= 128 * MiB  # their pages were the execution's memory
    tight = run(fill, Limits(wall_s=30, memory_bytes=96 * MiB, tmp_bytes=64 * MiB, shm_bytes=64 * MiB,
                             file_bytes=512 * MiB))
    assert tight.oom_killed >= 1 and tight.memory_peak_bytes <= 96 * MiB


def test_root_dev_and_work_directory_are_read_only_for_the_test_run():
    code = ("import os\nfor p in ('/x', '/dev/x', '/usr/x', os.getcwd() + '/x', '/tmp/x', '/dev/shm/x'):\n"
            "    try:\n        open(p, 'w').write('x')\n        print(p, 'written')\n    except OSError as e:\n"
            "        print(p, e.errno)\n")
    res = run(code, Limits(wall_s=10))
    lines = dict(line.rsplit(" ", 1) for line in res.stdout.splitlines())
    assert lines.pop("/tmp/x") == "written" and lines.pop("/dev/shm/x") == "written"
    assert set(lines.values()) == {"30"}  # EROFS everywhere else


def test_processes_of_the_whole_execution_are_bounded():
    bomb = ("import os, time\nn = 0\nfor i in range(500):\n    try:\n        if os.fork() == 0:\n"
            "            time.sleep(5)\n            os._exit(0)\n        n += 1\n    except OSError:\n        break\n"
            "print('forked', n)\n")
    res = run(bomb, Limits(wall_s=20, processes=40))
    forked = int(res.stdout.split("forked", 1)[1])
    assert forked < 40
    assert res.outlived >= 1  # the children were still sleeping when the program ended: killed, and counted


def test_without_cgroups_each_process_is_still_stopped():
    """The fallback (execution.cgroups=off, or a host without cgroup delegation): no whole-tree limit, but each
    process meets its data-segment rlimit and the tmpfs mounts their sizes."""
    res = run(MANY_HOGS.replace("100 << 20", "300 << 20"), Limits(wall_s=30, memory_bytes=256 * MiB, cgroups="off"))
    assert res.limiter == "rlimits" and res.memory_peak_bytes is None
    codes = eval(res.stdout.split("children", 1)[1])
    assert all(code != 0 for code in codes)  # MemoryError in every child


def test_a_hostile_sample_ends_as_memory_limit_and_the_canonical_solution_still_passes():
    tc = default_toolchain()
    p = load_problems(["Python"])["Python/0"]
    limits = ExecLimits(run=Limits(wall_s=20, memory_bytes=256 * MiB), retry_timeouts=False)
    hog = "    " + MANY_HOGS.replace("\n", "\n    ").rstrip() + "\n    return None\n"
    res = execute_sample(p, hog, "generation", tc, limits, postprocess=False)
    assert res.outcome in (L.MEMORY_LIMIT, L.RUNTIME_ERROR) and not res.passed
    assert res.memory_peak_bytes is not None and res.memory_peak_bytes <= 256 * MiB
    assert execute_sample(p, p.canonical_solution, "generation", tc, limits).passed


@pytest.mark.parametrize("mode", ["require", "off"])
def test_the_cgroup_mode_is_what_the_config_says(mode):
    res = run("print('ok')", Limits(wall_s=10, cgroups=mode))
    assert res.stdout.strip() == "ok"
    assert (res.limiter == "rlimits") is (mode == "off")
