"""Where repositories come from: GitHub's REST API, git clone URLs, or folders and archives on disk."""
