"""MTPB in the eval stage: prompts and programs, truncation, samples files, the scorer (all 575 test cases in
process), metrics; then through Ray and the real sandbox: the benchmark check on test cases of every output
type, `--samples` end to end, generation from a fake OpenAI endpoint (turn-by-turn prompts checked) and from
a tiny model through codemill's serve engine."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from fake_completions import FakeCompletions

from codemill.eval import mtpb
from codemill.eval.harness.codec import decode, encode
from codemill.eval.harness.mtpb_runner import print_last_expression
from codemill.eval.mtpb import MULTI_TURN, PREFIX, SINGLE_TURN, TAG
from codemill.eval.mtpb_benchmark import changed, check_samples
from codemill.eval.mtpb_generate import generate_samples
from codemill.eval.mtpb_metrics import compute_mtpb_metrics
from codemill.eval.mtpb_samples import parse_samples, samples_jsonl
from codemill.eval.mtpb_scoring import score, strict_equivalent
from codemill.eval.samples import SamplesError
from codemill.runner import stage_main

PROBLEMS = mtpb.load_problems()

ALL_CASES = [(tid, t) for tid, p in PROBLEMS.items() for t in range(p.n_tests)]


# ----------------------------------------------------------------------------------- data and prompts


def test_the_shipped_data():
    assert len(PROBLEMS) == 115 and len(ALL_CASES) == 575
    assert list(PROBLEMS)[:2] == ["MTPB/1", "MTPB/2"]
    assert PROBLEMS["MTPB/57"].n_tests == 5  # six outputs for five inputs
    assert PROBLEMS["MTPB/41"].max_gen_length == mtpb.DEFAULT_MAX_GEN_LENGTH  # absent in the data
    assert (mtpb.DATA_DIR / "LICENSE.txt").read_text().startswith("BSD 3-Clause License")
    assert {x for p in PROBLEMS.values() for x in p.data_files()} == {"./datasets/mlbootcamp5_train.csv",
                                                                      "./datasets/melb_data.csv"}


def test_turn_prompts_carry_the_whole_history():
    p = PROBLEMS["MTPB/3"]
    first = mtpb.turn_prompt(p, 0, MULTI_TURN, [])
    assert first == ("# language: Python\n# Import libraries.\n\nimport numpy as np\n\n"
                     "# Write a function that takes an integer minutes and converts it to seconds.\n")
    raw = "def m(x):\n    return 60 * x\n\n\n\nprint('junk')"
    second = mtpb.turn_prompt(p, 0, MULTI_TURN, [raw])
    assert second == first + "def m(x):\n    return 60 * x" + "\n\n" + \
        "# Write a function that takes an integer hours and converts it to seconds.\n"
    third = mtpb.turn_prompt(p, 3, MULTI_TURN, [raw, "def h(x):\n    return 3600 * x"])
    assert third.startswith(TAG + PREFIX) and third.endswith("# Print the total seconds of 0 hours and 32 minutes.\n")
    single = mtpb.turn_prompt(p, 3, SINGLE_TURN, [])
    assert single == TAG + PREFIX + "".join(f"# {x}\n" for x in p.turn_prompts(3))
    assert mtpb.max_tokens(p, MULTI_TURN) == 128 and mtpb.max_tokens(p, SINGLE_TURN) == 3 * 128
    with pytest.raises(ValueError, match="needs 3 turn"):
        mtpb.program(p, 0, MULTI_TURN, ["x = 1"])


def test_prompt_templates_fill_braces_as_str_format():
    p = PROBLEMS["MTPB/46"]
    assert p.turn_prompts(0)[-1].endswith('Use the format "{:.1f} {:.1f}".')


TRUNCATION_CASES = [
    # CodeGen's own test of its truncate.
    ("\nif len_a > len_b:\n    result = a\nelse:\n    result = b\n\n\n\n#",
     "\nif len_a > len_b:\n    result = a\nelse:\n    result = b"),
    ("print(x)\nprint(y)\n", "print(x)\n"),
    ("def f():\n    return 1\ndef g():\n    pass\n", "def f():\n    return 1\n"),
    ("x = 1\n# next step\ny = 2", "x = 1\n"),
    ("x = 1<|endoftext|>garbage", "x = 1"),
    ("x = 1\n'''doc'''", "x = 1\n"),
    ('x = 1\n"""doc"""', "x = 1\n"),
    ("# a comment first", ""),
    ("    # an indented comment stays\n    x = 1\n", "    # an indented comment stays\n    x = 1\n"),
    ("y = 2\nprinted = 3\nprint(y)", "y = 2\nprinted = 3\n"),  # the reference's `^print` matches `printed`
]


@pytest.mark.parametrize("raw,want", TRUNCATION_CASES)
def test_truncation(raw, want):
    assert mtpb.truncate(raw) == want
    assert mtpb.truncate(want) == want


def test_single_turn_truncation_keeps_a_whole_program():
    program = "def a(m):\n    return m * 60\n\n\ndef b(h):\n    return h * 3600\n\n# total\nprint(a(1) + b(2))\n"
    assert mtpb.truncate(program, SINGLE_TURN) == program
    assert mtpb.truncate(program + "print(3)\n", SINGLE_TURN) == program
    assert mtpb.truncate(program, MULTI_TURN) == "def a(m):\n    return m * 60"  # at the blank-line pair


def test_truncation_is_idempotent_on_mixed_text():
    pieces = ["print(1)", "def f():", "    return 2", "# c", "'''", '"""', "", "<|endoftext|>", "x = [1,\n 2]",
              "printx = 1", "  print(3)", "class A:", "\n"]
    rng = np.random.default_rng(0)
    for _ in range(2000):
        text = "\n".join(pieces[i] for i in rng.integers(0, len(pieces), size=rng.integers(1, 9)))
        for mode in mtpb.MODES:
            once = mtpb.truncate(text, mode)
            assert text.startswith(once) and mtpb.truncate(once, mode) == once, (text, mode)


