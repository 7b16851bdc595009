"""Write Ray's own Grafana dashboards into infra/grafana/ray/, as the installed Ray generates them: the same
factory the Ray dashboard uses to write them into its session folder (metrics/grafana/dashboards), so their
UIDs are the ones the Ray dashboard embeds its charts from. Run after a Ray upgrade (a test compares them):

    .venv/bin/python infra/grafana/ray_dashboards.py

Shipped: the core (default), Data, Train and Serve dashboards. Ray's LLM dashboards (Serve LLM, SGLang, Data
LLM) are left out: codemill serves its own engine, not Ray Serve LLM.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent / "ray"
# file name (as Ray's metrics head names it) -> factory function in grafana_dashboard_factory
DASHBOARDS = {
    "default_grafana_dashboard.json": "generate_default_grafana_dashboard",
    "data_grafana_dashboard.json": "generate_data_grafana_dashboard",
    "train_grafana_dashboard.json": "generate_train_grafana_dashboard",
    "serve_grafana_dashboard.json": "generate_serve_grafana_dashboard",
    "serve_deployment_grafana_dashboard.json": "generate_serve_deployment_grafana_dashboard",
}


def generate() -> dict[str, dict]:
    """{file name: dashboard JSON} as this Ray generates them (with no RAY_GRAFANA_* overrides set)."""
    from ray.dashboard.modules.metrics import grafana_dashboard_factory as factory

    return {name: json.loads(getattr(factory, function)()[0]) for name, function in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, dashboard in generate().items():
        # One line per dashboard: a generated file, compared by content, never edited by hand.
        (OUT / name).write_text(json.dumps(dashboard, separators=(",", ":")) + "\n")
        print(f"wrote {OUT / name} (uid {dashboard['uid']})")


if __name__ == "__main__":
    main()
