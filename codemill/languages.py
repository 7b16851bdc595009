"""The 23 languages of CodeGeeX's corpus (SPEC §2): their tag lines, corpus shares and file suffixes.

Shared by the filter (language identification), tokenize (the tag that starts every segment) and
eval (the tag line before each HumanEval-X prompt).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    name: str
    tag: str              # the tag line, without its newline
    corpus_tokens_b: float  # billions of tokens in CodeGeeX's 158.7B-token corpus
    extensions: tuple[str, ...]


LANGUAGES: tuple[Language, ...] = (
    Language("C++", "// language: C++", 45.2283,
             (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".ipp", ".tpp", ".inl")),
    Language("Python", "# language: Python", 42.3250, (".py", ".pyw", ".pyi")),
    Language("Java", "// language: Java", 25.3667, (".java",)),
    Language("JavaScript", "// language: JavaScript", 11.3165, (".js", ".mjs", ".cjs", ".jsx")),
    Language("C", "// language: C", 10.6590, (".c",)),
    Language("Go", "// language: Go", 7.4774, (".go",)),
    Language("HTML", "<!--language: HTML-->", 4.9355, (".html", ".htm", ".xhtml")),
    Language("Shell", "# language: Shell", 2.7498, (".sh", ".bash", ".zsh", ".ksh")),
    Language("PHP", "// language: PHP", 2.1698, (".php", ".phtml")),
    Language("CSS", "/* language: CSS */", 1.5674, (".css",)),
    Language("TypeScript", "// language: TypeScript", 1.1667, (".ts", ".tsx", ".mts", ".cts")),
    Language("SQL", "-- language: SQL", 1.1533, (".sql",)),
    Language("TeX", "% language: TeX", 0.8257, (".tex", ".sty", ".cls")),
    Language("Rust", "// language: Rust", 0.5228, (".rs",)),
    Language("Objective-C", "// language: Objective-C", 0.4526, (".m",)),
    Language("Scala", "// language: Scala", 0.3786, (".scala", ".sc")),
    Language("Kotlin", "// language: Kotlin", 0.1707, (".kt", ".kts")),
    Language("Pascal", "// language: Pascal", 0.0839, (".pas", ".pp", ".dpr", ".lpr")),
    Language("Fortran", "!language: Fortran", 0.0770, (".f", ".for", ".f77", ".f90", ".f95", ".f03", ".f08")),
    Language("R", "# language: R", 0.0447, (".r",)),
    Language("Cuda", "// language: Cuda", 0.0223, (".cu", ".cuh")),
    Language("C#", "// language: C#", 0.0218, (".cs",)),
    Language("Objective-C++", "// language: Objective-C++", 0.0014, (".mm",)),
)

BY_NAME: dict[str, Language] = {lang.name: lang for lang in LANGUAGES}
LANGUAGE_NAMES: tuple[str, ...] = tuple(lang.name for lang in LANGUAGES)

# Suffix -> language for suffixes that name one language. Lookups use the lower-cased suffix.
EXTENSION_TO_LANGUAGE: dict[str, str] = {ext: lang.name for lang in LANGUAGES for ext in lang.extensions}

# Suffixes shared by several languages: the repository's main language decides (SPEC §1: "a .h file in a
# C++ repository is C++"); the first entry is the answer when the main language is none of them.
AMBIGUOUS_EXTENSIONS: dict[str, tuple[str, ...]] = {
    ".h": ("C", "C++", "Objective-C", "Objective-C++", "Cuda"),
}

# GitHub's names for some languages differ from the paper's.
GITHUB_LANGUAGE_ALIASES: dict[str, str] = {
    "Cuda": "Cuda", "CUDA": "Cuda", "Jupyter Notebook": "Python", "Vue": "JavaScript",
    "Objective-C++": "Objective-C++", "TSQL": "SQL", "PLpgSQL": "SQL", "PLSQL": "SQL",
    "Dockerfile": "Shell", "Makefile": "Makefile",
}


def normalize_language(name: str | None) -> str | None:
    """A GitHub (or linguist) language name in the paper's spelling; unknown names pass through."""
    if not name:
        return None
    return GITHUB_LANGUAGE_ALIASES.get(name, name)


def tag_line(language: str) -> str:
    """The tag line that starts every training segment and every prompt, newline included."""
    return BY_NAME[language].tag + "\n"


def corpus_share(language: str) -> float:
    total = sum(lang.corpus_tokens_b for lang in LANGUAGES)
    return BY_NAME[language].corpus_tokens_b / total
