"""infra/ checked by running things: the launcher config through Ray's own validation, the KubeRay RayJobs' entrypoints as the DAG runner would submit them, bubblewrap sandboxes as the eval workers make them, the
node-secrets script against a fake SSM, and the paper-scale DAG shown with S3 storage."""

from __future__ import annotations

import copy
import importlib.util
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import tomllib
import yaml

from codemill.config import build_config, config_hash
from codemill.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CODEGEEX = REPO / "dags" / "codegeex.yaml"
IMAGE_SRC = "/opt/codemill/src"          # where infra/docker/Dockerfile puts this repository
RUN_ROOT = "s3://codemill-runs/codegeex"  # the run root the KubeRay manifests use
PIPELINE = ("crawl", "filter", "dedup", "tokenize", "train", "eval")
PENDING_STAGES = {"eval", "serve"}        # written into the DAG before the registry has them


# --- helpers ----------------------------------------------------------------------------------------------

def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def in_repo(image_path: str) -> Path:
    """A path inside the image's copy of this repository, as a path of this checkout."""
    assert image_path.startswith(IMAGE_SRC + "/"), f"{image_path} is not under {IMAGE_SRC}"
    return REPO / image_path[len(IMAGE_SRC) + 1:]


def dag_stages() -> dict[str, dict]:
    return {st["name"]: st for st in load_yaml(CODEGEEX)["stages"]}


def config_model(stage: str):
    if stage in STAGES:
        return STAGES[stage].load_config_model()
    if stage == "serve":  # not in the registry yet: its config model is the serve package's
        from codemill.serve.config import ServeConfig
        return ServeConfig
    if stage == "eval":  # likewise
        from codemill.eval.config import EvalConfig
        return EvalConfig
    raise AssertionError(f"no config model known for stage {stage!r}")


# Besides KubeRay's resources, infra/kuberay/ holds the service account the pods run as and the Prometheus
# Operator's scrape of them.
OTHER_KINDS = {("v1", "ServiceAccount"), ("monitoring.coreos.com/v1", "PodMonitor")}


