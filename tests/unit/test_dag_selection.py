"""`--from`/`--until`/`--only` select parts of a DAG's graph."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from codemill.config import ConfigError
from codemill.dag import load_dag, plan
from codemill.dag.run import Selection


def diamond(path: Path, corpus: Path, dedup_extra: str = "", crawl_extra: str = "") -> Path:
    """crawl -> filter -> (dedup_a, dedup_b): the two dedups are independent."""
    path.write_text(textwrap.dedent(f"""
        name: diamond
        stages:
          - name: crawl
            stage: crawl
            config:
              source: {{type: local, paths: ["{corpus}"], expand_children: true}}
              {crawl_extra}
          - name: filter
            stage: filter
            input: crawl
          - name: dedup_a
            stage: dedup
            inputs: {{input: filter}}
            {dedup_extra}
          - name: dedup_b
            stage: dedup
            inputs: {{input: filter}}
            config: {{near: {{threshold: 0.8}}}}
        """))
    return path


def test_from_until_only_select_parts_of_the_graph(tmp_path):
    dag = diamond(tmp_path / "d.yaml", tmp_path)
    planned = plan(load_dag(dag), dag, str(tmp_path / "run"))
    names = lambda sel: [p.name for p in sel.apply(planned, str(dag))]  # noqa: E731
    assert names(Selection(start="filter")) == ["filter", "dedup_a", "dedup_b"]
    assert names(Selection(until="dedup_a")) == ["crawl", "filter", "dedup_a"]
    assert names(Selection(start="filter", until="dedup_b")) == ["filter", "dedup_b"]
    assert names(Selection(only=["dedup_b"])) == ["dedup_b"]
    with pytest.raises(ConfigError, match=r"--from \['nope'\]: not stages of"):
        Selection(start="nope").apply(planned, str(dag))
