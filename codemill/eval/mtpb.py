"""MTPB, CodeGen's Multi-Turn Programming Benchmark (SPEC §10): the data, the prompts, the truncation rules and
the program of a test case. One function, `history`, builds every prompt and every program, so a program
rebuilt from a samples file is exactly the text its turns were generated from.

A test case's program, multi-turn: the tag line (SPEC §2), the prefix, then per turn `# {turn prompt filled
with the test case's inputs}\\n`, the truncated completion and `\\n\\n`. The prompt of turn i is the program
so far plus turn i's comment line. Single-turn: all the comment lines in one block, one completion.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codemill.languages import tag_line

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "mtpb"
DATA_FILE = "mtpb.jsonl"
TASK_PREFIX = "MTPB/"
# SPEC §10 and CodeGen's mtpb_sample.py: what every program starts with, and a turn's token budget when the
# problem gives none.
PREFIX = "# Import libraries.\n\nimport numpy as np\n\n"
DEFAULT_MAX_GEN_LENGTH = 256
TURN_SEPARATOR = "\n\n"
TAG = tag_line("Python")
MULTI_TURN, SINGLE_TURN = "multi-turn", "single-turn"
MODES = (MULTI_TURN, SINGLE_TURN)
END_OF_TEXT = "<|endoftext|>"

# Truncation (SPEC §10, as CodeGen's `truncate`): cut before a second line starting with `print`, then before
# a second line starting with `def`, then before the first of the terminals. The patterns are the reference's
# (`^print` also matches a line starting `printed = …`, as there).
_PRINT = re.compile(r"^print", re.MULTILINE)
_DEF = re.compile(r"^def", re.MULTILINE)
_TERMINALS = [re.compile(p, re.MULTILINE) for p in (r"^#", re.escape(END_OF_TEXT), r"^'''", r'^"""', r"\n\n\n")]
# Single-turn asks for the whole program at once: a second function, a blank-line pair between functions and
# comments are part of a normal answer there, so only a second print, the end of text and a docstring-like
# line end it (the reference published no single-turn truncation).
_SINGLE_TERMINALS = _TERMINALS[1:4]
# Stop strings sent with each request: each is where truncation cuts anyway (at most a trailing newline
# differs, and TURN_SEPARATOR follows), so they only save generating text that would be thrown away.
STOPS = {MULTI_TURN: ["\n#", "\n\n\n", '\n"""', "\n'''"], SINGLE_TURN: ['\n"""', "\n'''"]}
# Paths the prompts tell a program to read (e.g. "./datasets/melb_data.csv").
_DATA_PATH = re.compile(r"""['"](\./[^'"]+\.(?:csv|tsv|json|txt|xlsx?))['"]""")


class MtpbDataError(ValueError):
    """The MTPB file is malformed; the message names the line and the field."""


@dataclass(frozen=True)
class MtpbProblem:
    id: str
    name: str
    category: str
    description: str
    prompts: tuple[str, ...]
    inputs: tuple[dict, ...]
    outputs: tuple[Any, ...]
    max_gen_length: int

    @property
    def task_id(self) -> str:
        return TASK_PREFIX + self.id

    @property
    def n_tests(self) -> int:
        # Problem 57 lists six outputs for five inputs; the reference pairs them with zip, so five test cases.
        return min(len(self.inputs), len(self.outputs))

    def turn_prompts(self, test_index: int) -> list[str]:
        """The turn prompts filled with the test case's inputs (`str.format`, so `{{` is a literal brace)."""
        return [p.format(**self.inputs[test_index]) for p in self.prompts]

    def expected(self, test_index: int) -> Any:
        return self.outputs[test_index]

    def data_files(self) -> list[str]:
        """Files the prompts tell the program to read (MTPB ships none of them)."""
        return sorted({m for p in self.prompts for m in _DATA_PATH.findall(p)})


def case_id(task_id: str, test_index: int) -> str:
    """`MTPB/3` + 2 -> `MTPB/3/2`: one test case, what the benchmark check records."""
    return f"{task_id}/{test_index}"


