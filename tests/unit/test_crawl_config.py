"""The crawl's config models refuse what they cannot mean: bools for numbers, negative counts, infinite
times, numbers as text (issue 10 item 8)."""

from __future__ import annotations

import pytest

from codemill.config import ConfigError, build_config
from codemill.crawl.config import CrawlConfig
from codemill.crawl.sources.repo_info import load_metadata

LOCAL = {"type": "local", "paths": ["."]}


def crawl(**values) -> CrawlConfig:
    return build_config(CrawlConfig, {"source": LOCAL, **values}, source="test")


@pytest.mark.parametrize("values, key", [
    ({"max_repos": True}, "max_repos"),
    ({"max_repos": "5"}, "max_repos"),
    ({"max_repos": 2.0}, "max_repos"),
    ({"task_num_cpus": True}, "task_num_cpus"),
    ({"task_num_cpus": float("inf")}, "task_num_cpus"),
    ({"task_timeout_s": float("nan")}, "task_timeout_s"),
    ({"task_memory_mb": 10}, "task_memory_mb"),
    ({"task_memory_mb": 1 << 30}, "task_memory_mb"),  # Ray would overflow and schedule it as nothing
    ({"task_max_retries": -1}, "task_max_retries"),
    ({"selection": {"min_stars": -1}}, "selection.min_stars"),
    ({"selection": {"max_size_kb": -5}}, "selection.max_size_kb"),
    ({"selection": {"min_stars": True}}, "selection.min_stars"),
    ({"selection": {"keep_unknown_stars": 1}}, "selection.keep_unknown_stars"),
    ({"extract": {"max_file_bytes": True}}, "extract.max_file_bytes"),
    ({"extract": {"max_members": 0}}, "extract.max_members"),
    ({"source": {**LOCAL, "default_stars": -1}}, "source.local.default_stars"),
    ({"source": {**LOCAL, "expand_children": "yes"}}, "source.local.expand_children"),
    ({"source": {"type": "git", "urls": ["https://h/o/r"], "depth": True}}, "source.git.depth"),
    ({"source": {"type": "git", "urls": ["https://h/o/r"], "clone_timeout_s": float("inf")}}, "source.git.clone_timeout_s"),
    ({"source": {"type": "github", "min_stars": -1}}, "source.github.min_stars"),
    ({"source": {"type": "github", "per_page": True}}, "source.github.per_page"),
    ({"source": {"type": "github", "backoff_max_s": float("inf")}}, "source.github.backoff_max_s"),
])
def test_numeric_fields_are_strict_and_bounded(values, key):
    """`true` was accepted for an int and negative min_stars/max_size_kb were accepted."""
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        crawl(**values)


def test_valid_numbers_are_kept():
    cfg = crawl(max_repos=5, task_num_cpus=1, task_timeout_s=60, selection={"min_stars": 0, "max_size_kb": 0})
    assert (cfg.max_repos, cfg.task_num_cpus, cfg.task_timeout_s) == (5, 1.0, 60.0)
    assert (cfg.selection.min_stars, cfg.selection.max_size_kb) == (0, 0)


def test_metadata_numbers_are_strict_but_csv_digits_are_read(tmp_path):
    yaml_file = tmp_path / "meta.yaml"
    yaml_file.write_text("o/a: {stars: true}\n")
    with pytest.raises(ConfigError, match="entry o/a"):
        load_metadata(str(yaml_file))
    csv_file = tmp_path / "meta.csv"
    csv_file.write_text("full_name,stars,size_kb\no/a,12,340\n")
    assert load_metadata(str(csv_file))["o/a"].stars == 12
    csv_file.write_text("full_name,stars\no/a,-3\n")
    with pytest.raises(ConfigError, match="entry o/a"):
        load_metadata(str(csv_file))
