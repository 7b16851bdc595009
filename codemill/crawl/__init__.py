"""The crawl stage: repositories from GitHub, git URLs or local folders and archives, read safely in memory
(sources/, extract, decode, selection, repo_language, repo), wired to Ray tasks in stage.py."""
