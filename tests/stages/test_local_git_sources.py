"""The `local` and `git` repository sources: listing, names, metadata, sizes, fetching (real git clones
of repositories made in the test), and extraction of what they fetch."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from codemill.config import ConfigError, build_config
from codemill.crawl.extract import RepoFile, extract_repo
from codemill.crawl.sources.base import FetchError, RepoRef
from codemill.crawl.sources.git import GitSource, GitSourceConfig, repo_name_from_url
from codemill.crawl.sources.local import LocalSource, LocalSourceConfig, repo_folder_name
from codemill.crawl.sources.repo_info import load_metadata, unique_names
from codemill.secrets import redact_url

MODULE = b"def answer():\n    return 42\n"


def write(path: Path, data: bytes = MODULE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# --- local ----------------------------------------------------------------------------------------

@pytest.fixture()
def site_packages(tmp_path: Path) -> Path:
    """A site-packages-like folder: packages, metadata folders, single modules, archives."""
    root = tmp_path / "lib" / "site-packages"
    write(root / "alpha" / "__init__.py")
    write(root / "alpha" / "core.py", MODULE * 40)
    write(root / "alpha-1.0.dist-info" / "METADATA", b"Name: alpha\n")
    write(root / "beta" / "__init__.py")
    write(root / "beta" / "vendor" / "six.py")   # vendored inside the package: excluded when extracted
    write(root / "__pycache__" / "x.cpython-311.pyc", b"\x00" * 8)
    write(root / ".hidden" / "h.py")
    write(root / "six.py")                        # a single module: not a repository
    with tarfile.open(root / "gamma.tar.gz", "w:gz") as tar:
        tar.add(root / "alpha" / "__init__.py", arcname="gamma-1.0/gamma/__init__.py")
    with zipfile.ZipFile(root / "alpha.zip", "w") as zf:  # same name as the folder: alpha~2
        zf.writestr("alpha/__init__.py", MODULE)
    return root


def local_config(**values) -> LocalSourceConfig:
    return build_config(LocalSourceConfig, {"type": "local", **values}, source="test")


def test_expand_children_lists_each_package(site_packages):
    source = LocalSource(local_config(paths=[str(site_packages)], expand_children=True,
                                      exclude=[".*", "__pycache__", "*.dist-info"]))
    refs = list(source.list_repos())
    assert [(r.full_name, Path(r.location).name) for r in refs] == [
        ("local/alpha", "alpha"), ("local/alpha~2", "alpha.zip"), ("local/beta", "beta"),
        ("local/gamma", "gamma.tar.gz"),
    ]
    assert all(r.source == "local" and r.stars == 1 for r in refs)
    alpha = refs[0]
    assert alpha.size_kb == 2  # 28 + 1,120 bytes, rounded up to whole KB
    assert refs[3].size_kb == (site_packages / "gamma.tar.gz").stat().st_size // 1024 + 1
    fetched = source.fetch(alpha, "/nonexistent-workdir")  # nothing is copied: the path itself
    assert fetched.path == alpha.location and fetched.commit is None


def test_loose_files_of_an_expanded_folder_are_one_repository(site_packages):
    """A standard library's or site-packages' single modules (six.py) belong to no package: with
    `loose_files: repository` they are one more repository, named after the folder, holding nothing below it."""
    source = LocalSource(local_config(paths=[str(site_packages)], expand_children=True, loose_files="repository",
                                      exclude=[".*", "__pycache__", "*.dist-info"]))
    refs = list(source.list_repos())
    assert [r.full_name for r in refs] == ["local/site-packages", "local/alpha", "local/alpha~2", "local/beta",
                                           "local/gamma"]
    loose = refs[0]
    assert loose.size_kb == 1  # six.py alone (the archives beside it are repositories of their own)
    fetched = source.fetch(loose, "")
    assert fetched.path == str(site_packages) and fetched.files_only
    result = extract_repo(fetched.path, loose.full_name, files_only=True)
    assert [f.path for f in result.files] == ["six.py"]  # nothing below the folder, no archive beside it
    assert result.skipped == []
    default = LocalSource(local_config(paths=[str(site_packages)], expand_children=True))
    assert "local/site-packages" not in [r.full_name for r in default.list_repos()]


def test_children_of_site_packages_keep_their_files(site_packages):
    source = LocalSource(local_config(paths=[str(site_packages)], expand_children=True, include=["beta", "gamma*"]))
    beta, gamma = source.list_repos()
    beta_result = extract_repo(source.fetch(beta, "").path, beta.full_name)
    assert [f.path for f in beta_result.files] == ["__init__.py"]
    assert [(s.path, s.reason) for s in beta_result.skipped] == [("vendor/", "excluded_dir")]
    gamma_result = extract_repo(source.fetch(gamma, "").path, gamma.full_name)
    assert [f.path for f in gamma_result.files] == ["gamma/__init__.py"]


def test_listed_paths_without_expansion_are_repositories(site_packages):
    source = LocalSource(local_config(paths=[str(site_packages / "beta"), str(site_packages / "gamma.tar.gz")]))
    assert [r.full_name for r in source.list_repos()] == ["local/beta", "local/gamma"]


def test_metadata_file_overrides_defaults(site_packages, tmp_path):
    metadata = tmp_path / "repos.csv"
    metadata.write_text("full_name,stars,size_kb,license,main_language\n"
                        "local/alpha,0,,MIT,Python\nlocal/beta,7,12345,,\n")
    source = LocalSource(local_config(paths=[str(site_packages / "alpha"), str(site_packages / "beta")],
                                      metadata=str(metadata), default_stars=3))
    alpha, beta = source.list_repos()
    assert (alpha.stars, alpha.size_kb, alpha.license, alpha.main_language) == (0, 2, "MIT", "Python")
    assert (beta.stars, beta.size_kb, beta.license, beta.main_language) == (7, 12345, None, None)
    other = LocalSource(local_config(paths=[str(site_packages / "beta")], default_stars=3))
    assert next(other.list_repos()).stars == 3


@pytest.mark.parametrize("suffix, text", [
    (".yaml", "local/alpha: {stars: 5, license: Apache-2.0}\n"),
    (".yml", "- {full_name: local/alpha, stars: 5, license: Apache-2.0}\n"),
    (".json", json.dumps({"local/alpha": {"stars": 5, "license": "Apache-2.0"}})),
])
def test_metadata_formats(tmp_path, suffix, text):
    path = tmp_path / f"meta{suffix}"
    path.write_text(text)
    facts = load_metadata(str(path))["local/alpha"]
    assert (facts.stars, facts.license, facts.size_kb) == (5, "Apache-2.0", None)


@pytest.mark.parametrize("text, message", [
    ("local/alpha: {stars: many}\n", "entry local/alpha"),
    ("local/alpha: {stars: 1, forks: 3}\n", "'forks' is not a known setting"),
    ("- {stars: 1}\n", "record 1 has no full_name"),
    ("- {full_name: a, stars: 1}\n- {full_name: a, stars: 2}\n", "a is listed twice"),
    ("local/alpha: 5\n", "must map to a mapping"),
])
def test_bad_metadata_is_refused_before_work(tmp_path, text, message):
    path = tmp_path / "meta.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_metadata(str(path))


def test_missing_or_unusable_paths_are_config_errors(tmp_path):
    missing = tmp_path / "no-such-folder"
    with pytest.raises(ConfigError, match=f"{missing} does not exist"):
        local_config(paths=[str(missing)])
    plain = write(tmp_path / "notes.txt", b"hi\n")
    with pytest.raises(ConfigError, match="neither a folder nor an archive"):
        local_config(paths=[str(plain)])
    with pytest.raises(ConfigError, match="metadata file .*absent.csv does not exist"):
        local_config(paths=[str(tmp_path)], metadata=str(tmp_path / "absent.csv"))
    with pytest.raises(ConfigError, match="paths"):
        local_config(paths=[])


def test_fetch_of_a_vanished_path_is_a_fetch_error(tmp_path):
    repo = write(tmp_path / "gone" / "x.py").parent
    source = LocalSource(local_config(paths=[str(repo)]))
    [ref] = source.list_repos()
    (repo / "x.py").unlink()
    repo.rmdir()
    with pytest.raises(FetchError, match="no longer exists"):
        source.fetch(ref, str(tmp_path))


def test_names():
    assert repo_folder_name("/x/pkg.tar.gz") == "pkg" and repo_folder_name("/x/pkg.TGZ") == "pkg"
    assert repo_folder_name("/x/pkg/") == "pkg" and repo_folder_name("/x/.zip") == ".zip"
    assert unique_names(["a", "b", "a", "a~2", "a"]) == ["a", "b", "a~3", "a~2", "a~4"]
    assert unique_names(["o/Tools", "o/tools"]) == ["o/Tools", "o/tools~2"]


# --- git ------------------------------------------------------------------------------------------

def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture()
def upstream(tmp_path: Path) -> tuple[Path, str]:
    """A real repository with two commits; returns (path, HEAD commit)."""
    repo = tmp_path / "upstream" / "tools"
    repo.mkdir(parents=True)
    git("init", "-q", "-b", "trunk", cwd=repo)
    write(repo / "tool.py", MODULE)
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "first", cwd=repo)
    write(repo / "lib" / "util.c", b"int util(void) { return 1; }\n")
    write(repo / "node_modules" / "dep" / "index.js", b"module.exports = {};\n")
    git("add", ".", cwd=repo)
    git("commit", "-q", "-m", "second", cwd=repo)
    return repo, git("rev-parse", "HEAD", cwd=repo)


def git_config(**values) -> GitSourceConfig:
    return build_config(GitSourceConfig, {"type": "git", **values}, source="test")


def test_git_clone_over_file_url_records_the_commit(upstream, tmp_path):
    repo, head = upstream
    metadata = tmp_path / "meta.yaml"
    metadata.write_text("upstream/tools: {stars: 9, license: MIT}\n")
    source = GitSource(git_config(urls=[repo.as_uri()], metadata=str(metadata)))
    [ref] = source.list_repos()
    assert (ref.full_name, ref.source, ref.stars, ref.license, ref.size_kb) == ("upstream/tools", "git", 9, "MIT", None)
    workdir = tmp_path / "work"
    workdir.mkdir()
    fetched = source.fetch(ref, str(workdir))
    assert fetched.commit == head
    assert fetched.ref.default_branch == "trunk"
    assert fetched.ref.size_kb == 1  # the checkout's files, .git not counted
    assert git("rev-list", "--count", "HEAD", cwd=Path(fetched.path)) == "1"  # shallow: depth 1
    result = extract_repo(fetched.path, ref.full_name)
    assert sorted(f.path for f in result.files) == ["lib/util.c", "tool.py"]
    assert all(isinstance(f, RepoFile) and f.repo == "upstream/tools" for f in result.files)
    assert sorted((s.path, s.reason) for s in result.skipped) == [(".git/", "excluded_dir"),
                                                                   ("node_modules/", "excluded_dir")]
    again = source.fetch(ref, str(workdir))  # a retried task clones again into a clean folder
    assert again.commit == head and again.path == fetched.path


def test_git_clone_failure_is_a_fetch_error_with_gits_message(tmp_path):
    source = GitSource(git_config(urls=[(tmp_path / "missing" / "repo").as_uri()]))
    [ref] = source.list_repos()
    with pytest.raises(FetchError, match="git clone failed: fatal: .* does not appear to be a git repository"):
        source.fetch(ref, str(tmp_path))


def test_credentials_never_reach_names_or_reasons(tmp_path):
    with socket.socket() as closed:  # a loopback port with nothing listening
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"https://alice:s3cr3t-token@127.0.0.1:{port}/octo/private.git"
    source = GitSource(git_config(urls=[url], clone_timeout_s=60))
    [ref] = source.list_repos()
    assert ref.full_name == "octo/private"
    with pytest.raises(FetchError, match="git clone failed") as exc:
        source.fetch(ref, str(tmp_path))
    assert "s3cr3t" not in str(exc.value)
    redacted = f"fatal: unable to access 'https://***@127.0.0.1:{port}/octo/private.git/'"
    assert redact_url(f"fatal: unable to access '{url}/'") == redacted


def test_git_clone_timeout(tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    try:  # a server that accepts and never answers
        source = GitSource(git_config(urls=[f"http://127.0.0.1:{server.getsockname()[1]}/o/slow.git"],
                                      clone_timeout_s=1))
        [ref] = source.list_repos()
        with pytest.raises(FetchError, match="git clone timed out after 1s"):
            source.fetch(ref, str(tmp_path))
    finally:
        for conn, _ in accepted:
            conn.close()
        server.close()


@pytest.mark.parametrize("url, name", [
    ("https://github.com/Owner/Name.git", "Owner/Name"),
    ("https://github.com/Owner/Name/", "Owner/Name"),
    ("git@github.com:Owner/Name.git", "Owner/Name"),
    ("ssh://git@host:2222/group/sub/proj.git", "sub/proj"),
    ("file:///srv/mirrors/tools", "mirrors/tools"),
    ("/srv/git/tools.git", "git/tools"),
    ("tools", "tools"),
])
def test_repo_name_from_url(url, name):
    assert repo_name_from_url(url) == name


def test_duplicate_names_are_disambiguated(upstream, tmp_path):
    repo, _ = upstream
    other = tmp_path / "elsewhere" / "upstream" / "tools"
    other.parent.mkdir(parents=True)
    git("clone", "-q", str(repo), str(other), cwd=tmp_path)
    source = GitSource(git_config(urls=[repo.as_uri(), other.as_uri()]))
    assert [r.full_name for r in source.list_repos()] == ["upstream/tools", "upstream/tools~2"]


@pytest.mark.parametrize("urls, message", [
    (["https://x/a/b", "https://x/a/b"], "listed twice"),
    (["--upload-pack=touch%/tmp/pwned"], "starts with '-'"),
    (["ext::sh%-c%touch%/tmp/pwned"], "ext:: transport"),
    (["https://x/a b"], "whitespace"),
    (["https://host/"], "path is empty"),
    (["https://host/...git"], r"the name '\.\.' has an empty, '\.' or '\.\.' part"),
    (["https://host/o/..git"], r"the name 'o/\.' has"),
    (["https://host/o/a\\b"], "backslash"),
    (["ssh://me:pw@host/o/r.git"], "only passed safely"),
    ([], "urls"),
])
def test_bad_urls_are_refused_before_work(urls, message):
    with pytest.raises(ConfigError, match=message):
        git_config(urls=urls)


def test_a_url_naming_dot_dot_never_removes_the_work_folders_parent(tmp_path):
    """`https://host/...git` named the repository `..`, and the clean-up of a retried clone removed the
    parent of the task's work folder. Names are refused; work folders are named by the repository key."""
    parent = tmp_path / "tmp"
    workdir = parent / "codemill-crawl-task"
    workdir.mkdir(parents=True)
    sentinel = write(parent / "other-task" / "keep.txt", b"another task's file\n")
    source = GitSource(git_config(urls=[(tmp_path / "missing").as_uri()]))
    for name in ("..", "o/..", "."):
        with pytest.raises(FetchError, match="git clone failed"):
            source.fetch(RepoRef(name, "git", (tmp_path / "missing").as_uri()), str(workdir))
        assert sentinel.read_bytes() == b"another task's file\n" and workdir.is_dir()


