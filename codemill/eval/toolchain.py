"""The machine's toolchains: finding them, their versions (part of the benchmark fingerprint), and the
work done once per machine so that each sample compiles faster:

- C++: a precompiled header of exactly the includes every C++ program starts with (no change in meaning),
  and the test harness's main (harness/cm_harness.cpp) compiled into an object;
- Java: the harness's entry point (harness/CmHarness.java) compiled once;
- Python: the harness's modules (harness/*.py) compiled to bytecode by the sandbox's interpreter, so neither the
  test's nor the candidate's process compiles them again;
- Go: a build cache with the standard library and testify already compiled, hard-linked (not copied) into
  each sample's private cache, so `go test -c` only compiles the sample itself.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from codemill.eval.languages import CPP_INCLUDES, PYTHON_HARNESS, Toolchain, harness_file

REPO_ROOT = Path(__file__).resolve().parents[2]
# The oldest toolchains the benchmark check passes with, and what in the benchmark (or the sandbox) needs them.
MINIMUM_VERSIONS: dict[str, tuple[tuple[int, ...], str]] = {
    "node": ((16, 6), "JavaScript/39, 46, 48, 64, 70 and 73's canonical solutions call Array.prototype.at"),
    "javac": ((16,), "Java/136's canonical solution calls Stream.toList()"),
    "java": ((16,), "Java/136's canonical solution calls Stream.toList()"),
    "go": ((1, 16), "the test harness reads its key with io.ReadAll and runs the tests with -test.paniconexit0"),
    "python": ((3, 9), "MTPB's CodeGen scoring rewrites programs with ast.unparse"),
    "g++": ((5,), "the C++ programs are compiled as C++11 with the harness's main"),
    "bwrap": ((0, 5), "the sandbox sizes its /tmp and /dev/shm with --size and --perms"),
}
DEFAULT_NODE_MODULES = REPO_ROOT / ".cache" / "node_modules"


def cache_root() -> Path:
    """~/.cache/codemill (XDG_CACHE_HOME respected): results that only this machine's user reads."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "codemill"


def shared_root() -> Path:
    """Machine-level eval folders that sandboxes must reach by path (so not under a private home): sample
    work directories, the C++ precompiled header, the Go build cache, js-md5. Set CODEMILL_EVAL_ROOT to move."""
    path = Path(os.environ.get("CODEMILL_EVAL_ROOT") or "/var/tmp/codemill-eval")
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o711)
    return path


def work_root() -> Path:
    """Where sample work directories go: traversable, not listable, by the sandboxes' uids."""
    path = shared_root() / "work"
    path.mkdir(exist_ok=True)
    os.chmod(path, 0o711)
    return path


@functools.lru_cache(maxsize=64)
def _version(argv: tuple[str, ...]) -> str:
    return _run(list(argv))


