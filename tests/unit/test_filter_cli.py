"""The filter command refuses a bad config before any work."""

from __future__ import annotations

from codemill.runner import stage_main

# (repo, path, repo language, content, expected reason)


# --- PEP 8 -------------------------------------------------------------------------------------------


# --- statistics and figure ---------------------------------------------------------------------------


# --- the stage on Ray ---------------------------------------------------------------------------------


def test_cli_refuses_a_bad_config_before_any_work(tmp_path, capsys):
    rc = stage_main("filter", ["--input", str(tmp_path / "crawl"), "--out", str(tmp_path / "filter"),
                            "--set", "min_alpha_ratio=2"])
    assert rc == 2 and "min_alpha_ratio" in capsys.readouterr().err
    assert not (tmp_path / "filter").exists()