def test_removal_is_refused_outside_the_task_folder(tmp_path):
    from codemill.crawl.keys import remove_inside

    inside = write(tmp_path / "work" / "k" / "x.py").parent
    outside = write(tmp_path / "elsewhere" / "y.py").parent
    (tmp_path / "work" / "link").symlink_to(outside)
    for victim in (tmp_path / "work" / "..", tmp_path / "work", tmp_path / "work" / "link"):
        with pytest.raises(ValueError, match="refusing to remove"):
            remove_inside(str(victim), str(tmp_path / "work"))
    assert (outside / "y.py").exists()
    remove_inside(str(inside), str(tmp_path / "work"))
    assert not inside.exists()


def _command_lines() -> list[bytes]:
    lines = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                lines.append(f.read())
        except OSError:  # the process ended meanwhile
            pass
    return lines


def test_url_credentials_reach_git_through_its_environment_never_its_command_line(tmp_path):
    """The token of `https://user:token@host/...` was on git's argv, which `ps` shows every user."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    seen: dict = {}

    def serve() -> None:
        conn, _ = server.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        seen["request"] = request.decode()
        seen["command_lines"] = _command_lines()  # git is running, waiting for this answer
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://alice:s3cr3t%2Fp@ss@127.0.0.1:{server.getsockname()[1]}/octo/private.git"
    source = GitSource(git_config(urls=[url], clone_timeout_s=60))
    [ref] = source.list_repos()
    assert ref.full_name == "octo/private"
    try:
        with pytest.raises(FetchError, match="git clone failed") as exc:
            source.fetch(ref, str(tmp_path))
    finally:
        thread.join(timeout=10)
        server.close()
    basic = base64.b64encode(b"alice:s3cr3t/p@ss").decode()
    assert f"Authorization: Basic {basic}" in seen["request"]
    assert any(b"octo/private.git" in line for line in seen["command_lines"])  # git's own command line
    assert not any(b"s3cr3t" in line for line in seen["command_lines"])
    assert "s3cr3t" not in str(exc.value)


@contextlib.contextmanager
def deep_tree(repo: Path, levels: int):
    """`repo/d/d/.../d/leaf.py`, built and removed one level at a time (os.makedirs and pytest's
    clean-up recurse, and would fail on it)."""
    deep = str(repo)
    os.mkdir(repo)
    for _ in range(levels):
        deep += "/d"
        os.mkdir(deep)
    leaf = Path(deep, "leaf.py")
    leaf.write_bytes(MODULE)
    try:
        yield leaf
    finally:
        leaf.unlink()
        for _ in range(levels + 1):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_a_repository_1100_folders_deep_is_listed_and_measured(tmp_path):
    """Listing measured sizes with os.walk, whose recursion raised RecursionError and killed the driver."""
    (tmp_path / "corpus").mkdir()
    with deep_tree(tmp_path / "corpus" / "deep", 1100):
        write(tmp_path / "corpus" / "flat" / "x.py")
        source = LocalSource(local_config(paths=[str(tmp_path / "corpus")], expand_children=True))
        deep, flat = source.list_repos()
        assert (deep.full_name, deep.size_kb, deep.error) == ("local/deep", 1, None)
        [leaf] = extract_repo(source.fetch(deep, "").path, deep.full_name).files
        assert leaf.path == "d/" * 1100 + "leaf.py"
        assert flat.error is None


def test_a_repository_that_cannot_be_measured_is_listed_with_its_error(tmp_path, monkeypatch):
    from codemill.crawl.sources import local

    real = local.size_kb_on_disk

    def measure(path: str) -> int:
        if path.endswith("bad"):
            raise PermissionError(13, "Permission denied", path)
        return real(path)

    monkeypatch.setattr(local, "size_kb_on_disk", measure)
    write(tmp_path / "corpus" / "bad" / "x.py")
    write(tmp_path / "corpus" / "good" / "x.py")
    bad, good = LocalSource(local_config(paths=[str(tmp_path / "corpus")], expand_children=True)).list_repos()
    assert bad.error is not None and bad.error.startswith("cannot measure") and "Permission denied" in bad.error
    assert good.error is None and good.size_kb == 1