def all_kuberay_docs() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted((INFRA / "kuberay").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def kuberay_docs() -> list[tuple[Path, dict]]:
    """The ray.io documents of infra/kuberay/."""
    docs = all_kuberay_docs()
    for path, doc in docs:
        assert doc.get("apiVersion") == "ray.io/v1" or (doc.get("apiVersion"), doc.get("kind")) in OTHER_KINDS, \
            f"{path.relative_to(REPO)}: {doc.get('apiVersion')} {doc.get('kind')}"
    return [(p, d) for p, d in docs if d.get("apiVersion") == "ray.io/v1"]


def rayjobs() -> dict[str, tuple[Path, dict]]:
    jobs = {}
    for path, doc in kuberay_docs():
        if doc.get("kind") == "RayJob":
            stage = doc["metadata"]["labels"]["codemill.io/stage"]
            assert stage not in jobs, f"two RayJobs for stage {stage}"
            jobs[stage] = (path, doc)
    return jobs


def cluster_specs(doc: dict) -> list[dict]:
    spec = doc["spec"]
    return {"RayCluster": [spec], "RayJob": [spec.get("rayClusterSpec")],
            "RayService": [spec.get("rayClusterConfig")]}[doc["kind"]]


def pod_specs(doc: dict) -> list[dict]:
    pods = []
    for cs in cluster_specs(doc):
        pods.append(cs["headGroupSpec"]["template"]["spec"])
        pods += [g["template"]["spec"] for g in cs.get("workerGroupSpecs", [])]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in doc["spec"]:
        pods.append(doc["spec"]["submitterPodTemplate"]["spec"])
    return pods


def containers(doc: dict) -> list[dict]:
    return [c for pod in pod_specs(doc) for c in pod.get("containers", []) + pod.get("initContainers", [])]


# --- KubeRay's ray.io/v1 fields (tests/fixtures/kuberay_v1_fields.yaml, from KubeRay's API reference) ---

def field_errors(value, typ, where: str, types: dict) -> list[str]:
    """What in `value` does not match the documented type `typ`."""
    if isinstance(typ, dict):
        return [] if value in typ["enum"] else [f"{where}: {value!r} is not one of {typ['enum']}"]
    if typ == "any":
        return [] if isinstance(value, dict | list) else [f"{where}: expected an object, got {value!r}"]
    if typ.startswith("list of "):
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in field_errors(v, typ[8:], f"{where}[{i}]", types)]
    scalars = {"string": str, "boolean": bool, "integer": int, "number": int | float}
    if typ in scalars:
        ok = isinstance(value, scalars[typ]) and not (typ in ("integer", "number") and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {typ}, got {value!r}"]
    if typ == "map":
        ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        return [] if ok else [f"{where}: expected a map of strings to strings, got {value!r}"]
    if typ == "quantity":
        ok = isinstance(value, str | int | float) and not isinstance(value, bool)
        return [] if ok else [f"{where}: expected a quantity, got {value!r}"]
    if typ == "quantities":
        if not isinstance(value, dict):
            return [f"{where}: expected a map of quantities"]
        return [e for k, v in value.items() for e in field_errors(v, "quantity", f"{where}.{k}", types)]
    spec = types[typ]
    if not isinstance(value, dict):
        return [f"{where}: expected a {typ} object, got {type(value).__name__}"]
    errors = [f"{where}: {typ} has no field {k!r} (fields: {', '.join(spec['fields'])})"
              for k in value if k not in spec["fields"]]
    errors += [f"{where}: {typ} needs {k!r}" for k in spec.get("required", []) if k not in value]
    for k, v in value.items():
        if k in spec["fields"]:
            errors += field_errors(v, spec["fields"][k], f"{where}.{k}", types)
    return errors


def planned_by_the_dag(tmp_path: Path) -> dict:
    """What `codemill dag run dags/codegeex.yaml --out RUN_ROOT` would submit, for the registered stages."""
    from codemill.dag import load_dag, plan

    data = load_yaml(CODEGEEX)
    data["stages"] = [st for st in data["stages"] if st["stage"] in STAGES]
    path = tmp_path / "codegeex.yaml"  # the DAG names no path relative to its folder
    path.write_text(yaml.safe_dump(data))
    return {ps.name: ps for ps in plan(load_dag(path), path, RUN_ROOT)}


def parse_entrypoint(entrypoint: str) -> tuple[str, dict[str, str]]:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"], entrypoint
    flags = argv[3:]
    assert len(flags) % 2 == 0 and all(f.startswith("--") for f in flags[::2]), entrypoint
    return argv[2], dict(zip(flags[::2], flags[1::2]))


def test_kuberay_rayjobs_run_each_stage_as_the_dag_runner_would(tmp_path):
    from codemill.dag import entrypoint

    jobs = rayjobs()
    assert sorted(jobs) == sorted(PIPELINE)
    planned = planned_by_the_dag(tmp_path)
    for stage, (path, doc) in jobs.items():
        assert doc["metadata"]["name"] == f"codemill-{stage}"
        module, flags = parse_entrypoint(doc["spec"]["entrypoint"])
        assert module == f"codemill.{stage}"
        assert flags["--out"] == f"{RUN_ROOT}/{stage}"
        assert all(v.startswith("s3://") for k, v in flags.items() if k != "--config"), flags
        if stage in STAGES:
            spec = STAGES[stage]
            assert module == spec.module
            assert importlib.util.find_spec(f"{module}.__main__") is not None
            want_module, want = parse_entrypoint(entrypoint(planned[stage]))
            assert want_module == module
            # Same output and inputs as the DAG runner's job; the config is the image's copy of the DAG's.
            assert {k: v for k, v in flags.items() if k != "--config"} == \
                   {k: v for k, v in want.items() if k != "--config"}, path.name
            if "--config" in flags:
                data = load_yaml(in_repo(flags["--config"]))
                cfg = build_config(spec.load_config_model(), data, source=flags["--config"])
                assert config_hash(cfg) == planned[stage].hash, f"{path.name}: config differs from the DAG's"
            else:
                assert not dag_stages()[stage].get("config")
        else:
            # Not in the registry yet (eval): its package exists and it reads what the DAG wires to it.
            assert stage in PENDING_STAGES and importlib.util.find_spec(f"{module}.__main__") is not None
            inputs = dag_stages()[stage]["inputs"]
            assert {f"--{k}" for k in inputs} | {"--out"} == set(flags) - {"--config"}


def test_eval_workers_can_create_bubblewrap_sandboxes():
    """The eval stage refuses to run untrusted code without its sandbox, which needs namespaces and mounts
    that the container runtimes' default seccomp and AppArmor profiles forbid."""
    _, job = rayjobs()["eval"]
    for group in job["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        pod = group["template"]["spec"]
        ctx = pod["containers"][0]["securityContext"]
        # Unconfined profiles for the namespaces and mounts, an unmasked /proc for the sandbox's own (which needs
        # the pod's own user namespace), root only inside that namespace, and no escalation.
        assert ctx["seccompProfile"] == {"type": "Unconfined"} and ctx["appArmorProfile"] == {"type": "Unconfined"}
        assert ctx["procMount"] == "Unmasked" and pod["hostUsers"] is False
        assert ctx["allowPrivilegeEscalation"] is False
    options = load_yaml(INFRA / "cluster.yaml")["docker"]["run_options"]
    assert {"--security-opt seccomp=unconfined", "--security-opt apparmor=unconfined",
            "--security-opt systempaths=unconfined"} <= set(options)
    # dags/codegeex.yaml's eval runs its executions where the label says the sandbox works.
    labels = load_yaml(INFRA / "cluster.yaml")["available_node_types"]["cpu_worker"]["labels"]
    assert labels["codemill.io/sandbox"] == "true"


# --- the cluster launcher -------------------------------------------------------------------------------

def test_cluster_yaml_passes_rays_launcher_validation():
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = load_yaml(INFRA / "cluster.yaml")
    validate_config(prepare_config(copy.deepcopy(cfg)))  # what `ray up` runs before it calls the cloud
    broken = copy.deepcopy(cfg)
    broken["available_node_types"]["gpu_worker"]["max_worker"] = 4
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(broken))


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for `python - NAME` reading one SSM parameter: prints its value, exits 3 when it does not exist.
cat > /dev/null
case "$2" in
  */github-tokens) printf 'tok-a,tok-b' ;;
  */serve-api-key) exit 3 ;;
  */ray-auth-token) [ -n "$FAKE_RAY_TOKEN" ] && printf '%s' "$FAKE_RAY_TOKEN" || exit "${FAKE_RAY_RC:-3}" ;;
  *) exit 1 ;;