# ----------------------------------------------------------------------------------- samples and programs


def scripted_turns(problem, test_index: int, mode: str) -> list[str]:
    """Deterministic raw completions with text that truncation must cut."""
    n = mtpb.n_turns(problem, mode)
    return [f"v{i} = {test_index}\n\n\n\nprint('cut')" if i < n - 1 else "print(v0)\nprint('second')"
            for i in range(n)]


def test_generation_and_samples_file_rebuild_the_same_programs():
    """Programs rebuilt from a written samples file equal what generation built: each turn's prompt, the raw
    completion truncated, and the separator."""
    seen: dict[str, int] = {}
    cases = [("MTPB/3", 0), ("MTPB/3", 1), ("MTPB/38", 2), ("MTPB/46", 4)]

    def fake(prompts, counts, limits, stops, seeds):
        outs = []
        for prompt, count, limit, stop in zip(prompts, counts, limits, stops):
            seen[prompt] = count
            assert prompt.startswith(TAG + PREFIX) and limit >= 128 and len(stop) <= 4
            turn = prompt.count("\n# ") - 1  # comment lines after the prefix's own
            outs.append([f"v{turn} = {i}\n\n\n\nprint('cut')" for i in range(count)])
        return outs

    samples = generate_samples(PROBLEMS, cases, list(mtpb.MODES), 3, fake, seed=1)
    assert len(samples) == len(cases) * 2 * 3
    # Identical histories are one prompt: MTPB/3's first turn uses no input, so its two test cases ask for
    # 2 x 3 samples of it.
    first = mtpb.turn_prompt(PROBLEMS["MTPB/3"], 0, MULTI_TURN, [])
    assert seen[first] == 6
    for s in samples:
        p = PROBLEMS[s.task_id]
        assert all(t == mtpb.truncate(t, s.mode) for t in s.turns)
        last_prompt = mtpb.turn_prompt(p, s.test_index, s.mode, s.turns[:-1])
        assert last_prompt in seen
        assert s.program(p) == last_prompt + s.turns[-1] + mtpb.TURN_SEPARATOR
    reread = parse_samples(samples_jsonl(samples).decode(), PROBLEMS)
    assert [(r.to_json(), r.program(PROBLEMS[r.task_id])) for r in reread] == \
        [(s.to_json(), s.program(PROBLEMS[s.task_id])) for s in samples]


