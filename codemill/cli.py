"""`codemill <stage> ...` runs one stage in this process (connecting to Ray as the stage needs);
`codemill dag ...` runs a YAML DAG of stages as Ray jobs."""

from __future__ import annotations

import sys

from codemill.stages import STAGES

USAGE = f"usage: codemill {{dag,{','.join(STAGES)}}} [--help] ..."


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        print("\n  dag        run a YAML DAG of stages as Ray jobs (codemill dag run dags/local.yaml --out runs/demo)")
        for spec in STAGES.values():
            print(f"  {spec.name:10s} {spec.summary}  (also: python -m {spec.module})")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "dag":
        from codemill.dag import main as dag_main
        return dag_main(rest)
    if command not in STAGES:
        print(f"codemill: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    return STAGES[command].load_main()(rest)


if __name__ == "__main__":
    sys.exit(main())
