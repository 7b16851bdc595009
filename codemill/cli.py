"""`codemill <stage> ...` runs one stage in this process (connecting to Ray as the stage needs);
`codemill dag ...` runs a YAML DAG of stages as Ray jobs; `codemill stages` prints the registry as a table
(the README's, kept equal to it by a test)."""

from __future__ import annotations

import sys

from codemill.stages import STAGES

USAGE = f"usage: codemill {{dag,stages,{','.join(STAGES)}}} [--help] ..."


def stage_table() -> str:
    """The registry as a Markdown table: each stage, how to run it, what it reads and writes, what it does."""
    rows = ["| stage | run it | reads | writes | what it does |", "|---|---|---|---|---|"]
    for spec in STAGES.values():
        reads = ", ".join(f"`{i.flag}` ({' or '.join(i.stages)}{'' if i.required else ', optional'})"
                          for i in spec.inputs) or "(its source)"
        writes = ", ".join(f"`{o}`" for o in spec.outputs)
        service = " (a service: it runs until stopped)" if spec.long_running else ""
        rows.append(f"| {spec.name} | `codemill {spec.name}`, `python -m {spec.module}` | {reads} | {writes} | "
                    f"{spec.summary}{service} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("\n  dag        run a YAML DAG of stages as Ray jobs (codemill dag run dags/local.yaml --out runs/demo)")
        print("  stages     print the stages as a table (what each reads and writes)")
        for spec in STAGES.values():
            print(f"  {spec.name:10s} {spec.summary}  (also: python -m {spec.module})")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "dag":
        from codemill.dag import main as dag_main
        return dag_main(rest)
    if command == "stages":
        print(stage_table(), end="")
        return 0
    if command not in STAGES:
        print(f"codemill: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    return STAGES[command].load_main()(rest)


if __name__ == "__main__":
    sys.exit(main())
