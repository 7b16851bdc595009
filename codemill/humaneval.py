"""HumanEval-X problems: the shipped data (`data/humaneval-x/`) and any JSON Lines file of the same shape.

Used by dedup (decontamination) and eval (prompts, tests, canonical solutions).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The folder of the data that ships with the repository (SPEC §8; its README keeps the licence).
DATA_DIR = Path(__file__).resolve().parents[1] / "data" / "humaneval-x"
# HumanEval-X's folder names and codemill's language names (SPEC §2 tags).
LANGUAGE_DIRS = {"python": "Python", "cpp": "C++", "java": "Java", "js": "JavaScript", "go": "Go"}


def language_file(lang_dir: str, data_dir: str | Path = DATA_DIR) -> Path:
    """`python` -> data/humaneval-x/python/humaneval_python.jsonl.gz."""
    if lang_dir not in LANGUAGE_DIRS:
        raise ValueError(f"unknown HumanEval-X language {lang_dir!r}; known: {', '.join(LANGUAGE_DIRS)}")
    return Path(data_dir) / lang_dir / f"humaneval_{lang_dir}.jsonl.gz"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every record of one JSON Lines file (.gz or plain); records without `task_id` get `<file>:<line>`."""
    records = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(Path(path), "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            record.setdefault("task_id", f"{Path(path).name}:{line_no}")
            records.append(record)
    return records


def read_problems(paths: list[str], fields: list[str]) -> list[tuple[str, str]]:
    """(task_id, the given fields joined by newlines) of every record of the given files."""
    return [(str(r["task_id"]), "\n".join(str(r.get(k) or "") for k in fields))
            for path in paths for r in read_records(path)]


def problem_number(task_id: str) -> str:
    """'CPP/12' -> '12': the same problem in every language."""
    return task_id.rsplit("/", 1)[-1]


# Task id prefixes in the data ("CPP/12") for each folder.
TASK_PREFIXES = {"python": "Python", "cpp": "CPP", "java": "Java", "js": "JavaScript", "go": "Go"}
PREFIX_TO_DIR = {v: k for k, v in TASK_PREFIXES.items()}


@dataclass(frozen=True)
class Problem:
    """One HumanEval-X problem in one language (SPEC §8 fields; absent ones are empty strings)."""

    task_id: str
    language: str        # codemill's name: Python, C++, Java, JavaScript, Go
    prompt: str
    declaration: str
    canonical_solution: str
    test: str
    example_test: str = ""
    import_: str = ""    # Go: the prompt's import block
    test_setup: str = ""  # Go: `package main` and the test imports

    @property
    def number(self) -> int:
        return int(problem_number(self.task_id))

    @classmethod
    def from_record(cls, record: dict[str, Any], language: str) -> Problem:
        get = lambda k: str(record.get(k) or "")  # noqa: E731
        return cls(task_id=str(record["task_id"]), language=language, prompt=get("prompt"),
                   declaration=get("declaration"), canonical_solution=get("canonical_solution"), test=get("test"),
                   example_test=get("example_test"), import_=get("import"), test_setup=get("test_setup"))


def language_of_task(task_id: str) -> str:
    """'CPP/12' -> 'C++'."""
    prefix = task_id.rsplit("/", 1)[0]
    if prefix not in PREFIX_TO_DIR:
        raise ValueError(f"task id {task_id!r}: unknown language prefix; known: {', '.join(PREFIX_TO_DIR)}")
    return LANGUAGE_DIRS[PREFIX_TO_DIR[prefix]]


def task_id_for(language: str, number: int) -> str:
    """('C++', 12) -> 'CPP/12'."""
    lang_dir = {v: k for k, v in LANGUAGE_DIRS.items()}[language]
    return f"{TASK_PREFIXES[lang_dir]}/{number}"


def load_problems(languages: list[str] | None = None, data_dir: str | Path = DATA_DIR) -> dict[str, Problem]:
    """task_id -> Problem for the given codemill language names (all five by default), in data order."""
    by_name = {v: k for k, v in LANGUAGE_DIRS.items()}
    problems: dict[str, Problem] = {}
    for language in languages or list(by_name):
        if language not in by_name:
            raise ValueError(f"unknown HumanEval-X language {language!r}; known: {', '.join(by_name)}")
        for record in read_records(language_file(by_name[language], data_dir)):
            problem = Problem.from_record(record, language)
            problems[problem.task_id] = problem
    return problems


def dataset_hash(languages: list[str] | None = None, data_dir: str | Path = DATA_DIR) -> str:
    """sha256 over the (decompressed) files of the given languages: which data a result was computed on."""
    by_name = {v: k for k, v in LANGUAGE_DIRS.items()}
    h = hashlib.sha256()
    for language in sorted(languages or list(by_name)):
        path = language_file(by_name[language], data_dir)
        h.update(language.encode() + b"\0")
        with gzip.open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()
