"""Language identification: by suffix, ambiguous suffixes by the repository's main language, the
configurable language list, and the `language` reason of the filter."""

from __future__ import annotations

import pyarrow as pa
import pytest

from codemill.config import build_config
from codemill.filter import rules
from codemill.filter.config import FilterConfig
from codemill.filter.langid import identify_languages, language_of
from codemill.languages import AMBIGUOUS_EXTENSIONS, EXTENSION_TO_LANGUAGE, LANGUAGE_NAMES

ALL = LANGUAGE_NAMES


@pytest.mark.parametrize("ext, language", [
    (".py", "Python"), (".PY", "Python"), (".pyi", "Python"), (".cc", "C++"), (".hpp", "C++"), (".c", "C"),
    (".java", "Java"), (".ts", "TypeScript"), (".go", "Go"), (".rs", "Rust"), (".cu", "Cuda"), (".cs", "C#"),
    (".m", "Objective-C"), (".mm", "Objective-C++"), (".f90", "Fortran"), (".r", "R"), (".R", "R"),
    (".sh", "Shell"), (".sql", "SQL"), (".tex", "TeX"), (".kt", "Kotlin"), (".pas", "Pascal"),
])
def test_unambiguous_suffixes(ext, language):
    assert language_of(ext, None, ALL) == language
    assert language_of(ext, "Java", ALL) == language  # the repository's language does not override a suffix


@pytest.mark.parametrize("repo_language, language", [
    ("C++", "C++"), ("C", "C"), ("Objective-C", "Objective-C"), ("Objective-C++", "Objective-C++"),
    ("CUDA", "Cuda"),  # GitHub's spelling
    ("Python", "C"), (None, "C"), ("", "C"),
])
def test_header_takes_the_repository_language(repo_language, language):
    assert language_of(".h", repo_language, ALL) == language


@pytest.mark.parametrize("ext", [".md", ".json", ".txt", ".yaml", ".proto", "", ".pyc", ".hs"])
def test_other_suffixes_have_no_language(ext):
    assert language_of(ext, "Python", ALL) is None


def test_language_list_is_configurable():
    assert language_of(".js", None, ["Python"]) is None
    assert language_of(".py", None, ["Python"]) == "Python"
    assert language_of(".h", "C++", ["C"]) is None  # C++ by its repository, and C++ is not wanted


def test_vectorised_identification_agrees_with_the_scalar_one():
    exts = sorted(EXTENSION_TO_LANGUAGE) + list(AMBIGUOUS_EXTENSIONS) + [".md", "", ".H", None]
    repo_languages = [None, "C++", "CUDA", "Python", "Makefile"]
    ext_col = [e for e in exts for _ in repo_languages]
    repo_col = [r for _ in exts for r in repo_languages]
    for languages in (ALL, ("C", "Python")):
        got = identify_languages(pa.array(ext_col, pa.string()), pa.array(repo_col, pa.string()), languages)
        assert got.to_pylist() == [language_of(e, r, languages) for e, r in zip(ext_col, repo_col)]


def test_vectorised_identification_of_chunked_columns():
    ext = pa.chunked_array([pa.array([".h", ".py"]), pa.array([".h"])])
    repo = pa.chunked_array([pa.array(["C++", None]), pa.array(["C"])])
    assert identify_languages(ext, repo, ALL).to_pylist() == ["C++", "Python", "C"]


def test_filter_drops_unidentified_files_with_reason_language():
    content = "int add(int a, int b) { return a + b; }\n" * 40
    table = pa.table({
        "doc_id": ["1", "2", "3", "4"], "repo": ["o/r"] * 4,
        "path": ["inc/a.h", "inc/b.h", "README.md", "src/a.js"], "ext": [".h", ".h", ".md", ".js"],
        "content": [content] * 4, "size_bytes": [len(content)] * 4, "sha256": ["0"] * 4,
        "encoding": ["utf-8"] * 4, "repo_stars": [1] * 4, "repo_language": ["C++", "C", "C++", "C++"],
    })
    decided = rules.decide(table, FilterConfig())
    assert decided.column("language").to_pylist() == ["C++", "C", None, "JavaScript"]
    assert decided.column("reason").to_pylist() == [None, None, "language", None]
    only_cpp = rules.decide(table, build_config(FilterConfig, {"languages": ["C++"]}))
    assert only_cpp.column("reason").to_pylist() == [None, "language", "language", "language"]