def load_problems(data_dir: str | Path | None = None) -> dict[str, MtpbProblem]:
    """task_id -> problem, in the file's order."""
    path = Path(data_dir or DATA_DIR) / DATA_FILE
    problems: dict[str, MtpbProblem] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            r = json.loads(line)
            p = MtpbProblem(id=str(r["id"]), name=str(r["name"]), category=str(r["category"]),
                            description=str(r.get("description", "")), prompts=tuple(r["prompts"]),
                            inputs=tuple(r["inputs"]), outputs=tuple(r["outputs"]),
                            max_gen_length=int(r.get("max_gen_length") or DEFAULT_MAX_GEN_LENGTH))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise MtpbDataError(f"{where}: not an MTPB problem ({type(exc).__name__}: {exc})") from None
        if not p.prompts or not p.n_tests or not all(isinstance(i, dict) for i in p.inputs):
            raise MtpbDataError(f"{where}: problem {p.id} needs prompts, and inputs (objects) with outputs")
        if p.task_id in problems:
            raise MtpbDataError(f"{where}: problem id {p.id} appears twice")
        problems[p.task_id] = p
    if not problems:
        raise MtpbDataError(f"{path}: no problems")
    return problems


def dataset_hash(data_dir: str | Path | None = None) -> str:
    return hashlib.sha256((Path(data_dir or DATA_DIR) / DATA_FILE).read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------- programs


def comment(prompt: str) -> str:
    return f"# {prompt}\n"


def segments(problem: MtpbProblem, test_index: int, mode: str) -> list[str]:
    """The comment text that opens each turn: one per turn prompt, or one block for single-turn."""
    lines = [comment(p) for p in problem.turn_prompts(test_index)]
    return ["".join(lines)] if mode == SINGLE_TURN else lines


def truncate(completion: str, mode: str = MULTI_TURN) -> str:
    """SPEC §10's truncation; applying it twice changes nothing (every cut is a prefix before a match, and a
    prefix holds no earlier match than the text it came from)."""
    prints = list(_PRINT.finditer(completion))
    if len(prints) > 1:
        completion = completion[:prints[1].start()]
    if mode == MULTI_TURN:
        defs = list(_DEF.finditer(completion))
        if len(defs) > 1:
            completion = completion[:defs[1].start()]
    ends = [m.start() for m in (t.search(completion) for t in (_TERMINALS if mode == MULTI_TURN
                                                               else _SINGLE_TERMINALS)) if m]
    return completion[:min(ends)] if ends else completion


def history(problem: MtpbProblem, test_index: int, mode: str, turns: list[str]) -> str:
    """The program after the given turns' completions (truncated here, so raw and truncated turns agree)."""
    segs = segments(problem, test_index, mode)
    if len(turns) > len(segs):
        raise ValueError(f"{problem.task_id}: {len(turns)} turns for {len(segs)} {mode} prompt(s)")
    return TAG + PREFIX + "".join(seg + truncate(t, mode) + TURN_SEPARATOR for seg, t in zip(segs, turns))


def turn_prompt(problem: MtpbProblem, test_index: int, mode: str, turns: list[str]) -> str:
    """The prompt of the next turn: the whole history, then that turn's comment."""
    return history(problem, test_index, mode, turns) + segments(problem, test_index, mode)[len(turns)]


def n_turns(problem: MtpbProblem, mode: str) -> int:
    return 1 if mode == SINGLE_TURN else len(problem.prompts)


def max_tokens(problem: MtpbProblem, mode: str, cap: int | None = None) -> int:
    """A turn's budget: the problem's max_gen_length; single-turn gets the sum over its turns, the same
    budget as the multi-turn program. `cap` (the user's generation.max_tokens) lowers it, never raises it."""
    budget = problem.max_gen_length * (len(problem.prompts) if mode == SINGLE_TURN else 1)
    return min(budget, cap) if cap else budget


def program(problem: MtpbProblem, test_index: int, mode: str, turns: list[str]) -> str:
    """The program of a finished sample (every turn answered)."""
    if len(turns) != n_turns(problem, mode):
        raise ValueError(f"{problem.task_id}: {mode} needs {n_turns(problem, mode)} turn(s), got {len(turns)}")
    return history(problem, test_index, mode, turns)
