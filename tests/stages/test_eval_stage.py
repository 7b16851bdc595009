"""The eval stage end to end on the shared Ray head: the benchmark-check gate, --samples, --endpoint (a fake
OpenAI server on loopback), --model (a tiny random export through codemill's serve engine), the outputs, and
the report opened in headless Chromium."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from fake_completions import FakeCompletions

from codemill.eval import languages as L
from codemill.humaneval import load_problems, task_id_for
from codemill.runner import stage_main

PROBLEMS = [0, 2]


def main(argv: list[str]) -> int:
    return stage_main("eval", argv)


@pytest.fixture(scope="module")
def problems():
    return load_problems()


def _samples_file(path: Path, problems) -> Path:
    """Per task of PROBLEMS: the canonical solution (passes) and the wrong one (fails)."""
    lines = []
    for lang in L.LANGUAGES:
        for n in PROBLEMS:
            p = problems[task_id_for(lang, n)]
            lines.append({"task_id": p.task_id, "completion": p.canonical_solution})
            lines.append({"task_id": p.task_id, "generation": L.adapter(lang).wrong_completion(p)})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


COMMON = ["--set", f"problems={PROBLEMS}", "--set", "metrics.k=[1,2]", "--set", "metrics.budget_k=[2]",
          "--set", "metrics.bootstrap_resamples=200"]


@pytest.fixture(scope="module")
def checked(ray_head, eval_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "out"
    assert main(["--check-benchmark", "--out", str(out), "--set", f"problems={PROBLEMS}"]) == 0
    return out


def test_refuses_to_score_before_the_benchmark_check(ray_head, eval_cache, problems, tmp_path, capsys):
    samples = _samples_file(tmp_path / "s.jsonl", problems)
    out = tmp_path / "out"
    assert main(["--samples", str(samples), "--out", str(out), *COMMON]) == 2
    assert "benchmark check has not been run" in capsys.readouterr().err
    assert not (out / "_manifest.json").exists()


def test_benchmark_check_output(checked):
    check = json.loads((checked / "check.json").read_text())
    assert check["ok"] and check["tasks"] == 10 and check["canonical_passed"] == 10
    # Several wrong answers per task: the constant return and mutants of the canonical solution.
    assert check["wrong_answers_tried"] >= 3 * 10
    for weak in check["weak_tests"]:
        assert weak["task_id"] in check["checked_tasks"] and weak["accepted"]
        assert all(a["kind"] and a["completion"] for a in weak["accepted"])
    assert set(check["calibration_seconds"]) == {task_id_for(lang, n) for lang in L.LANGUAGES for n in PROBLEMS}
    assert {"python", "g++", "javac", "node", "go", "testify", "js-md5", "bwrap"} <= set(check["toolchains"])
    assert (checked / "_manifest.json").exists()


def test_samples_scored_and_reported(checked, problems, tmp_path):
    samples = _samples_file(tmp_path / "s.jsonl", problems)
    out = tmp_path / "out"
    assert main(["--samples", str(samples), "--out", str(out), *COMMON]) == 0
    summary = json.loads((out / "summary.json").read_text())
    gen = summary["metrics"]["generation"]
    for lang in L.LANGUAGES:
        m = gen["languages"][lang]
        assert m["problems"] == 2 and m["samples"] == 4
        assert m["pass_at_k"]["1"]["value"] == pytest.approx(0.5)
        assert m["pass_at_k"]["2"]["value"] == pytest.approx(1.0)
    assert gen["average"]["1"] == pytest.approx(0.5)
    assert summary["benchmark_check"]["passed"] and summary["time_limits"]["calibrated"]
    check = json.loads((checked / "check.json").read_text())
    weak = {w["task_id"]: sorted(a["kind"] for a in w["accepted"]) for w in check["weak_tests"]}
    assert {w["task_id"]: sorted(a["kind"] for a in w["accepted"]) for w in summary["weak_tests"]} == weak
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    assert {"task_id", "sample_id", "language", "outcome", "passed", "seconds", "stderr"} <= set(rows[0])
    assert {r["outcome"] for r in rows} <= {L.PASSED, L.WRONG_ANSWER, L.RUNTIME_ERROR}
    assert sum(r["passed"] for r in rows) == 10
    for name in ("pass_at_k", "outcomes"):
        assert (out / "charts" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["passed"] == 10
    # Unchanged config and samples: complete, nothing to do.
    mtime = (out / "_manifest.json").stat().st_mtime
    assert main(["--samples", str(samples), "--out", str(out), *COMMON]) == 0
    assert (out / "_manifest.json").stat().st_mtime == mtime
    _screenshot_check(out / "report.html", tmp_path / "shot.png")


def _screenshot_check(report: Path, shot: Path) -> None:
    """Open the self-contained report in headless Chromium and check what it shows: the outcome chart's green
    (passed) and red (wrong answer) bars, and the pass@k chart's blue, are on the page."""
    import numpy as np
    from PIL import Image

    html = report.read_text()
    assert "<script" not in html and "src='data:image/png;base64," in html and "http" not in html.split("<body>")[1]
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2600", report.as_uri()],
                   check=True, capture_output=True, timeout=120)
    img = Image.open(shot).convert("RGB")
    assert img.size == (1200, 2600)
    pixels = np.asarray(img).astype(int).reshape(-1, 3)

    def count(rgb, tol=12):
        return int((np.abs(pixels - np.array(rgb)) <= tol).all(axis=1).sum())

    assert count((0x2C, 0xA0, 0x2C)) > 2000   # passed (green) in the outcome chart
    assert count((0xD6, 0x27, 0x28)) > 2000   # wrong answer (red)
    assert count((0x1F, 0x77, 0xB4)) > 2000   # pass@1 bars (matplotlib's first color)
    assert count((255, 255, 255)) < 0.95 * len(pixels)


