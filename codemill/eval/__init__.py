"""HumanEval-X evaluation: prompts, sandboxed execution, pass@k, reports (see stage.py for the CLI)."""
