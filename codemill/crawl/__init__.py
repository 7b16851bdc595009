"""The crawl stage: repositories from GitHub, git URLs or local folders and archives, read safely in memory
(sources/, extract with tarstream and walk, decode, selection, repo_language, repo), planned and resumed
by the settings each repository's outputs were made under (keys, outputs, plan, stats), wired to Ray tasks
in stage.py."""
