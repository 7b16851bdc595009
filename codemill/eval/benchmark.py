"""The small interface the eval stage scores a benchmark through (humaneval_x.HumanEvalX, mtpb_benchmark.Mtpb).

The stage (stage.py) runs the same steps for every benchmark: the environment and its fingerprint; the
benchmark check or the samples (read or generated); the gate; the executions on Ray, resumable
(fanout.py, partial.py); metrics, summary.json and report.html. It asks the benchmark only what differs.

Units are what the benchmark check covers and the gate asks for: HumanEval-X tasks (`CPP/12`), MTPB test
cases (`MTPB/3/2`). An execution item is a dict with a stable `key` (the same program, limits and scoring
give the same key, so identical programs run once and a rerun finds what it already ran), its `unit`, a
`cost` rank (lower runs first) and what the benchmark's worker function needs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from codemill.eval.config import EvalConfig


@dataclass
class Environment:
    """What a run is computed with: its problems, toolchains and sandbox, and their fingerprint."""

    problems: dict[str, Any]
    fingerprint: str
    toolchains: dict[str, str]
    dataset_sha256: str
    sandbox: dict
    context: dict = field(default_factory=dict)        # what the workers need (plain data, sent through Ray)
    summary_extra: dict = field(default_factory=dict)  # benchmark facts for summary.json and the report


def item_key(*parts: Any) -> str:
    """A stable key of an execution from what determines its result."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


class Benchmark(Protocol):
    name: str
    worker: str  # "module:function": (items, context) -> rows, run in Ray workers

    def environment(self, config: EvalConfig, unsafe: bool) -> Environment: ...

    def selected_units(self, env: Environment, config: EvalConfig) -> list[str]:
        """The units the config selects (its languages and problems)."""

    def check_items(self, env: Environment, config: EvalConfig, units: list[str]) -> list[dict]:
        """The executions of the benchmark check of `units`; each item also has `kind`."""

    def check_verdict(self, rows: list[dict], env: Environment, units: list[str]) -> dict:
        """benchmark_check.evaluate over the check's rows, with what the benchmark adds."""

    def context(self, env: Environment, items: list[dict]) -> dict:
        """The workers' context for these items (the problems they need)."""

    def read_samples(self, data: bytes, source: str, env: Environment) -> list:
        """Samples from a samples file; SamplesError names the line of a bad one."""

    def samples_jsonl(self, samples: list) -> bytes: ...

    def sample_units(self, samples: list) -> list[str]: ...

    def generate(self, env: Environment, config: EvalConfig, units: list[str], generator) -> list:
        """Samples from a generator (codemill.eval.generation.Generation) for the selected units."""

    def score_items(self, samples: list, env: Environment, config: EvalConfig, check: dict | None
                    ) -> list[tuple[dict, dict]]:
        """(the execution item, the result row's own fields) of every sample, in order."""

    def batch_bound_s(self, batch: list[dict], config: EvalConfig) -> float:
        """The longest one attempt of a batch may take (its items' limits)."""

    def metrics(self, rows: list[dict], env: Environment, config: EvalConfig, from_samples: bool) -> dict: ...

    def log_metrics(self, metrics: dict) -> None: ...

    def counts(self, metrics: dict) -> dict: ...

    def write_report(self, out: str, summary: dict) -> None: ...
