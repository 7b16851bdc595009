"""Safe extraction of repositories (folders, hostile tarballs and zips) into file records, the text
decoding rules, the Arrow tables, and the main-language rule."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import stat
import tarfile
import time
import tracemalloc
import zipfile
from pathlib import Path

import pyarrow as pa
import pytest

from codemill.crawl.decode import NotText, decode_text, looks_binary
from codemill.crawl.extract import (
    ExtractLimits,
    RepoFile,
    SkippedFile,
    extract_repo,
    files_table,
    iter_repo_files,
    skipped_table,
)
from codemill.crawl.repo_language import bytes_by_extension, bytes_by_language, main_language
from codemill.crawl.schema import FILES_SCHEMA, SKIPPED_SCHEMA, make_doc_id

PY_SOURCE = b"def add(a, b):\n    return a + b\n"
LATIN1_TEXT = "# Größe und Maße: café\nx = 1\n"
UTF16_TEXT = "// héllo wörld\nint main() { return 0; }\n"


def tree_snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **attrs) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in attrs.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def by_path(records) -> dict[str, str]:
    """path -> encoding for kept files, path -> reason for skipped ones."""
    return {r.path: (r.encoding if isinstance(r, RepoFile) else r.reason) for r in records}


@pytest.fixture()
def hostile_tarball(tmp_path: Path) -> tuple[Path, Path]:
    """A GitHub-style tarball (one top folder) that tries every trick; returns (archive, outside target)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = tmp_path / "repo" / "hostile.tar.gz"
    archive.parent.mkdir()
    top = "octo-demo-0123abc"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, top + "/", type=tarfile.DIRTYPE)
        add_member(tar, f"{top}/src/good.py", PY_SOURCE)
        add_member(tar, f"{top}/../../outside/escape.py", PY_SOURCE)
        add_member(tar, "../outside/escape2.py", PY_SOURCE)
        add_member(tar, str(outside / "absolute.py"), PY_SOURCE)
        add_member(tar, f"{top}/passwd", type=tarfile.SYMTYPE, linkname="/etc/passwd")
        add_member(tar, f"{top}/hard", type=tarfile.LNKTYPE, linkname=f"{top}/src/good.py")
        add_member(tar, f"{top}/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3)
        add_member(tar, f"{top}/disk", type=tarfile.BLKTYPE, devmajor=8, devminor=0)
        add_member(tar, f"{top}/pipe", type=tarfile.FIFOTYPE)
        add_member(tar, f"{top}/big.py", b"x = 1\n" * 400)  # 2,400 bytes, over the 2,000-byte cap below
        add_member(tar, f"{top}/logo.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
        add_member(tar, f"{top}/latin1.py", LATIN1_TEXT.encode("latin-1"))
        add_member(tar, f"{top}/wide.c", UTF16_TEXT.encode("utf-16"))
        add_member(tar, f"{top}/.git/config", b"[core]\n")
        add_member(tar, f"{top}/.git/HEAD", b"ref: refs/heads/main\n")
        add_member(tar, f"{top}/web/node_modules/left-pad/index.js", b"module.exports = 1;\n")
        add_member(tar, f"{top}/web/node_modules/left-pad/package.json", b"{}\n")
        add_member(tar, f"{top}/web/app.js", b"console.log(1);\n")
    return archive, outside


def test_hostile_tarball_records_every_skip_and_writes_nothing(hostile_tarball, tmp_path):
    archive, outside = hostile_tarball
    before = tree_snapshot(tmp_path)
    records = list(iter_repo_files(str(archive), "octo/demo", ExtractLimits(max_file_bytes=2000)))
    assert tree_snapshot(tmp_path) == before  # nothing written, inside or outside
    assert by_path(records) == {
        "src/good.py": "utf-8",
        "octo-demo-0123abc/../../outside/escape.py": "path_traversal",
        "../outside/escape2.py": "path_traversal",
        str(outside / "absolute.py"): "absolute_path",
        "passwd": "symlink",
        "hard": "hardlink",
        "null": "special_file",
        "disk": "special_file",
        "pipe": "special_file",
        "big.py": "file_size_cap",
        "logo.png": "binary",
        "latin1.py": "cp1252",
        "wide.c": "utf-16",
        ".git/": "excluded_dir",
        "web/node_modules/": "excluded_dir",
        "web/app.js": "utf-8",
    }
    assert len(records) == 16  # one record per excluded folder, not one per file inside it
    kept = {r.path: r for r in records if isinstance(r, RepoFile)}
    assert kept["latin1.py"].content == LATIN1_TEXT
    assert kept["wide.c"].content == UTF16_TEXT
    assert kept["src/good.py"].content == PY_SOURCE.decode()


def test_file_records_keep_the_stored_bytes_identity(hostile_tarball):
    archive, _ = hostile_tarball
    files = extract_repo(str(archive), "octo/demo").files
    wide = next(f for f in files if f.path == "wide.c")
    stored = UTF16_TEXT.encode("utf-16")
    assert wide.size_bytes == len(stored)
    assert wide.sha256 == hashlib.sha256(stored).hexdigest()
    assert wide.doc_id == make_doc_id("octo/demo", "wide.c", wide.sha256)
    assert wide.ext == ".c" and wide.repo == "octo/demo"


def test_huge_member_is_never_read_into_memory(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    huge = 16 * 1024 * 1024
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("r/zeros.py")
        info.size = huge
        tar.addfile(info, io.BufferedReader(io.BytesIO(bytes(huge))))
        add_member(tar, "r/after.py", PY_SOURCE)
    assert archive.stat().st_size < huge // 100  # a decompression bomb in miniature
    tracemalloc.start()
    try:
        records = list(iter_repo_files(str(archive), "o/bomb"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert by_path(records) == {"zeros.py": "file_size_cap", "after.py": "utf-8"}
    assert peak < 2 * 1024 * 1024  # tarfile's own "r|gz" mode peaks at about 30 MiB on this archive


def test_repo_size_cap_stops_reading_and_records_once(tmp_path):
    archive = tmp_path / "big.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(10):
            add_member(tar, f"p/f{i}.py", PY_SOURCE)
    limits = ExtractLimits(max_repo_bytes=3 * (512 + len(PY_SOURCE)))  # a tar member's header counts too
    records = list(iter_repo_files(str(archive), "o/big", limits))
    assert by_path(records) == {"f0.py": "utf-8", "f1.py": "utf-8", "f2.py": "utf-8", "p/f3.py": "repo_size_cap"}


def test_member_count_cap(tmp_path):
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(10):
            add_member(tar, f"m{i}.txt", b"hello\n")
    records = list(iter_repo_files(str(archive), "o/many", ExtractLimits(max_members=4)))
    assert [r.path for r in records] == ["m0.txt", "m1.txt", "m2.txt", "m3.txt", "m4.txt"]
    assert records[-1] == SkippedFile("o/many", "m4.txt", "member_count_cap")


def test_top_folder_is_kept_unless_every_member_shares_it(tmp_path):
    mixed = tmp_path / "mixed.tar.gz"
    with tarfile.open(mixed, "w:gz") as tar:
        add_member(tar, "./src/a.py", PY_SOURCE)
        add_member(tar, "./README", b"readme\n")
    assert sorted(f.path for f in extract_repo(str(mixed), "o/mixed").files) == ["README", "src/a.py"]
    late = tmp_path / "late.zip"  # the member that disproves the top folder comes last
    with zipfile.ZipFile(late, "w") as zf:
        for i in range(20):
            zf.writestr(f"pkg/m{i:02d}.py", PY_SOURCE)
        zf.writestr("setup.py", PY_SOURCE)
    paths = [f.path for f in extract_repo(str(late), "o/late").files]
    assert paths == [f"pkg/m{i:02d}.py" for i in range(20)] + ["setup.py"]
    shared = tmp_path / "shared.zip"
    with zipfile.ZipFile(shared, "w") as zf:
        zf.writestr("pkg/a.py", PY_SOURCE)
        zf.writestr("pkg/sub/b.py", PY_SOURCE)
    assert [f.path for f in extract_repo(str(shared), "o/shared").files] == ["a.py", "sub/b.py"]


def test_tarball_cut_inside_a_member_ends_with_an_archive_error(tmp_path):
    whole = tmp_path / "whole.tar.gz"
    with tarfile.open(whole, "w:gz") as tar:
        add_member(tar, "r/a.py", PY_SOURCE)
        add_member(tar, "r/b.py", os.urandom(200_000).hex().encode())
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    result = extract_repo(str(truncated), "o/cut")
    assert [f.path for f in result.files] == ["a.py"]
    # The member cut in half cannot be read, and the archive ends there.
    assert [(s.path, s.reason) for s in result.skipped] == [("b.py", "read_error"), ("r/b.py", "archive_error")]


def test_not_an_archive_at_all_is_recorded(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"this is not a zip file")
    assert list(iter_repo_files(str(fake), "o/fake")) == [SkippedFile("o/fake", "", "archive_error")]


def patch_zip_headers(archive: Path, name: str, local_offset: int, central_offset: int, value: bytes) -> None:
    """Overwrite one field of `name`'s local header and central directory entry (zipfile writes only
    honest archives)."""
    raw = bytearray(archive.read_bytes())
    info = zipfile.ZipFile(archive).getinfo(name)
    start = info.header_offset + local_offset
    raw[start:start + len(value)] = value
    entry = raw.index(b"PK\x01\x02")  # central directory entries: signature, 42 bytes, file name
    while not raw[entry + 46:].startswith(name.encode()):
        entry = raw.index(b"PK\x01\x02", entry + 4)
    raw[entry + central_offset:entry + central_offset + len(value)] = value
    archive.write_bytes(bytes(raw))


def mark_zip_member_encrypted(archive: Path, name: str) -> None:
    patch_zip_headers(archive, name, 6, 8, (0x1).to_bytes(2, "little"))


def test_hostile_zip(tmp_path):
    archive = tmp_path / "hostile.zip"
    outside = tmp_path / "outside"
    outside.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("demo-main/lib/util.py", PY_SOURCE)
        zf.writestr("demo-main/../outside/escape.py", PY_SOURCE)
        zf.writestr("demo-main\\..\\..\\outside\\escape_win.py", PY_SOURCE)
        zf.writestr(str(outside / "absolute.py"), PY_SOURCE)
        zf.writestr("C:/Windows/evil.py", PY_SOURCE)
        link = zipfile.ZipInfo("demo-main/link")
        link.create_system = 3
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "/etc/passwd")
        fifo = zipfile.ZipInfo("demo-main/fifo")
        fifo.create_system = 3
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        zf.writestr(fifo, "")
        zf.writestr("demo-main/secret.py", PY_SOURCE)
        zf.writestr("demo-main/vendor/lib.go", b"package lib\n")
        zf.writestr("demo-main/data.bin", bytes(range(256)) * 4)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("demo-main/lib/util.py", b"# a second copy\n")
    mark_zip_member_encrypted(archive, "demo-main/secret.py")
    before = tree_snapshot(tmp_path)
    records = list(iter_repo_files(str(archive), "demo/zip"))
    assert tree_snapshot(tmp_path) == before
    assert [(r.path, r.reason) for r in records if isinstance(r, SkippedFile)] == [
        ("demo-main/../outside/escape.py", "path_traversal"),
        ("demo-main\\..\\..\\outside\\escape_win.py", "path_traversal"),
        (str(outside / "absolute.py"), "absolute_path"),
        ("C:/Windows/evil.py", "absolute_path"),
        ("link", "symlink"),
        ("fifo", "special_file"),
        ("secret.py", "encrypted"),
        ("vendor/", "excluded_dir"),
        ("data.bin", "binary"),
        ("lib/util.py", "duplicate_path"),
    ]
    [kept] = [r for r in records if isinstance(r, RepoFile)]
    assert (kept.path, kept.content) == ("lib/util.py", PY_SOURCE.decode())


def test_zip_member_that_lies_about_its_size_is_refused(tmp_path):
    archive = tmp_path / "liar.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("liar.py", b"y = 2\n" * 100_000)
    # Declare an uncompressed size of 10 bytes, in the local header and the central directory.
    patch_zip_headers(archive, "liar.py", 22, 24, (10).to_bytes(4, "little"))
    assert list(iter_repo_files(str(archive), "o/liar")) == [SkippedFile("o/liar", "liar.py", "read_error")]


def test_folder_never_follows_links_and_skips_excluded_folders(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("password = hunter2\n")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "stolen.py").write_bytes(PY_SOURCE)
    repo = tmp_path / "site-packages" / "mypkg"  # a package crawled as its own repository
    (repo / "sub").mkdir(parents=True)
    (repo / "__init__.py").write_bytes(PY_SOURCE)
    (repo / "sub" / "mod.py").write_bytes(PY_SOURCE)
    (repo / "sub" / "notes.txt").write_bytes(LATIN1_TEXT.encode("latin-1"))
    (repo / "secret_link.txt").symlink_to(secret)
    (repo / "dir_link").symlink_to(outside_dir, target_is_directory=True)
    os.mkfifo(repo / "queue")
    (repo / ".git" / "objects").mkdir(parents=True)
    (repo / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (repo / "sub" / "__pycache__").mkdir()
    (repo / "sub" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\x00" * 16)
    (repo / "icon.ico").write_bytes(b"\x00\x00\x01\x00" * 8)
    before = tree_snapshot(tmp_path)
    records = list(iter_repo_files(str(repo), "local/mypkg"))
    assert tree_snapshot(tmp_path) == before
    assert [(r.path, r.encoding if isinstance(r, RepoFile) else r.reason) for r in records] == [
        (".git/", "excluded_dir"),
        ("__init__.py", "utf-8"),
        ("dir_link", "symlink"),
        ("icon.ico", "binary"),
        ("queue", "special_file"),
        ("secret_link.txt", "symlink"),
        ("sub/__pycache__/", "excluded_dir"),
        ("sub/mod.py", "utf-8"),
        ("sub/notes.txt", "cp1252"),
    ]


def test_excluded_folders_are_configurable(tmp_path):
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "x.go").write_text("package x\n")
    (tmp_path / "gen").mkdir()
    (tmp_path / "gen" / "y.go").write_text("package y\n")
    records = list(iter_repo_files(str(tmp_path), "o/cfg", ExtractLimits(excluded_dirs=["GEN"])))
    assert by_path(records) == {"gen/": "excluded_dir", "vendor/x.go": "utf-8"}


def test_names_that_are_not_utf8_are_recorded_printably(tmp_path):
    archive = tmp_path / "legacy.tar"
    with tarfile.open(archive, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:  # caf\xe9.py
        add_member(tar, "café.py", PY_SOURCE)
        add_member(tar, "ok.py", PY_SOURCE)
    folder = tmp_path / "folder"
    folder.mkdir()
    Path(os.fsdecode(bytes(folder) + b"/caf\xe9.py")).write_bytes(PY_SOURCE)
    for path in (archive, folder):
        result = extract_repo(str(path), "o/legacy")
        assert [f.path for f in result.files] == (["ok.py"] if path == archive else [])
        assert [(s.path, s.reason) for s in result.skipped] == [("caf\\udce9.py", "path_encoding")]
        skipped_table(result.skipped)  # storable


def test_deep_folders_do_not_exhaust_the_stack(tmp_path):
    levels = 1200  # past Python's recursion limit; built and removed one level at a time, because
    repo = deep = str(tmp_path / "deep")  # os.makedirs and shutil.rmtree (pytest's cleanup) recurse
    os.mkdir(repo)
    for _ in range(levels):
        deep += "/d"
        os.mkdir(deep)
    leaf_file = Path(deep, "leaf.py")
    leaf_file.write_bytes(PY_SOURCE)
    try:
        [leaf] = extract_repo(repo, "o/deep").files
        assert leaf.path == "d/" * levels + "leaf.py"
    finally:
        leaf_file.unlink()
        for _ in range(levels + 1):
            os.rmdir(deep)
            deep = os.path.dirname(deep)


def test_excluded_dirs_must_be_folder_names():
    with pytest.raises(ValueError, match="not paths"):
        ExtractLimits(excluded_dirs=["src/vendor"])


def test_unsupported_path_is_a_caller_error(tmp_path):
    plain = tmp_path / "file.py"
    plain.write_bytes(PY_SOURCE)
    with pytest.raises(ValueError, match="neither a folder nor an archive"):
        list(iter_repo_files(str(plain), "o/x"))


# --- decoding ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("data, text, encoding", [
    (b"plain ascii\n", "plain ascii\n", "utf-8"),
    ("naïve – ünïcode\n".encode(), "naïve – ünïcode\n", "utf-8"),
    (codecs.BOM_UTF8 + b"x = 1\n", "x = 1\n", "utf-8-sig"),
    ("x = 'é'\n".encode("utf-16-le").join([codecs.BOM_UTF16_LE, b""]), "x = 'é'\n", "utf-16"),
    ("x = 'é'\n".encode("utf-16-be").join([codecs.BOM_UTF16_BE, b""]), "x = 'é'\n", "utf-16"),
    ("Ça coûte 5 € — déjà vu\n".encode("cp1252"), "Ça coûte 5 € — déjà vu\n", "cp1252"),
    (b"", "", "utf-8"),
    (b"\x1b[31mred\x1b[0m\tand\fform feed\r\n", "\x1b[31mred\x1b[0m\tand\fform feed\r\n", "utf-8"),
])
def test_decode_text(data, text, encoding):
    assert decode_text(data) == (text, encoding)


@pytest.mark.parametrize("data, reason", [
    (b"MZ\x90\x00\x03", "binary"),
    (bytes(range(1, 32)) * 10, "binary"),                          # control bytes, no NUL
    ("// 中文注释：计算两个数的和\nint add();\n".encode("gbk"), "decode"),  # long runs of high bytes
    (b"x = '\x81\x8d'\n", "decode"),                               # bytes cp1252 leaves undefined
    ("x = 1\n".encode("utf-32"), "decode"),                        # UTF-32 looks like UTF-16 at first
])
def test_not_text(data, reason):
    with pytest.raises(NotText, match=f"^{reason}$") as exc:
        decode_text(data)
    assert exc.value.reason == reason


def test_binary_sniff_looks_at_the_start_only():
    assert not looks_binary(b"a" * 9000 + b"\x00")
    assert looks_binary(b"a" * 100 + b"\x00")


# --- tables ---------------------------------------------------------------------------------------

def test_tables_follow_the_schemas(hostile_tarball):
    archive, _ = hostile_tarball
    result = extract_repo(str(archive), "octo/demo")
    files = files_table(result.files, repo_stars=42, repo_language="Python")
    skipped = skipped_table(result.skipped)
    assert files.schema == FILES_SCHEMA and skipped.schema == SKIPPED_SCHEMA
    assert files.num_rows == len(result.files) == 5
    assert set(files.column("repo_stars").to_pylist()) == {42}
    assert set(files.column("repo_language").to_pylist()) == {"Python"}
    assert files.column("doc_id").to_pylist() == [f.doc_id for f in result.files]
    assert skipped.num_rows == len(result.skipped)
    assert files_table([], None, None).num_rows == 0
    assert isinstance(skipped, pa.Table)


# --- main language --------------------------------------------------------------------------------

def repo_file(path: str, size: int) -> RepoFile:
    return RepoFile("o/r", path, "x" * size, size, "0" * 64, "utf-8")


def test_main_language_is_the_one_with_most_bytes():
    files = [repo_file("a.py", 500), repo_file("b.PY", 200), repo_file("c.js", 600), repo_file("README.md", 9000)]
    assert bytes_by_extension(files) == {".py": 700, ".js": 600, ".md": 9000}
    assert main_language(bytes_by_extension(files)) == "Python"


def test_headers_follow_the_c_family_language_present():
    assert bytes_by_language({".h": 5000, ".cpp": 100}) == {"C++": 5100}
    assert main_language({".h": 5000, ".cpp": 100, ".py": 3000}) == "C++"
    assert main_language({".h": 5000, ".c": 100, ".cpp": 50, ".py": 3000}) == "C"
    assert main_language({".h": 5000, ".m": 100, ".py": 3000}) == "Objective-C"
    assert main_language({".h": 5000, ".py": 3000}) == "C"  # header-only library


def test_main_language_ties_hint_and_none():
    assert main_language({".java": 100, ".py": 100}) == "Python"  # tie: the larger corpus share
    assert main_language({".md": 100, ".txt": 50}) is None
    assert main_language({".py": 100}, repo_hint="Jupyter Notebook") == "Python"
    assert main_language({".py": 100}, repo_hint="Vim Script") == "Vim Script"


# --- hostile tar headers, damaged tars, hostile zips (issue 10 items 2, 4, 8) ---------------------------

def tar_header(name: str, kind: bytes, size: int, fmt=tarfile.GNU_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type = size, kind
    return info.tobuf(format=fmt)


def tar_member(name: str, data: bytes) -> bytes:
    return tar_header(name, tarfile.REGTYPE, len(data), tarfile.USTAR_FORMAT) + data + bytes(-len(data) % 512)


END_OF_ARCHIVE = bytes(1024)


def test_pax_records_are_parsed_in_linear_time(tmp_path, monkeypatch):
    """CPython's pax parsing is quadratic on digits (CVE-2024-6232): 60,000 digits took 12 s. The reader
    parses pax records itself, and tarfile's header parsing is never reached."""
    digits = b"1" * 60_000
    archive = tmp_path / "digits.tar"
    archive.write_bytes(tar_header("pax", tarfile.XHDTYPE, len(digits)) + digits + bytes(-len(digits) % 512)
                        + tar_member("a.py", PY_SOURCE) + END_OF_ARCHIVE)
    for name in ("_proc_pax", "_proc_gnulong", "frombuf"):
        monkeypatch.setattr(tarfile.TarInfo, name, lambda *a, **k: pytest.fail("tarfile parsed a header"))
    started = time.monotonic()
    assert list(iter_repo_files(str(archive), "o/d")) == [SkippedFile("o/d", "", "archive_error")]
    assert time.monotonic() - started < 5
    honest = tmp_path / "honest.tar"  # real pax and GNU headers still work
    with tarfile.open(honest, "w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "r/" + "long_folder_name/" * 12 + "deep.py", PY_SOURCE)
        add_member(tar, "r/caf\u00e9.py", PY_SOURCE, pax_headers={"comment": "x" * 300})
    with tarfile.open(tmp_path / "gnu.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        add_member(tar, "r/" + "n" * 200 + ".py", PY_SOURCE)
        add_member(tar, "r/link", type=tarfile.SYMTYPE, linkname="t" * 200)
    assert by_path(iter_repo_files(str(honest), "o/h")) == {"long_folder_name/" * 12 + "deep.py": "utf-8",
                                                            "caf\u00e9.py": "utf-8"}
    assert by_path(iter_repo_files(str(tmp_path / "gnu.tar"), "o/g")) == {"n" * 200 + ".py": "utf-8",
                                                                          "link": "symlink"}


def test_every_member_type_counts_toward_the_repository_cap(tmp_path):
    """Only regular files counted: 10 MiB of an unknown member type passed any max_repo_bytes."""
    archive = tmp_path / "odd.tar.gz"
    with gzip.open(archive, "wb") as f:
        f.write(tar_header("r/blob", b"Z", 10 << 20, tarfile.USTAR_FORMAT) + bytes(10 << 20))
        f.write(tar_member("r/after.py", PY_SOURCE) + END_OF_ARCHIVE)
    records = list(iter_repo_files(str(archive), "o/odd", ExtractLimits(max_repo_bytes=1 << 20)))
    assert records == [SkippedFile("o/odd", "r/blob", "repo_size_cap")]
    with_room = list(iter_repo_files(str(archive), "o/odd", ExtractLimits(max_repo_bytes=20 << 20)))
    assert by_path(with_room) == {"blob": "special_file", "after.py": "utf-8"}


def damaged_tars() -> dict[str, bytes]:
    members = tar_member("r/a.py", PY_SOURCE) + tar_member("r/b.py", PY_SOURCE)
    second = len(tar_member("r/a.py", PY_SOURCE))
    bad_checksum = bytearray(members)
    bad_checksum[second + 10] ^= 0x55  # a byte of the second header's name
    return {
        "cut at a header boundary": members,
        "cut after the first member": members[:second],
        "bad checksum mid-archive": bytes(bad_checksum) + END_OF_ARCHIVE,
        "garbage header mid-archive": members[:second] + b"\xde\xad" * 256 + members[second:] + END_OF_ARCHIVE,
        "cut inside a header": members[:second + 100],
    }


@pytest.mark.parametrize("damage", list(damaged_tars()))
def test_damaged_tars_end_with_an_archive_error(tmp_path, damage):
    """These yielded the files before the damage with no record (tarfile stops silently)."""
    archive = tmp_path / "damaged.tar"
    archive.write_bytes(damaged_tars()[damage])
    records = list(iter_repo_files(str(archive), "o/d"))
    assert records[-1].reason == "archive_error", records
    whole = tmp_path / "whole.tar"
    whole.write_bytes(tar_member("r/a.py", PY_SOURCE) + tar_member("r/b.py", PY_SOURCE) + END_OF_ARCHIVE)
    assert by_path(iter_repo_files(str(whole), "o/w")) == {"a.py": "utf-8", "b.py": "utf-8"}


def test_zip_announcing_too_many_entries_is_refused_before_its_directory_is_read(tmp_path, monkeypatch):
    """A 1M-entry zip was parsed whole (zipfile reads the central directory) before the member cap."""
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i in range(3):
            zf.writestr(f"m{i}.py", PY_SOURCE)
    raw = bytearray(archive.read_bytes())
    eocd = raw.rindex(b"PK\x05\x06")
    raw[eocd + 8:eocd + 12] = (1_000_000 & 0xFFFF).to_bytes(2, "little") * 2  # entries announced
    announced = tmp_path / "announced.zip"
    announced.write_bytes(bytes(raw))
    monkeypatch.setattr(zipfile.ZipFile, "__init__", lambda *a, **k: pytest.fail("the directory was parsed"))
    assert list(iter_repo_files(str(announced), "o/z", ExtractLimits(max_members=1000))) == [
        SkippedFile("o/z", "", "member_count_cap")]
    monkeypatch.undo()
    real = tmp_path / "real.zip"  # a real one, 20,000 entries, against a cap of 100: small peak memory
    with zipfile.ZipFile(real, "w") as zf:
        for i in range(20_000):
            zf.writestr(f"m{i}.txt", b"")
    tracemalloc.start()
    try:
        records = list(iter_repo_files(str(real), "o/r", ExtractLimits(max_members=100)))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records == [SkippedFile("o/r", "", "member_count_cap")] and peak < 1 << 20


def test_a_folder_swapped_for_a_symlink_after_listing_is_not_followed(tmp_path):
    """The walk listed `b/` as a folder, then followed the symlink that replaced it to files outside."""
    repo = tmp_path / "repo"
    (repo / "b").mkdir(parents=True)
    (repo / "a.py").write_bytes(PY_SOURCE)
    (repo / "b" / "inner.py").write_bytes(PY_SOURCE)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_bytes(b"TOKEN = 'outside the repository'\n")
    records = []
    for record in iter_repo_files(str(repo), "o/swap"):
        records.append(record)
        if record.path == "a.py":  # the root is listed; now swap b/ for a link to outside/
            (repo / "b").rename(tmp_path / "b-moved")
            (repo / "b").symlink_to(outside, target_is_directory=True)
    assert by_path(records) == {"a.py": "utf-8", "b": "symlink"}
    assert not any(b"outside the repository" in r.content.encode() for r in records if isinstance(r, RepoFile))


def test_a_file_swapped_for_a_symlink_after_listing_is_not_read(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_bytes(PY_SOURCE)
    (repo / "b.py").write_bytes(PY_SOURCE)
    (tmp_path / "secret.py").write_bytes(PY_SOURCE)
    records = []
    for record in iter_repo_files(str(repo), "o/swap"):
        records.append(record)
        if record.path == "a.py":
            (repo / "b.py").unlink()
            (repo / "b.py").symlink_to(tmp_path / "secret.py")
    assert by_path(records) == {"a.py": "utf-8", "b.py": "symlink"}