def _run(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (r.stdout + r.stderr).strip().splitlines()[0] if (r.stdout + r.stderr).strip() else f"exit {r.returncode}"


def _dpkg_version(package: str) -> str:
    return _version(("dpkg-query", "-W", "-f=${Version}", package))


def toolchain_versions(tc: Toolchain) -> dict[str, str]:
    """One line per tool: what results were computed with."""
    versions = {
        "python": _version((tc.python, "--version")),
        "g++": _version((tc.gxx, "--version")),
        "boost": _dpkg_version("libboost-dev"),
        "openssl": _version(("openssl", "version")),
        "javac": _version((tc.javac, "-version")),
        "java": _version((tc.java, "-version")),
        "node": _version((tc.node, "--version")),
        "go": _version((tc.go, "version")),
        "testify": _dpkg_version("golang-github-stretchr-testify-dev"),
        "bwrap": _version(("bwrap", "--version")),
    }
    md5 = Path(tc.node_modules or "") / "js-md5" / "package.json"
    versions["js-md5"] = json.loads(md5.read_text()).get("version", "?") if md5.is_file() else "missing"
    return versions


def parse_version(text: str) -> tuple[int, ...] | None:
    """The first dotted number in a tool's version line ("openjdk version \"17.0.15\"" -> (17, 0, 15))."""
    m = re.search(r"(\d+(?:\.\d+)*)", text or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def too_old(versions: dict[str, str]) -> list[str]:
    """Which toolchains are missing or older than MINIMUM_VERSIONS, each said with what needs it."""
    problems = []
    for tool, (minimum, why) in MINIMUM_VERSIONS.items():
        line = versions.get(tool, "")
        found = parse_version(line) if line and not line.startswith(("unavailable", "exit ")) else None
        wanted = ".".join(map(str, minimum))
        if found is None:
            problems.append(f"{tool} is missing ({line or 'not found'}); {wanted} or newer is needed: {why}")
        elif found < minimum:
            problems.append(f"{tool} {'.'.join(map(str, found))} is older than {wanted}: {why}")
    return problems


def default_toolchain(node_modules: str | None = None, cpp_std: str = "c++11", prepare: bool = True) -> Toolchain:
    """The toolchain of this machine, with the C++ precompiled header built when `prepare`."""
    nm = node_modules or (str(DEFAULT_NODE_MODULES) if DEFAULT_NODE_MODULES.is_dir() else None)
    tc = Toolchain(node_modules=nm, cpp_std=cpp_std)
    if prepare:
        tc.cpp_pch_dir = cpp_pch(tc)
        tc.cpp_harness_obj = cpp_harness(tc)
        tc.javac_cds = javac_cds(tc)
        tc.java_harness_dir = java_harness(tc)
        tc.python_harness_dir = python_harness(tc.python)
        if nm:
            tc.node_modules = visible_node_modules(Path(nm))
    return tc


def visible_node_modules(src: Path) -> str:
    """A copy of `src` (js-md5) under the shared root, readable by the sandboxes whatever `src`'s parents."""
    key = hashlib.sha256(str(sorted((str(p.relative_to(src)), p.stat().st_size) for p in src.rglob("*")
                                    if p.is_file())).encode()).hexdigest()[:16]
    folder = shared_root() / f"node_modules-{key}"
    if not folder.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="nm-", dir=shared_root()))
        shutil.copytree(src, tmp / "m")
        _make_readable(tmp / "m")
        try:
            os.rename(tmp / "m", folder)
        except OSError:
            pass
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def _make_readable(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        os.chmod(root, 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)


def cpp_pch(tc: Toolchain) -> str | None:
    """A folder holding cm_pch.h and its precompiled .gch for these compiler flags; None if g++ fails."""
    key = hashlib.sha256(json.dumps([_version((tc.gxx, "--version")), tc.cpp_std, CPP_INCLUDES]).encode()).hexdigest()
    folder = shared_root() / f"pch-{key[:16]}"
    if (folder / "cm_pch.h.gch").is_file():
        return str(folder)
    tmp = Path(tempfile.mkdtemp(prefix="pch-", dir=folder.parent))
    os.chmod(tmp, 0o755)
    (tmp / "cm_pch.h").write_text("\n".join(CPP_INCLUDES) + "\n")
    r = subprocess.run([tc.gxx, f"-std={tc.cpp_std}", "-x", "c++-header", "cm_pch.h", "-o", "cm_pch.h.gch"],
                       cwd=tmp, capture_output=True, timeout=300)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    _make_readable(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def cpp_harness(tc: Toolchain) -> str | None:
    """harness/cm_harness.cpp compiled once for this compiler and standard; None if g++ fails (each sample then
    compiles it itself)."""
    source = harness_file("cm_harness.cpp")
    key = hashlib.sha256(json.dumps([_version((tc.gxx, "--version")), tc.cpp_std, source]).encode()).hexdigest()
    folder = shared_root() / f"cppharness-{key[:16]}"
    if (folder / "cm_harness.o").is_file():
        return str(folder / "cm_harness.o")
    tmp = Path(tempfile.mkdtemp(prefix="cpph-", dir=folder.parent))
    (tmp / "cm_harness.cpp").write_text(source)
    r = subprocess.run([tc.gxx, f"-std={tc.cpp_std}", "-O1", "-c", "cm_harness.cpp", "-o", "cm_harness.o"],
                       cwd=tmp, capture_output=True, timeout=300)
    if r.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    (tmp / "cm_harness.cpp").unlink()
    _make_readable(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder / "cm_harness.o")


def _built_once(prefix: str, key: str, build) -> str | None:
    """A folder under the shared root made once by `build(tmp_folder) -> bool` (None when it fails), readable by
    the sandboxes; a second process finding it made uses it."""
    folder = shared_root() / f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    if (folder / ".complete").is_file():
        return str(folder)
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=shared_root()))
    try:
        ok = build(tmp)
    except (OSError, subprocess.SubprocessError):
        ok = False
    if not ok:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    (tmp / ".complete").write_text("")
    _make_readable(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process made it first
        shutil.rmtree(tmp, ignore_errors=True)
    return str(folder)


def java_harness(tc: Toolchain) -> str | None:
    """A folder holding harness/CmHarness.class for this JDK."""
    source = harness_file("CmHarness.java")

    def build(tmp: Path) -> bool:
        (tmp / "CmHarness.java").write_text(source)
        r = subprocess.run([tc.javac, "-encoding", "UTF-8", "-nowarn", "CmHarness.java"], cwd=tmp,
                           capture_output=True, timeout=300)
        (tmp / "CmHarness.java").unlink()
        return r.returncode == 0 and (tmp / "CmHarness.class").is_file()

    return _built_once("javaharness", json.dumps([_version((tc.javac, "-version")), source]), build)


def python_harness(python: str) -> str | None:
    """A folder holding the Python harness modules and their bytecode, compiled by the sandbox's interpreter."""
    sources = {name: harness_file(name) for name in PYTHON_HARNESS}

    def build(tmp: Path) -> bool:
        for name, text in sources.items():
            (tmp / name).write_text(text)
        r = subprocess.run([python, "-I", "-S", "-m", "compileall", "-q", str(tmp)], capture_output=True,
                           timeout=300)
        return r.returncode == 0 and (tmp / "__pycache__").is_dir()

    return _built_once("pyharness", json.dumps([_version((python, "--version")), python, sources]), build)


def go_cache_key(tc: Toolchain) -> str:
    return hashlib.sha256(json.dumps([_version((tc.go, "version")), _dpkg_version(
        "golang-github-stretchr-testify-dev")]).encode()).hexdigest()[:16]


def go_cache_dir(tc: Toolchain) -> Path:
    return shared_root() / f"gocache-{go_cache_key(tc)}"


def link_tree(src: Path, dst: Path) -> None:
    """Copy the folder structure of `src` into `dst` with every file hard-linked (read-only to the sample:
    the files stay the caller's, 0644; the sample may add files to its own folders)."""
    for root, _dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        target = dst if rel == "." else dst / rel
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            try:
                os.link(os.path.join(root, name), target / name)
            except OSError:
                shutil.copy2(os.path.join(root, name), target / name)


JAVAC_JVM_FLAGS = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")


def javac_cds(tc: Toolchain) -> str | None:
    """A dynamic class-data-sharing archive of javac compiling a small program (about a third less CPU per
    javac start); None when the JDK cannot make one."""
    key = hashlib.sha256(json.dumps([_version((tc.javac, "-version")), _version((tc.java, "-version")),
                                     JAVAC_JVM_FLAGS]).encode()).hexdigest()[:16]
    folder = shared_root() / f"javac-cds-{key}"
    archive = folder / "javac.jsa"
    if archive.is_file():
        return str(archive)
    tmp = Path(tempfile.mkdtemp(prefix="cds-", dir=shared_root()))
    os.chmod(tmp, 0o755)
    (tmp / "Main.java").write_text(
        "import java.util.*;\nclass Solution {\n    public List<Integer> f(List<Integer> xs) {\n"
        "        List<Integer> out = new ArrayList<>();\n        for (int x : xs) { out.add(x * 2); }\n"
        "        return out;\n    }\n}\npublic class Main {\n    public static void main(String[] args) {\n"
        "        Solution s = new Solution();\n        if (!s.f(Arrays.asList(1, 2)).equals(Arrays.asList(2, 4))) "
        "{ throw new AssertionError(); }\n    }\n}\n")
    flags = [f"-J{f}" for f in JAVAC_JVM_FLAGS]
    r = subprocess.run([tc.javac, *flags, f"-J-XX:ArchiveClassesAtExit={tmp / 'javac.jsa'}", "-encoding", "UTF-8",
                        "-nowarn", "-proc:none", "Main.java"], cwd=tmp, capture_output=True, timeout=300)
    if r.returncode != 0 or not (tmp / "javac.jsa").is_file():
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    for name in ("Main.java", "Main.class", "Solution.class"):
        (tmp / name).unlink(missing_ok=True)
    _make_readable(tmp)
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(archive)