def test_generation_max_tokens_caps_each_turns_budget_where_it_is_lower():
    """The problem's max_gen_length is a turn's budget (single-turn: the sum of its turns'); a user's
    generation.max_tokens caps it, and a cap above it changes nothing."""
    def budgets(cap: int | None) -> set[int]:
        asked: set[int] = set()

        def fake(prompts, counts, limits, stops, seeds):
            asked.update(limits)
            return [["x = 1"] * c for c in counts]

        samples = generate_samples(PROBLEMS, [("MTPB/3", 0)], list(mtpb.MODES), 1, fake, max_tokens=cap)
        assert {s.mode: len(s.turns) for s in samples} == {MULTI_TURN: 3, SINGLE_TURN: 1}
        return asked

    p = PROBLEMS["MTPB/3"]
    assert budgets(None) == budgets(10_000) == {mtpb.max_tokens(p, MULTI_TURN), mtpb.max_tokens(p, SINGLE_TURN)}
    assert budgets(16) == {16}


def test_samples_file_truncates_on_read_and_refuses_bad_lines():
    p = PROBLEMS["MTPB/3"]
    raw = {"task_id": "MTPB/3", "test_index": 1, "turns": scripted_turns(p, 1, MULTI_TURN)}
    (s,) = parse_samples(json.dumps(raw), PROBLEMS)
    assert s.sample_id == 0 and s.mode == MULTI_TURN and s.turns[0] == "v0 = 1" and s.turns[-1] == "print(v0)\n"
    bad = [({**raw, "task_id": "MTPB/116"}, "not an MTPB problem"),
           ({**raw, "test_index": 5}, "test_index must be an integer 0-4"),
           ({**raw, "turns": ["x"]}, "list of 3 string"),
           ({**raw, "mode": SINGLE_TURN}, "list of 1 string"),
           ({**raw, "mode": "two-turn"}, "mode 'two-turn'"),
           ({**raw, "sample_id": -1}, "sample_id must be"),
           ({k: v for k, v in raw.items() if k != "turns"}, "`turns` must be")]
    for record, message in bad:
        with pytest.raises(SamplesError, match=re.escape(message)):
            parse_samples(json.dumps(raw) + "\n" + json.dumps(record), PROBLEMS, "s.jsonl")
    with pytest.raises(SamplesError, match=r"s.jsonl:2: sample 0 .* appears twice"):
        parse_samples(json.dumps({**raw, "sample_id": 0}) + "\n" + json.dumps({**raw, "sample_id": 0}),
                      PROBLEMS, "s.jsonl")


# ----------------------------------------------------------------------------------- scoring


@pytest.mark.parametrize("value,expected,same", [
    (pd.Series([1, 2]), [1, 2], True),
    (np.array([1.0, 2.0]), [1.0, 2.0], True),
    (np.int64(3), 3, True),
    (np.float32(0.5), 0.5, True),
    ([(1, 2), (3, 4)], [[1, 2], [3, 4]], True),
    ("True", True, True),          # booleans compared as strings
    (1, True, False),
    (np.bool_(False), False, True),
    (0.1 + 0.2, 0.3, True),        # within 1e-6
    (0.3001, 0.3, False),
    ("7", 7, True),                # cast to the expected type
    (3.7, 3, True),                # int(3.7) == 3, as the reference casts
    ({1: ["a"], 3: [[1, 2]]}, {"1": ["a"], "3": [[1, 2]]}, True),   # keys as JSON writes them
    ({1: ["a"]}, {"1": ["a"], "2": []}, False),
    ({1: "a", "1": "b"}, {"1": "a"}, False),    # two keys that JSON writes alike
    ({(1, 2): 1}, {"(1, 2)": 1}, False),        # JSON has no key for a tuple
    ({True: np.int64(2), None: 1.0}, {"true": 2, "null": 1.0}, True),
    (pd.Series({"a": 1, "b": 2}), {"a": 1, "b": 2}, True),
    ([1, 2], {"0": 1}, False),
    (None, None, True),
    ("None", None, True),          # MTPB/41 asks to print 'None'
    (0, None, False),
    ([], None, False),
])
def test_equivalence(value, expected, same):
    # As the runner sends it and the scorer reads it: through the codec.
    assert strict_equivalent(decode(encode(value)), expected) is same


