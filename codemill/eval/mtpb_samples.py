"""MTPB samples files: one JSON object a line, `task_id` (`MTPB/<id>`), `test_index` (0-4), `sample_id` (an
integer or a string; numbered in file order when absent),
`turns` (the model's completions, one per turn, in order) and `mode` (`multi-turn`, the default, or
`single-turn`, whose one turn answers all the prompts). Truncation (SPEC §10) is applied to every turn when
read; it leaves already-truncated turns unchanged.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass

from codemill import storage
from codemill.eval import mtpb
from codemill.eval.mtpb import MODES, MULTI_TURN, MtpbProblem
from codemill.eval.samples import SamplesError


@dataclass
class MtpbSample:
    task_id: str
    test_index: int
    sample_id: int | str
    turns: list[str]
    mode: str = MULTI_TURN

    def program(self, problem: MtpbProblem) -> str:
        return mtpb.program(problem, self.test_index, self.mode, self.turns)

    def to_json(self) -> dict:
        return {"task_id": self.task_id, "test_index": self.test_index, "sample_id": self.sample_id,
                "mode": self.mode, "turns": self.turns}


def parse_samples(text: str, problems: dict[str, MtpbProblem], source: str = "<samples>") -> list[MtpbSample]:
    samples: list[MtpbSample] = []
    counters: dict[tuple, int] = defaultdict(int)
    seen: set[tuple] = set()
    for line_no, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{line_no}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SamplesError(f"{where}: not JSON ({exc})") from None
        if not isinstance(r, dict):
            raise SamplesError(f"{where}: expected an object with task_id, test_index and turns")
        problem = problems.get(str(r.get("task_id")))
        if problem is None:
            raise SamplesError(f"{where}: task_id {r.get('task_id')!r} is not an MTPB problem (MTPB/1 … "
                               f"MTPB/{len(problems)})")
        test_index = r.get("test_index")
        if not isinstance(test_index, int) or isinstance(test_index, bool) or not 0 <= test_index < problem.n_tests:
            raise SamplesError(f"{where}: test_index must be an integer 0-{problem.n_tests - 1}, got {test_index!r}")
        mode = r.get("mode", MULTI_TURN)
        if mode not in MODES:
            raise SamplesError(f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
        turns = r.get("turns")
        want = mtpb.n_turns(problem, mode)
        if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns) or len(turns) != want:
            raise SamplesError(f"{where}: `turns` must be a list of {want} string(s) for {problem.task_id} "
                               f"{mode}, got {_describe(turns)}")
        key = (problem.task_id, test_index, mode)
        sample_id = r.get("sample_id")
        if sample_id is None:
            sample_id = counters[key]
        if isinstance(sample_id, bool) or not isinstance(sample_id, int | str) or sample_id == "" or (
                isinstance(sample_id, int) and sample_id < 0):
            raise SamplesError(f"{where}: sample_id must be an integer >= 0 or a non-empty string, got {sample_id!r}")
        if (*key, sample_id) in seen:
            raise SamplesError(f"{where}: sample {sample_id!r} of {problem.task_id} test {test_index} {mode} "
                               "appears twice")
        seen.add((*key, sample_id))
        if isinstance(sample_id, int):
            counters[key] = max(counters[key], sample_id + 1)
        samples.append(MtpbSample(problem.task_id, test_index, sample_id,
                                  [mtpb.truncate(t, mode) for t in turns], mode))
    if not samples:
        raise SamplesError(f"{source}: no samples")
    return samples


def _describe(turns) -> str:
    if isinstance(turns, list):
        return f"a list of {len(turns)}"
    return type(turns).__name__


def read_samples(uri: str, problems: dict[str, MtpbProblem]) -> list[MtpbSample]:
    return parse_samples(storage.read_bytes(uri).decode("utf-8"), problems, uri)


def samples_jsonl(samples: list[MtpbSample]) -> bytes:
    return "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in samples).encode()
