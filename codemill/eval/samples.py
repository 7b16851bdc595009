"""Samples files and prompt jobs.

A samples file has one JSON object a line: `task_id` (e.g. `CPP/12`), `completion` (the text that follows
the task's prompt; HumanEval-X's `generation` is accepted as an alias), optional `sample_id` (an integer or a
string; numbered per task in file order when absent), and for translation `source_language` (then the
completion follows the target's declaration). A line that is not such an object is refused with its number
and what to fix.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass

from codemill import storage
from codemill.eval.languages import LANGUAGE_ADAPTERS
from codemill.humaneval import Problem, language_of_task, task_id_for


class SamplesError(ValueError):
    """A samples file that cannot be used; the message names the line."""


@dataclass
class Sample:
    task_id: str
    completion: str
    sample_id: int | str = 0
    source_language: str | None = None

    @property
    def mode(self) -> str:
        return "translation" if self.source_language else "generation"

    @property
    def language(self) -> str:
        return language_of_task(self.task_id)

    def to_json(self) -> dict:
        d = asdict(self)
        if d["source_language"] is None:
            del d["source_language"]
        return d


def parse_samples(text: str, source: str = "<samples>", known_tasks: set[str] | None = None) -> list[Sample]:
    samples: list[Sample] = []
    counters: dict[tuple[str, str | None], int] = defaultdict(int)
    seen: dict[tuple, int] = {}
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SamplesError(f"{where}: not JSON ({exc})") from None
        if not isinstance(record, dict) or "task_id" not in record:
            raise SamplesError(f"{where}: expected an object with task_id and completion, got {_kind(record)}")
        completion = record.get("completion", record.get("generation"))
        if not isinstance(completion, str):
            raise SamplesError(f"{where}: `completion` (or its alias `generation`) must be a string, got "
                               f"{_kind(completion)}")
        task_id = record["task_id"]
        if not isinstance(task_id, str):
            raise SamplesError(f"{where}: task_id must be a string such as \"CPP/12\", got {_kind(task_id)}")
        try:
            language_of_task(task_id)
        except ValueError as exc:
            raise SamplesError(f"{where}: {exc}") from None
        if known_tasks is not None and task_id not in known_tasks:
            raise SamplesError(f"{where}: task {task_id!r} is not in the benchmark's data")
        src = record.get("source_language")
        if src is not None and src not in LANGUAGE_ADAPTERS:
            raise SamplesError(f"{where}: source_language {src!r} is not one of {', '.join(LANGUAGE_ADAPTERS)}")
        key = (task_id, src)
        sample_id = record.get("sample_id")
        if sample_id is None:
            sample_id = counters[key]
        elif isinstance(sample_id, bool) or not isinstance(sample_id, int | str) or sample_id == "":
            raise SamplesError(f"{where}: sample_id must be an integer or a non-empty string, got {_kind(sample_id)}")
        if isinstance(sample_id, int):
            counters[key] = max(counters[key], sample_id + 1)
        if (*key, sample_id) in seen:
            raise SamplesError(f"{where}: sample {sample_id!r} of {task_id} appears twice (first on line "
                               f"{seen[(*key, sample_id)]}); give each sample its own sample_id")
        seen[(*key, sample_id)] = line_no
        samples.append(Sample(task_id, completion, sample_id, src))
    if not samples:
        raise SamplesError(f"{source}: no samples (one JSON object a line with task_id and completion)")
    return samples


def _kind(value) -> str:
    text = json.dumps(value)
    return f"{type(value).__name__} {text[:60]}" if value is not None else "nothing"


def read_samples(uri: str) -> list[Sample]:
    return parse_samples(storage.read_bytes(uri).decode("utf-8"), uri)


def samples_jsonl(samples: list[Sample]) -> bytes:
    return "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples).encode()


@dataclass
class PromptJob:
    """One prompt to sample n completions of."""

    task_id: str
    prompt: str
    stop: list[str]
    source_language: str | None = None


def build_jobs(problems: dict[str, Problem], languages: list[str], numbers: list[int], mode: str,
               pairs: list[tuple[str, str]]) -> list[PromptJob]:
    """Generation prompts for every (language, problem); translation prompts for every (pair, problem)."""
    jobs: list[PromptJob] = []
    if mode in ("generation", "both"):
        for language in languages:
            a = LANGUAGE_ADAPTERS[language]
            for number in numbers:
                p = problems[task_id_for(language, number)]
                jobs.append(PromptJob(p.task_id, a.generation_prompt(p), list(a.stop)))
    if mode in ("translation", "both"):
        for src, tgt in pairs:
            a = LANGUAGE_ADAPTERS[tgt]
            for number in numbers:
                s, t = problems[task_id_for(src, number)], problems[task_id_for(tgt, number)]
                jobs.append(PromptJob(t.task_id, a.translation_prompt(s, t), list(a.stop), src))
    return jobs
