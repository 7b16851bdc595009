"""The shipped Grafana: provisioning that points at dashboards that exist where infra/README.md mounts them,
Ray's own dashboards exactly as the installed Ray generates them (with the UIDs its dashboard embeds), the
settings the Ray dashboard's embedded charts need, and every panel's queries told apart by their legends."""

from __future__ import annotations

import configparser
import json
import re
import shlex
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "infra" / "grafana"
INFRA_COPY = "~/codemill-infra"  # where infra/README.md copies infra/ on the head


def documented_mounts() -> dict[str, Path]:
    """{path in the Grafana container: file or folder of this checkout}, from infra/README.md's `docker run`."""
    readme = (REPO / "infra" / "README.md").read_text()
    command = re.search(r"docker run -d --name grafana (.*?)grafana/grafana:\S+", readme, re.S).group(1)
    words = shlex.split(command.replace("\\\n", " "))
    mounts = {}
    for flag, value in zip(words, words[1:]):
        if flag == "-v":
            source, target, *_ = value.split(":")
            assert source.startswith(INFRA_COPY + "/"), source
            mounts[target] = REPO / "infra" / source[len(INFRA_COPY) + 1:]
    return mounts


def in_checkout(container_path: str) -> Path:
    for target, source in documented_mounts().items():
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target):].lstrip("/")
    raise AssertionError(f"{container_path} is not mounted by infra/README.md's docker run")


def dashboards_at(container_path: str) -> list[dict]:
    """The dashboards Grafana's file provider loads from a folder (its files, whatever mounts them)."""
    mounts = documented_mounts()
    files = [source for target, source in mounts.items() if target.startswith(container_path.rstrip("/") + "/")
             and source.is_file()]
    folder = in_checkout(container_path) if container_path in mounts else None
    if folder is not None:
        files += sorted(folder.glob("*.json"))
    return [json.loads(f.read_text()) for f in files]


def test_every_provisioned_dashboard_folder_holds_dashboards_that_exist():
    for path in documented_mounts().values():
        assert path.exists(), f"infra/README.md mounts {path.relative_to(REPO)}, which does not exist"
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "codemill.yaml").read_text())["providers"]
    by_folder = {p["folder"]: dashboards_at(p["options"]["path"]) for p in providers}
    assert [d["uid"] for d in by_folder["codemill"]] == ["codemill"]
    uids = [d["uid"] for ds in by_folder.values() for d in ds]
    assert len(uids) == len(set(uids)), uids
    # Grafana reads its provisioning from where grafana.ini says, which is where the folder is mounted.
    ini = configparser.ConfigParser()
    ini.read(GRAFANA / "grafana.ini")
    assert in_checkout(ini["paths"]["provisioning"]) == GRAFANA / "provisioning"
    assert in_checkout("/etc/grafana/grafana.ini") == GRAFANA / "grafana.ini"


def test_rays_dashboards_are_the_ones_the_installed_ray_generates():
    import sys

    sys.path.insert(0, str(GRAFANA))
    try:
        import ray_dashboards
    finally:
        sys.path.remove(str(GRAFANA))
    expected = ray_dashboards.generate()
    shipped = {p.name: json.loads(p.read_text()) for p in (GRAFANA / "ray").glob("*.json")}
    assert set(shipped) == set(expected)
    for name, dashboard in expected.items():
        assert shipped[name] == dashboard, (f"infra/grafana/ray/{name} differs from what this Ray generates: "
                                            f"run .venv/bin/python infra/grafana/ray_dashboards.py")
    # The UIDs the Ray dashboard embeds its charts from (its metrics head records them as it writes them).
    uids = {d["uid"] for d in dashboards_at("/etc/grafana/dashboards/ray")}
    assert {"rayDefaultDashboard", "rayDataDashboard", "rayTrainDashboard", "rayServeDashboard",
            "rayServeDeploymentDashboard"} == uids


def test_grafana_settings_match_what_the_ray_dashboard_expects():
    from ray.dashboard.modules.metrics.metrics_head import DEFAULT_GRAFANA_ORG_ID, DEFAULT_PROMETHEUS_NAME

    ini = configparser.ConfigParser()
    ini.read(GRAFANA / "grafana.ini")
    assert ini["security"]["allow_embedding"] == "true"  # the Ray dashboard shows panels in iframes
    assert ini["auth.anonymous"]["enabled"] == "true" and ini["auth.anonymous"]["org_role"] == "Viewer"
    assert ini["auth.anonymous"]["org_name"] == "Main Org." and DEFAULT_GRAFANA_ORG_ID == "1"  # org 1
    cluster = (REPO / "infra" / "cluster.yaml").read_text()
    grafana_host = re.search(r"RAY_GRAFANA_HOST=(\S+)", cluster).group(1)
    assert grafana_host == f"http://{ini['server']['http_addr']}:{ini['server']['http_port']}"
    # Ray's charts query the datasource named RAY_PROMETHEUS_NAME (default "Prometheus"), which must be the
    # default one (Ray's dashboards pick theirs through a `datasource` variable of type prometheus).
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["name"] == DEFAULT_PROMETHEUS_NAME and source["isDefault"] and source["type"] == "prometheus"
    prometheus_host = re.search(r"RAY_PROMETHEUS_HOST=(\S+)", cluster).group(1)
    assert source["url"] == prometheus_host


def test_every_query_of_a_panel_has_its_own_legend():
    dashboards = dashboards_at("/etc/grafana/dashboards/codemill")
    checked = 0
    for dashboard in dashboards:
        for panel in dashboard["panels"]:
            targets = [t for t in panel.get("targets", []) if not t.get("hide")]
            if len(targets) < 2:
                continue
            legends = [t.get("legendFormat", "") for t in targets]
            assert all(legends), f"panel {panel['title']!r}: a query without a legend: {legends}"
            assert len(set(legends)) == len(legends), f"panel {panel['title']!r}: legends repeat: {legends}"
            checked += 1
    assert checked >= 5