def test_score_messages():
    assert score({"status": "finished", "printed": 0}, 1, "strict") == (False, "the program printed nothing")
    assert score({"status": "finished", "printed": 1, "no_argument": True}, 1, "strict") == \
        (False, "the last print call has no argument")
    passed, why = score({"status": "finished", "printed": 1, "value": "seven"}, 7, "strict")
    assert not passed and why.startswith("expected 7, printed 'seven' (ValueError")
    assert score({"status": "finished", "printed": 2, "value": 7}, 7, "strict") == (True, "")
    assert score({"status": "raised", "error": "ZeroDivisionError: x", "printed": 2, "value": 7}, 7, "strict")[0] \
        is False


def test_last_expression_is_printed_unless_it_is_a_print():
    import ast

    assert ast.unparse(print_last_expression(ast.parse("x = 2\nx * 3"))) == "x = 2\nprint(x * 3)"
    assert ast.unparse(print_last_expression(ast.parse("print(1)"))) == "print(1)"
    assert ast.unparse(print_last_expression(ast.parse("y = 1"))) == "y = 1"


def test_the_scorer_on_all_575_test_cases():
    """What --check-benchmark runs in the sandbox, in process: the expected value, written as Python writes it,
    matches; the changed value does not."""
    jobs = check_samples(PROBLEMS, ALL_CASES)
    assert len(jobs) == 2 * 575
    for kind, s in jobs:
        expected = PROBLEMS[s.task_id].expected(s.test_index)
        printed = eval(re.fullmatch(r"print\((.*)\)", s.turns[-1], re.DOTALL).group(1))
        assert strict_equivalent(printed, expected) is (kind == "canonical"), (s.task_id, s.test_index, kind)
        assert mtpb.truncate(s.turns[-1]) == s.turns[-1]
    assert changed(None) != "None" and changed(True) is False and changed({"a": 1}) != {"a": 1}


# ----------------------------------------------------------------------------------- metrics


def test_metrics_per_problem_category_mode_and_pass_at_k():
    rows = []
    for mode, passing in ((MULTI_TURN, {"MTPB/3": 4, "MTPB/1": 1}), (SINGLE_TURN, {"MTPB/3": 2, "MTPB/1": 0})):
        for tid, good in passing.items():
            for t in range(5):
                for s in range(4):
                    ok = s < good if t == 0 else False
                    rows.append({"task_id": tid, "test_index": t, "sample_id": s, "mode": mode,
                                 "outcome": "passed" if ok else "wrong_answer", "passed": ok})
    m = compute_mtpb_metrics(rows, PROBLEMS, [1, 2, 5], resamples=50)
    multi = m["modes"][MULTI_TURN]
    assert multi["per_problem"]["MTPB/3"]["pass_rate"] == pytest.approx(4 / 20)
    assert multi["per_problem"]["MTPB/1"]["pass_rate"] == pytest.approx(1 / 20)
    assert multi["pass_rate"]["value"] == pytest.approx((0.2 + 0.05) / 2)
    assert multi["categories"] == {"math": {"problems": 1, "pass_rate": pytest.approx(0.2)},
                                   "string": {"problems": 1, "pass_rate": pytest.approx(0.05)}}
    assert multi["pass_at_k"]["1"]["value"] == pytest.approx(multi["pass_rate"]["value"])
    # MTPB/1 test 0: n=4, c=1 -> pass@2 = 1 - C(3,2)/C(4,2) = 0.5; other tests 0.
    assert multi["pass_at_k"]["2"]["value"] == pytest.approx((1.0 / 5 + 0.5 / 5) / 2)
    assert multi["pass_at_k"]["5"] == {"value": None, "ci95": None, "undefined_test_cases": 10, "why": "n < 5"}
    assert multi["outcomes"]["passed"] == 5 and multi["pairs"] == 40
    assert m["comparison"]["pass_rate"] == {MULTI_TURN: pytest.approx(0.125), SINGLE_TURN: pytest.approx(0.05)}
    assert m["comparison"]["categories"]["string"] == {MULTI_TURN: pytest.approx(0.05), SINGLE_TURN: 0.0}


