"""DAG files validated before any work: unknown stages, cycles, bad wiring and bad configs are refused with
the fix; stages run in graph order whatever the file order."""

from __future__ import annotations

import textwrap
from pathlib import Path

import code_corpus
import pytest

from codemill.config import ConfigError
from codemill.dag import load_dag, plan


def make_corpus(root: Path) -> Path:
    """Two tiny 'repositories' of code as folders, each with a file too small and a binary one."""
    return code_corpus.make_corpus(root, ("alpha", "beta"), rejected_files=True)


def write_dag(path: Path, corpus: Path, extra: str = "") -> Path:
    path.write_text(textwrap.dedent(f"""
        name: t
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
          - name: filter
            stage: filter
            input: crawl
        """) + extra)
    return path


def test_bad_stage_name_is_refused(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: a, stage: crawll}\n")
    with pytest.raises(ConfigError, match="unknown stage 'crawll'"):
        load_dag(p)


def test_a_cycle_is_refused_and_named():
    from codemill.dag import DagStage, topological_order

    stages = [DagStage(name="a", stage="dedup", input="b"), DagStage(name="b", stage="dedup", input="a")]
    with pytest.raises(ValueError, match="a cycle: a -> b -> a"):
        topological_order(stages)


def test_stages_run_in_graph_order_whatever_the_file_order(tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n  - {name: f, stage: filter, input: c}\n"
                 "  - {name: c, stage: crawl, config: {source: {type: local, paths: [/tmp]}}}\n")
    assert [ps.name for ps in plan(load_dag(p), p, str(tmp_path / "out"))] == ["c", "f"]


@pytest.mark.parametrize(("stages", "message"), [
    ("  - {name: f, stage: filter, input: nope}\n", "names 'nope', which is not a stage of this DAG"),
    ("  - {name: c, stage: crawl}\n  - {name: d, stage: dedup, input: c}\n",
     "input 'input' reads a filter stage's output, but 'c' is a crawl stage"),
    ("  - {name: c, stage: crawl}\n  - {name: f, stage: filter, inputs: {model: c}}\n",
     "unknown input 'model'; filter takes \\['input'\\]"),
    ("  - {name: f, stage: filter}\n", "needs input 'input'"),
])
def test_bad_wiring_is_refused_with_the_fix(tmp_path, stages, message):
    p = tmp_path / "d.yaml"
    p.write_text("name: t\nstages:\n" + stages)
    with pytest.raises(ConfigError, match=message):
        load_dag(p)


def test_bad_stage_config_is_refused_before_any_work(tmp_path):
    dag = write_dag(tmp_path / "d.yaml", make_corpus(tmp_path / "corpus"))
    with pytest.raises(ConfigError, match="max_repos"):
        plan(load_dag(dag), dag, str(tmp_path / "out"), {"crawl": ["max_repos=-3"]})
    assert not (tmp_path / "out").exists()
