"""The red team through the whole stage, as a user would score them (`codemill eval --samples`): every hostile
sample of tests/eval_attacks.py in every language, without the stop rules (the sample as written) and with
them, beside each task's canonical solution; and MTPB's under both scoring rules. No hostile sample may be
scored `passed`; every canonical solution is."""

from __future__ import annotations

import json

import pytest
from eval_attacks import ATTACKS, ESCAPES_POSTPROCESSED, MTPB_ATTACKS

from codemill.eval import languages as L
from codemill.eval import mtpb
from codemill.eval.mtpb_benchmark import printing
from codemill.humaneval import load_problems, task_id_for
from codemill.runner import stage_main

TASKS = [task_id_for(lang, 0) for lang in L.LANGUAGES]


def results(out) -> list[dict]:
    return [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("postprocess", [False, True])
def test_no_hostile_sample_passes_through_the_stage(ray_head, eval_cache, tmp_path, postprocess):
    problems = load_problems()
    lines = []
    for lang in L.LANGUAGES:
        tid = task_id_for(lang, 0)
        lines.append({"task_id": tid, "sample_id": "canonical", "completion": problems[tid].canonical_solution})
        attacks = dict(ATTACKS[lang])
        if lang in ESCAPES_POSTPROCESSED:
            attacks["escape"] = ESCAPES_POSTPROCESSED[lang]
        lines += [{"task_id": tid, "sample_id": name, "completion": code} for name, code in attacks.items()]
    samples = tmp_path / "hostile.jsonl"
    samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert stage_main("eval", ["--samples", str(samples), "--out", str(out), "--set", f"tasks={json.dumps(TASKS)}",
                               "--set", "benchmark_check=run_if_missing", "--set", "check.mutants_per_task=0",
                               "--set", f"execution.postprocess={str(postprocess).lower()}",
                               "--set", "execution.time_floor_s=8", "--set", "metrics.k=[1]",
                               "--set", "metrics.budget_k=[1]", "--set", "charts=false"]) == 0
    rows = results(out)
    assert len(rows) == len(lines)
    passed = {(r["task_id"], r["sample_id"]) for r in rows if r["passed"]}
    assert passed == {(tid, "canonical") for tid in TASKS}
    assert not any(r["outcome"] == L.INFRASTRUCTURE_ERROR for r in rows)


@pytest.mark.parametrize("scoring", ["strict", "codegen"])
def test_no_mtpb_program_passes_without_the_answer(ray_head, eval_cache, tmp_path, scoring):
    problem = mtpb.load_problems()["MTPB/3"]
    expected = problem.expected(0)
    lines = [printing(problem, 0, expected, "honest").to_json()]
    for name, code in MTPB_ATTACKS.items():
        sample = printing(problem, 0, 0, name)
        sample.turns[-1] = code.replace("EXPECTED", json.dumps(expected))
        lines.append(sample.to_json())
    samples = tmp_path / "hostile.jsonl"
    samples.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out"
    assert stage_main("eval", ["--benchmark", "mtpb", "--samples", str(samples), "--out", str(out),
                               "--set", f"mtpb.scoring={scoring}", "--set", "benchmark_check=run_if_missing",
                               "--set", "execution.mtpb_time_s=5", "--set", "metrics.k=[1]",
                               "--set", "charts=false"]) == 0
    assert {r["sample_id"] for r in results(out) if r["passed"]} == {"honest"}
    assert json.loads((out / "summary.json").read_text())["scoring"] == scoring
