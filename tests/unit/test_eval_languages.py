"""Prompts, stop rules and post-processing per language, the samples file, the eval config (no execution)."""

from __future__ import annotations

import pytest

from codemill.config import ConfigError, build_config
from codemill.eval import languages as L
from codemill.eval.config import EvalConfig
from codemill.eval.samples import SamplesError, build_jobs, parse_samples
from codemill.humaneval import language_of_task, load_problems, task_id_for


@pytest.fixture(scope="module")
def problems():
    return load_problems()


TAGS = {"Python": "# language: Python\n", "C++": "// language: C++\n", "Java": "// language: Java\n",
        "JavaScript": "// language: JavaScript\n", "Go": "// language: Go\n"}


@pytest.mark.parametrize("language", L.LANGUAGES)
def test_generation_prompt_is_tag_line_then_prompt(language, problems):
    p = problems[task_id_for(language, 7)]
    assert L.adapter(language).generation_prompt(p) == TAGS[language] + p.prompt


def test_translation_prompt_spec_format(problems):
    src, tgt = problems["CPP/3"], problems["Java/3"]
    prompt = L.adapter("Java").translation_prompt(src, tgt)
    assert prompt == (f"code translation\nC++:\n{src.declaration}{src.canonical_solution}\nJava:\n{tgt.declaration}")
    assert "Given a list of deposit" not in prompt.split("Java:\n", 1)[1]  # the target has no docstring


def test_jobs_cover_generation_and_all_20_translation_pairs(problems):
    langs = list(L.LANGUAGES)
    pairs = [(s, t) for s in langs for t in langs if s != t]
    jobs = build_jobs(problems, langs, [0, 5], "both", pairs)
    assert len(pairs) == 20
    assert len([j for j in jobs if j.source_language is None]) == 10
    assert len([j for j in jobs if j.source_language]) == 40
    assert {language_of_task(j.task_id) for j in jobs} == set(langs)


def test_python_stops_at_first_non_indented_line():
    a = L.adapter("Python")
    prefix = "def f(x):\n    \"\"\"doc\"\"\"\n"
    body, finished = a.postprocess("    y = x + 1\n\n    return y\nprint(f(2))\ndef g():\n    pass\n", prefix)
    assert body == "    y = x + 1\n\n    return y\n" and finished
    # Never-closed expression within the length limit: unfinished; a syntax error is finished (it fails later).
    assert a.postprocess("    return (x +\n        1", prefix)[1] is False
    assert a.postprocess('    s = """never closed\n    more', prefix)[1] is False
    assert a.postprocess("    return 1 +* 2\n", prefix)[1] is True
    assert a.postprocess("", prefix)[1] is False


def test_brace_languages_cut_where_the_function_closes():
    cpp = L.adapter("C++")
    text = '    string s = "}{";  // a } in a comment\n    char c = \'}\';\n    /* } */ return s.size();\n}\nint main(){}\n'
    body, finished = cpp.postprocess(text, "")
    assert finished and body.endswith("return s.size();\n}\n") and "main" not in body
    assert cpp.postprocess("    if (x) {\n        return 1;\n", "")[1] is False
    js = L.adapter("JavaScript")
    body, finished = js.postprocess("  return `a}${1}` + '}';\n}\nconsole.log(1)\n", "")
    assert finished and "console" not in body
    go = L.adapter("Go")
    body, finished = go.postprocess("    s := `}`\n    return len(s)\n}\n\nfunc main() {}\n", "")
    assert finished and "main" not in body
    java = L.adapter("Java")
    body, finished = java.postprocess("        return 1;\n    }\n    public int other() { return 2; }\n}\n", "")
    assert finished and body == "        return 1;\n    }\n}\n"  # the method closes; the class is closed for it


def test_go_imports_only_what_the_code_uses(problems):
    go = L.adapter("Go")
    p = problems["Go/158"]  # its prompt says "strings" in a comment, and the code does not use package strings
    text = go.program(p, p.canonical_solution, "generation", L.Toolchain()).files["main_test.go"]
    header = text.split("func ", 1)[0]
    assert '"strings"' not in header and '"sort"' in header
    assert text.startswith("package main")


def test_wrong_solutions_have_the_right_shape(problems):
    assert L.adapter("Go").wrong_completion(problems["Go/0"]) == "    var zero bool\n    return zero\n}\n"
    assert "return false;" in L.adapter("Java").wrong_completion(problems["Java/0"])
    assert "return null;" in L.adapter("Java").wrong_completion(problems["Java/1"])
    assert L.adapter("C++").wrong_completion(problems["CPP/0"]) == "    return {};\n}\n"
    assert L.adapter("Python").wrong_completion(problems["Python/0"]) == "    return None\n"


def test_samples_file_fields_and_aliases():
    text = ('{"task_id": "CPP/1", "completion": "a"}\n{"task_id": "CPP/1", "generation": "b"}\n\n'
            '{"task_id": "Go/3", "completion": "c", "sample_id": 7, "source_language": "Python"}\n')
    s = parse_samples(text)
    assert [(x.task_id, x.sample_id, x.completion, x.mode) for x in s] == [
        ("CPP/1", 0, "a", "generation"), ("CPP/1", 1, "b", "generation"), ("Go/3", 7, "c", "translation")]
    with pytest.raises(SamplesError, match=":1:"):
        parse_samples('{"task_id": "Rust/1", "completion": "x"}\n')
    with pytest.raises(SamplesError, match="completion"):
        parse_samples('{"task_id": "CPP/1"}\n')
    with pytest.raises(SamplesError, match="source_language"):
        parse_samples('{"task_id": "CPP/1", "completion": "", "source_language": "Rust"}\n')


def test_config_defaults_are_the_papers():
    c = EvalConfig()
    assert c.generation.n == 200 and c.generation.top_p == 0.95 and c.generation.temperature == 0.8
    assert c.metrics.k == [1, 10, 100] and c.metrics.budget_k == [100]
    assert c.metrics.weights == {"Python": 32, "C++": 33, "Java": 20, "JavaScript": 9, "Go": 6}
    assert len(c.pairs()) == 20


@pytest.mark.parametrize("override", ["generation.n=0", "languages=[Rust]", "problems=[164]", "metrics.k=[0]",
                                      "translation_pairs=['Python->Python']", "execution.memory_mb=1",
                                      "metrics.weights={Rust: 1}", "generation.temperature=3", "mode=fill"])
def test_config_refuses_bad_values(override):
    with pytest.raises(ConfigError):
        build_config(EvalConfig, {}, [override])
