"""The README and docs/ as a newcomer uses them: the README stays a short map, its stage table is the registry's,
every repository path they name exists, and every `codemill` command they show parses (flags, config files and
`--set` values validated, nothing run)."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

from codemill import runner
from codemill.cli import main as codemill_main
from codemill.cli import stage_table

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 200
# A repository path as the docs write it: a top-level folder of the project, then a path.
PATH = re.compile(r"(?<![\w./-])((?:codemill|dags|docs|examples|benchmarks|infra|tests|scripts|data|\.ci)/[\w./-]*)")
ROOT_FILES = re.compile(r"(?<![\w./-])(Makefile|pyproject\.toml|README\.md)(?![\w.-])")
PLACEHOLDER = re.compile(r"[<>*{}…]|\.\.\.")


def named_paths(text: str) -> set[str]:
    found = set()
    for m in PATH.finditer(text):
        path = m.group(1).rstrip(".,:;)")
        end = m.end(1)
        if PLACEHOLDER.search(text[end:end + 1]) or PLACEHOLDER.search(path):
            continue  # `codemill/<stage>`, `tests/*`: a pattern, not a path
        found.add(path)
    found.update(m.group(1) for m in ROOT_FILES.finditer(text))
    return found


def code_blocks(text: str) -> list[str]:
    """The shell code of a Markdown text: fenced blocks marked bash/sh/console or unmarked, and indented
    blocks outside fences."""
    blocks, current, fence, in_indented = [], [], None, False
    for line in text.splitlines():
        marker = re.match(r"^\s*```(\w*)", line)
        if fence is None and marker:
            fence, current = marker.group(1), []
            continue
        if fence is not None:
            if marker:
                if fence in ("", "bash", "sh", "console"):
                    blocks.append("\n".join(current))
                fence = None
            else:
                current.append(line)
            continue
        if line.startswith(("    ", "\t")):
            if not in_indented:
                blocks.append("")
            blocks[-1] += line + "\n"
            in_indented = True
        elif line.strip():
            in_indented = False
    return blocks


def commands(text: str) -> list[str]:
    """Every `codemill ...` command line of the code blocks (continuation lines joined, comments cut)."""
    out = []
    for block in code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if re.match(r"(\.venv/bin/)?codemill ", line):
                out.append(line)
    return out


def test_readme_is_a_short_map_with_the_registrys_stage_table():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    table = text.split("<!-- stages:begin -->\n", 1)[1].split("<!-- stages:end -->", 1)[0]
    assert table == stage_table(), "the README's stage table differs from the registry: paste `codemill stages`"
    for doc in ("stages", "dags", "eval", "serve", "security", "operations", "testing", "recipe"):
        assert f"docs/{doc}.md" in text


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_path_the_docs_name_exists(doc):
    missing = sorted(p for p in named_paths(doc.read_text()) if not (REPO / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


class Parsed(Exception):
    """A command that got as far as starting its service: it parsed."""


def _parse_only(monkeypatch) -> list[tuple]:
    """Patch every place a command would start work: the stage runner and the DAG runner record instead."""
    calls: list[tuple] = []

    def fake_run_stage(stage, config, out, *args, **kwargs):
        calls.append(("stage", stage, out))

    def fake_run_dag(dag_path, out, *args, **kwargs):
        calls.append(("dag", dag_path, out))
        return []

    import codemill.serve.cli

    def fake_deploy(cfg, address=None, started=None):
        calls.append(("serve", [m.name for m in cfg.models], address))
        raise Parsed

    monkeypatch.setattr(codemill.serve.cli, "deploy", fake_deploy)
    # `dag show` plans every stage (each config validated) and would then read each output's manifest, on S3
    # too: the reading is left out.
    import codemill.dag.cli

    monkeypatch.setattr(codemill.dag.cli, "decide", lambda ps, force=False: (True, "not read: parse only"))
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("codemill"):
            if getattr(module, "run_stage", None) is runner.run_stage:
                monkeypatch.setattr(module, "run_stage", fake_run_stage)
            if getattr(module, "run_dag", None) is not None and module.__name__.startswith("codemill.dag"):
                monkeypatch.setattr(module, "run_dag", fake_run_dag)
    monkeypatch.setattr(runner, "run_stage", fake_run_stage)
    return calls


DOC_COMMANDS = sorted({(doc.name, cmd) for doc in DOCS for cmd in commands(doc.read_text())})


@pytest.mark.parametrize(("doc", "command"), DOC_COMMANDS, ids=[f"{d}: {c[:60]}" for d, c in DOC_COMMANDS])
def test_every_codemill_command_in_the_docs_parses(doc, command, monkeypatch, tmp_path):
    import codemill.dag.cli  # noqa: F401  (imported so its run_dag is patched too)

    argv = shlex.split(command)[1:]
    if argv[:2] == ["dag", "status"]:
        argv = ["dag", "status", "--help"]  # it reads a finished run's state: its flags are what can be checked
    monkeypatch.chdir(REPO)
    calls = _parse_only(monkeypatch)
    try:
        rc = codemill_main(argv)
    except SystemExit as exc:  # argparse: --help exits 0, a bad flag exits 2
        rc = exc.code
    except Parsed:
        rc = 0
    assert rc == 0, f"{doc}: `{command}` does not parse (exit {rc})"
    if "--help" not in argv and argv[0] != "stages":
        assert calls or argv[:2] == ["dag", "show"], f"{doc}: `{command}` parsed but would not run anything"