esac
"""


@pytest.mark.parametrize("case", ["all", "no-auth-token", "ssm-error"])
def test_node_secrets_script_exports_from_ssm(tmp_path, case):
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}", "HOME": str(tmp_path)}
    if case == "all":
        env["FAKE_RAY_TOKEN"] = "rt-123"
    if case == "ssm-error":
        env["FAKE_RAY_RC"] = "1"
    script = INFRA / "launcher" / "node-secrets.sh"
    out = subprocess.run(["bash", "-c", f'source "{script}" && echo "G=$GITHUB_TOKENS A=${{RAY_AUTH_TOKEN:-}} '
                                        f'M=${{RAY_AUTH_MODE:-}} K=${{CODEMILL_SERVE_API_KEY-unset}}"'],
                         env=env, capture_output=True, text=True, timeout=30)
    if case == "ssm-error":
        assert out.returncode != 0 and "G=" not in out.stdout  # `source ... && ray start` does not start Ray
        return
    assert out.returncode == 0, out.stderr
    want = "G=tok-a,tok-b A=rt-123 M=token" if case == "all" else "G=tok-a,tok-b A= M="
    want += " K=unset"  # no serve-api-key parameter: left unset, the start goes on
    assert out.stdout.strip() == want
    token_file = tmp_path / ".ray" / "auth_token"  # for Ray's CLI in later shells on the node
    if case == "all":
        assert token_file.read_text() == "rt-123" and token_file.stat().st_mode & 0o777 == 0o600
    else:
        assert not token_file.exists()
    assert "tok-a" not in out.stderr and "rt-123" not in out.stderr


# --- the image ------------------------------------------------------------------------------------------


# --- monitoring -----------------------------------------------------------------------------------------


# --- no credentials anywhere in infra/ or the DAG ----------------------------------------------------------


# --- the paper-scale DAG ----------------------------------------------------------------------------------

def test_codegeex_dag_shows_with_s3_storage(s3_bucket, tmp_path):
    """`codemill dag show dags/codegeex.yaml --out s3://...`, in-process. eval and serve join the check
    as soon as the registry has them; until then the DAG without them is validated, and serve's config
    against the serve package's model."""
    from codemill.dag import show

    data = load_yaml(CODEGEEX)
    names = [st["name"] for st in data["stages"]]
    assert names == [*PIPELINE[:-1], "eval", "serve"]
    by_name = {st["name"]: st for st in data["stages"]}
    assert by_name["eval"]["inputs"] == {"model": "train"} and by_name["serve"]["inputs"] == {"input": "train"}
    missing = PENDING_STAGES - set(STAGES)
    if missing:
        data["stages"] = [st for st in data["stages"] if st["stage"] not in missing]
        dag_path = tmp_path / "codegeex.yaml"
        dag_path.write_text(yaml.safe_dump(data))
        for name in sorted(missing):  # their configs, against the models their packages define
            build_config(config_model(name), by_name[name].get("config", {}), source=f"{CODEGEEX} (stage {name})")
    else:
        dag_path = CODEGEEX
    out = f"{s3_bucket}/run"
    text = show(str(dag_path), out)
    for st in data["stages"]:
        assert re.search(rf"^{st['name']}\s+{st['stage']}\s+config [0-9a-f]{{16}}.*-> {out}/{st['name']}$",
                         text, re.M), text
    assert text.count("would run") == len(data["stages"])