# ----------------------------------------------------------------------------------- through Ray and the sandbox

# Test cases of every output type: int (3), list of str (1), None and int (41), dict (89), bool (11), float (33),
# a string from a problem that reads a file MTPB does not ship (46).
CHECKED = [1, 3, 11, 33, 41, 46, 89]


def main(argv: list[str]) -> int:
    return stage_main("eval", argv)


@pytest.fixture(scope="module")
def checked(ray_head, eval_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("check") / "out"
    assert main(["--benchmark", "mtpb", "--check-benchmark", "--out", str(out), "--set", f"problems={CHECKED}"]) == 0
    return out


def test_benchmark_check_in_the_sandbox(checked):
    check = json.loads((checked / "check.json").read_text())
    assert check["ok"] and check["tasks"] == 35 and check["canonical_passed"] == 35
    assert check["weak_tests"] == [] and check["unexpected_failures"] == []
    assert [x["task_id"] for x in check["needs_missing_files"]] == ["MTPB/38", "MTPB/46"]
    assert {"python", "numpy", "pandas", "sklearn", "bwrap"} <= set(check["toolchains"])
    assert not any(v.startswith("missing") for v in check["toolchains"].values())
    rows = [json.loads(x) for x in (checked / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 70
    assert {(r["kind"], r["outcome"]) for r in rows} == {("canonical", "passed"), ("wrong", "wrong_answer")}


SOLUTION_3 = ["def minutes_to_seconds(m):\n    return m * 60\n\n\n\ndef junk():\n    pass",
              "def hours_to_seconds(h):\n    return h * 3600\n# a comment ends the turn",
              "print(hours_to_seconds({a1}) + minutes_to_seconds({a2}))\nprint('a second print is cut')"]
SINGLE_3 = ("def minutes_to_seconds(m):\n    return m * 60\n\n\ndef hours_to_seconds(h):\n    return h * 3600\n\n\n"
            "hours_to_seconds({a1}) + minutes_to_seconds({a2})\n")  # the last expression is printed


def _samples_3() -> list[dict]:
    lines = []
    for t in range(5):
        inputs = PROBLEMS["MTPB/3"].inputs[t]
        good = [x.format(**inputs) for x in SOLUTION_3]
        lines += [
            {"task_id": "MTPB/3", "test_index": t, "sample_id": 0, "turns": good},
            {"task_id": "MTPB/3", "test_index": t, "sample_id": 1, "turns": good[:2] + ["print(0)"]},
            {"task_id": "MTPB/3", "test_index": t, "sample_id": 2, "turns": good[:2] + ["print(undefined_name)"]},
            {"task_id": "MTPB/3", "test_index": t, "sample_id": 3, "turns": good[:2] + ["print(1 // 0)"]},
            {"task_id": "MTPB/3", "test_index": t, "mode": SINGLE_TURN, "turns": [SINGLE_3.format(**inputs)]},
            {"task_id": "MTPB/3", "test_index": t, "mode": SINGLE_TURN, "turns": ["while True:\n    pass\n"]},
        ]
    return lines


def test_samples_scored_end_to_end(checked, tmp_path):
    samples = tmp_path / "s.jsonl"
    samples.write_text("".join(json.dumps(x) + "\n" for x in _samples_3()))
    out = tmp_path / "out"
    args = ["--benchmark", "mtpb", "--samples", str(samples), "--out", str(out), "--set", "metrics.k=[1,2]",
            "--set", "execution.mtpb_time_s=3", "--set", "execution.retry_timeouts=false"]
    assert main(args) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    assert {"task_id", "test_index", "sample_id", "mode", "outcome", "passed"} <= set(rows[0])
    by = {(r["mode"], r["sample_id"]): set() for r in rows}
    for r in rows:
        by[(r["mode"], r["sample_id"])].add(r["outcome"])
    assert by == {(MULTI_TURN, 0): {"passed"}, (MULTI_TURN, 1): {"wrong_answer"},
                  (MULTI_TURN, 2): {"compile_error"}, (MULTI_TURN, 3): {"runtime_error"},
                  (SINGLE_TURN, 0): {"passed"}, (SINGLE_TURN, 1): {"timeout"}}
    summary = json.loads((out / "summary.json").read_text())
    modes = summary["metrics"]["modes"]
    assert modes[MULTI_TURN]["pass_rate"]["value"] == pytest.approx(0.25)
    assert modes[SINGLE_TURN]["pass_rate"]["value"] == pytest.approx(0.5)
    assert modes[MULTI_TURN]["pass_at_k"]["2"]["value"] == pytest.approx(0.5)
    assert summary["metrics"]["comparison"]["categories"]["math"] == {MULTI_TURN: pytest.approx(0.25),
                                                                      SINGLE_TURN: pytest.approx(0.5)}
    assert summary["benchmark_check"]["passed"] and summary["benchmark"] == "mtpb"
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["pass_rate_multi_turn"] == pytest.approx(0.25)
    html = (out / "report.html").read_text()
    assert "MTPB" in html and "<script" not in html and "Convert time" in html
    assert (out / "charts" / "categories.png").read_bytes()[:4] == b"\x89PNG"


class FakeMTPB(FakeCompletions):
    """/v1/completions that answers MTPB/3's turns correctly, reading the test case's numbers from the prompt;
    records every prompt."""

    def __init__(self):
        super().__init__(lambda prompt, _: self.answer(prompt))

    @staticmethod
    def answer(prompt: str) -> str:
        a1, a2 = map(int, re.search(r"total seconds of (\d+) hours and (\d+) minutes", prompt).groups()) \
            if "total seconds" in prompt else (0, 0)
        if "seconds.\n# Write a function that takes an integer hours" in prompt:  # all turns at once
            return SINGLE_3.format(a1=a1, a2=a2)
        last = prompt.rstrip("\n").rsplit("\n", 1)[1]
        turn = 2 if "total seconds" in last else 0 if "integer minutes" in last else 1
        return SOLUTION_3[turn].format(a1=a1, a2=a2)


def test_endpoint_generation_turn_by_turn(checked, tmp_path):
    fake = FakeMTPB()
    out = tmp_path / "out"
    try:
        assert main(["--benchmark", "mtpb", "--mtpb-mode", "both", "--endpoint", fake.url, "--out", str(out),
                     "--set", "problems=[3]", "--set", "generation.n=2", "--set", "metrics.k=[1]"]) == 0
    finally:
        fake.close()
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 5 * 2 * 2
    # Each turn's prompt is the whole history so far: the tag line, the prefix, earlier turns truncated.
    for s in samples:
        p = PROBLEMS[s["task_id"]]
        for i in range(len(s["turns"])):
            assert mtpb.turn_prompt(p, s["test_index"], s["mode"], s["turns"][:i]) in fake.prompts
    assert samples[0]["turns"][0] == "def minutes_to_seconds(m):\n    return m * 60"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["generation"]["temperature"] == 0.2  # MTPB's reference default
    assert {m: v["pass_rate"]["value"] for m, v in summary["metrics"]["modes"].items()} == \
        {MULTI_TURN: 1.0, SINGLE_TURN: 1.0}


def test_generation_through_a_tiny_model(checked, tmp_path):
    from codemill.serve.testing import write_random_export
    from codemill.train.model import PRESETS

    export = tmp_path / "export"
    write_random_export(str(export), PRESETS["tiny"], seed=1, init_std=0.1)
    out = tmp_path / "out"
    assert main(["--benchmark", "mtpb", "--mtpb-mode", "both", "--model", str(export), "--out", str(out),
                 "--set", "problems=[3]", "--set", "generation.n=2", "--set", "generation.max_tokens=16",
                 "--set", "metrics.k=[1]",
                 "--set", "generation.device=cpu"]) == 0
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 20
    assert {len(s["turns"]) for s in samples if s["mode"] == MULTI_TURN} == {3}
    assert {len(s["turns"]) for s in samples if s["mode"] == SINGLE_TURN} == {1}
    summary = json.loads((out / "summary.json").read_text())
    for m in summary["metrics"]["modes"].values():
        assert m["pairs"] == 10 and m["pass_rate"]["value"] == 0.0  # a random model solves nothing