class FakeOpenAI(FakeCompletions):
    """/v1/completions answering each HumanEval-X prompt with its canonical solution plus trailing text that the
    stop rules must cut (sample 0), and an unfinished body (sample 1). Requires the API key."""

    def __init__(self, problems, key: str):
        by_prompt = {}
        for p in problems.values():
            by_prompt[L.adapter(p.language).generation_prompt(p)] = p
            by_prompt[p.declaration] = p

        def answer(prompt: str, j: int) -> str:
            p = by_prompt.get(prompt) or by_prompt[prompt.rsplit(":\n", 1)[1]]
            junk = "\ndef junk():\n    pass\n" if p.language == "Python" else "\n// trailing\nint junk;\n"
            return p.canonical_solution + junk if j % 2 == 0 else "    if (\n"

        super().__init__(answer, key)


def test_endpoint_generation_and_translation(checked, problems, tmp_path, monkeypatch):
    monkeypatch.setenv("CM_TEST_KEY", "k-123")
    fake = FakeOpenAI(problems, "k-123")
    out = tmp_path / "out"
    try:
        rc = main(["--endpoint", fake.url, "--api-key-env", "CM_TEST_KEY", "--out", str(out), *COMMON,
                   "--set", "generation.n=2", "--set", "mode=both",
                   "--set", "translation_pairs=['Python->Go','C++->Java']"])
    finally:
        fake.close()
    assert rc == 0
    assert all(len(r["stop"]) <= 4 and r["temperature"] == 0.8 and r["top_p"] == 0.95 for r in fake.requests)
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 * 2 * 2 + 2 * 2 * 2
    assert {s.get("source_language") for s in samples} == {None, "Python", "C++"}
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]
    for lang in L.LANGUAGES:
        assert m["generation"]["languages"][lang]["pass_at_k"]["1"]["value"] == pytest.approx(0.5)
        assert m["outcomes"][lang][L.UNFINISHED] == 2 and m["outcomes"][lang][L.PASSED] == 2
    assert m["translation"]["matrix"] == {"Python": {"Go": pytest.approx(0.5)}, "C++": {"Java": pytest.approx(0.5)}}
    assert m["translation_outcomes"]["Go"] == {**dict.fromkeys(L.OUTCOMES, 0), L.PASSED: 2, L.UNFINISHED: 2}
    assert {a["strategy"] for a in m["allocation"]} == {"best_single", "uniform", "weighted"}
    assert (out / "charts" / "translation.png").exists()


def test_model_export_through_the_serve_engine(checked, tmp_path):
    from codemill.serve.testing import write_random_export
    from codemill.train.model import PRESETS

    export = tmp_path / "export"
    write_random_export(str(export), PRESETS["tiny"], seed=1, init_std=0.1)
    out = tmp_path / "out"
    assert main(["--model", str(export), "--out", str(out), "--set", "problems=[0]", "--set", "generation.n=2",
                 "--set", "generation.max_tokens=24", "--set", "metrics.k=[1]", "--set", "metrics.budget_k=[1]",
                 "--set", "languages=[Python,Go]", "--set", "generation.device=cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    langs = summary["metrics"]["generation"]["languages"]
    assert set(langs) == {"Python", "Go"}
    for m in langs.values():
        assert m["samples"] == 2 and m["pass_at_k"]["1"]["value"] == 0.0  # a random model solves nothing
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all(isinstance(s["completion"], str) for s in samples)


def test_run_if_missing_checks_the_benchmark_first(checked, problems, tmp_path):
    """benchmark_check=run_if_missing (what the demo DAG uses): unchecked tasks are checked, then scored."""
    p = problems["JavaScript/3"]
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": p.task_id, "completion": p.canonical_solution}) + "\n")
    out = tmp_path / "out"
    args = ["--samples", str(samples), "--out", str(out), "--set", "metrics.k=[1]", "--set", "metrics.budget_k=[1]"]
    assert main(args) == 2  # JavaScript/3 was not checked on this machine
    assert main([*args, "--set", "benchmark_check=run_if_missing"]) == 0
    check = json.loads((out / "check.json").read_text())
    assert check["ok"] and check["checked_tasks"] == ["JavaScript/3"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark_check"]["passed"]
    assert summary["metrics"]["generation"]["languages"]["JavaScript"]["pass_at_k"]["1"]["value"] == 1.0
