"""infra/ and dags/codegeex.yaml, checked without a cluster or a network: the launcher config by Ray's own
schema validation, the KubeRay manifests against KubeRay's documented ray.io/v1 fields and against this
project (image, stage modules, entrypoints the DAG runner would submit, configs), the image's pins against
pyproject.toml, the Prometheus and Grafana files against the metrics the code defines, and the paper-scale
DAG through `codemill dag show`."""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from codemill.config import build_config, config_hash
from codemill.secrets import is_secret_name, redact_url
from codemill.stages import STAGES

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
CODEGEEX = REPO / "dags" / "codegeex.yaml"
FIELDS = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay_v1_fields.yaml"
IMAGE_SRC = "/opt/codemill/src"          # where infra/docker/Dockerfile puts this repository
RUN_ROOT = "s3://codemill-runs/codegeex"  # the run root the KubeRay manifests use


# --- helpers ----------------------------------------------------------------------------------------------

def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", (INFRA / "docker" / "Dockerfile").read_text(), re.M))


def built_image() -> str:
    """The image infra/docker/build.sh builds (and the Dockerfile's header names)."""
    m = re.search(r'^IMAGE="\$\{CODEMILL_IMAGE:-([^}]+)\}"$', (INFRA / "docker" / "build.sh").read_text(), re.M)
    assert m, "infra/docker/build.sh must set IMAGE=\"${CODEMILL_IMAGE:-<image>}\""
    return m.group(1)


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


def other_doc(kind: str) -> dict:
    (doc,) = [d for _, d in all_kuberay_docs() if d.get("kind") == kind]
    return doc


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


def manifest_errors(doc: dict, fields: dict) -> list[str]:
    errors = [f"top level: unknown field {k!r}" for k in doc if k not in ("apiVersion", "kind", "metadata", "spec")]
    if doc.get("apiVersion") != "ray.io/v1":
        errors.append(f"apiVersion {doc.get('apiVersion')!r}, expected ray.io/v1")
    if doc.get("kind") not in fields["kinds"]:
        return errors + [f"kind {doc.get('kind')!r} is not one of {list(fields['kinds'])}"]
    if not doc.get("metadata", {}).get("name"):
        errors.append("metadata.name is missing")
    errors += field_errors(doc.get("metadata", {}), "ObjectMeta", "metadata", fields["types"])
    errors += field_errors(doc.get("spec"), fields["kinds"][doc["kind"]], "spec", fields["types"])
    return errors


def test_kuberay_manifests_parse_and_use_only_documented_ray_io_v1_fields():
    fields = load_yaml(FIELDS)
    docs = kuberay_docs()
    assert {d["kind"] for _, d in docs} == {"RayCluster", "RayJob", "RayService"}
    for path, doc in docs:
        assert manifest_errors(doc, fields) == [], f"{path.relative_to(REPO)}"
    # The checker itself refuses what KubeRay would: a misspelt field, a number where KubeRay wants the
    # string map of `ray start` flags, a worker group without its required name, an unknown submission mode.
    _, job = rayjobs()["crawl"]
    bad = copy.deepcopy(job)
    bad["spec"]["entrypoint_num_cpus"] = 1
    bad["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    del bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["groupName"]
    bad["spec"]["submissionMode"] = "K8sJob"
    errors = "\n".join(manifest_errors(bad, fields))
    for what in ("entrypoint_num_cpus", "rayStartParams", "needs 'groupName'", "K8sJob"):
        assert what in errors


def test_kuberay_pods_run_the_image_infra_docker_builds():
    image = built_image()
    for path, doc in kuberay_docs():
        images = {c["image"] for c in containers(doc)}
        assert images == {image}, f"{path.relative_to(REPO)}: {images}"
        for cs in cluster_specs(doc):
            assert cs["rayVersion"] == dockerfile_args()["RAY_VERSION"]
        for pod in pod_specs(doc):
            assert pod["serviceAccountName"] == other_doc("ServiceAccount")["metadata"]["name"]


def test_kuberay_ray_pods_expose_the_metrics_port_the_pod_monitor_scrapes():
    monitor = other_doc("PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert monitor["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}  # KubeRay's pod label
    for path, doc in kuberay_docs():
        for cs in cluster_specs(doc):
            for group in [cs["headGroupSpec"], *cs.get("workerGroupSpecs", [])]:
                port = int(group["rayStartParams"]["metrics-export-port"])
                ports = {p["name"]: p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"]}
                assert ports.get(endpoint["port"]) == port, f"{path.name}: {group.get('groupName', 'head')}"


def test_kuberay_credentials_come_from_secrets_by_reference():
    referenced = set()
    for path, doc in kuberay_docs():
        for c in containers(doc):
            for env in c.get("env", []):
                name = env["name"]
                assert not name.startswith("RAY_AUTH_"), f"{path.name}: {name} is KubeRay's to set (authOptions)"
                if is_secret_name(name):
                    assert "value" not in env, f"{path.name}: {name} has a literal value"
                    ref = env["valueFrom"]["secretKeyRef"]
                    assert ref["name"] and ref["key"], f"{path.name}: {name}"
                    referenced.add(name)
            assert "envFrom" not in c, f"{path.name}: envFrom would put every key of a secret in the env"
        # Never through a Ray runtime env (the dashboard shows it to everyone who can open it).
        assert "runtimeEnvYAML" not in doc["spec"], path.name
    assert {"GITHUB_TOKENS", "AWS_SECRET_ACCESS_KEY", "CODEMILL_SERVE_API_KEY"} <= referenced
    # The crawl, which reads GitHub, carries the tokens on every pod of its cluster.
    _, crawl = rayjobs()["crawl"]
    for pod in pod_specs(crawl)[:-1]:
        assert "GITHUB_TOKENS" in {e["name"] for e in pod["containers"][0]["env"]}
    # Ray's token authentication on every cluster, its token from a secret that KubeRay hands to the Ray
    # containers and uses for its own calls of the dashboard API (job status, Serve status).
    for _, doc in kuberay_docs():
        for cs in cluster_specs(doc):
            assert cs["authOptions"] == {"mode": "token", "secretName": "codemill-ray-auth"}


def parse_entrypoint(entrypoint: str) -> tuple[str, dict[str, str]]:
    argv = shlex.split(entrypoint)
    assert argv[:2] == ["python", "-m"], entrypoint
    flags = argv[3:]
    assert len(flags) % 2 == 0 and all(f.startswith("--") for f in flags[::2]), entrypoint
    return argv[2], dict(zip(flags[::2], flags[1::2]))


def test_kuberay_train_cluster_has_the_gpus_its_config_asks_for():
    _, job = rayjobs()["train"]
    _, flags = parse_entrypoint(job["spec"]["entrypoint"])
    cfg = build_config(STAGES["train"].load_config_model(), load_yaml(in_repo(flags["--config"])))
    gpus = sum(int(g["replicas"]) * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]
                                        .get("nvidia.com/gpu", 0))
               for g in job["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    assert cfg.scaling.use_gpu and gpus >= cfg.scaling.num_workers * cfg.scaling.gpus_per_worker >= 192


def test_kuberay_rayservice_serves_the_codemill_app():
    from ray.serve.schema import ServeDeploySchema

    services = [(p, d) for p, d in kuberay_docs() if d["kind"] == "RayService"]
    assert len(services) == 1
    path, doc = services[0]
    serve_cfg = ServeDeploySchema.model_validate(yaml.safe_load(doc["spec"]["serveConfigV2"]))
    (app,) = serve_cfg.applications
    assert app.import_path == "codemill.serve.app:build"
    module, attr = app.import_path.split(":")
    source = Path(importlib.util.find_spec(module).origin).read_text()
    assert attr in {n.name for n in ast.parse(source).body if isinstance(n, ast.FunctionDef)}
    assert app.args["input"] == f"{RUN_ROOT}/train/export"
    data = load_yaml(in_repo(app.args["config"]))
    model = config_model("serve")
    assert config_hash(build_config(model, data)) == \
           config_hash(build_config(model, dag_stages()["serve"].get("config", {})))
    for c in containers(doc):
        assert "CODEMILL_SERVE_API_KEY" in {e["name"] for e in c["env"]}
    assert data["api_key_env"] == "CODEMILL_SERVE_API_KEY"


def test_the_paper_scale_train_waits_for_its_gpus_and_is_retried():
    """192 GPUs on a cluster that autoscales from zero: the stage waits for them longer than a node takes to
    boot, and a refusal or a lost run is submitted again."""
    train = dag_stages()["train"]
    cfg = build_config(config_model("train"), train["config"])
    assert train.get("retries", 0) >= 2 and train.get("retry_backoff_s", 0) >= 60
    assert cfg.scaling.resource_wait_s >= 1800 and not cfg.scaling.trust_autoscaler


def test_infra_stage_configs_are_the_codegeex_dags():
    stages = dag_stages()
    files = sorted((INFRA / "configs").glob("*.yaml"))
    assert {f.stem for f in files} == {name for name, st in stages.items() if st.get("config")}
    for f in files:
        assert load_yaml(f) == stages[f.stem]["config"], f.name
        build_config(config_model(stages[f.stem]["stage"]), load_yaml(f), source=str(f))


# --- the cluster launcher -------------------------------------------------------------------------------


def test_cluster_yaml_groups_install_and_secrets():
    cfg = load_yaml(INFRA / "cluster.yaml")
    dockerfile = (INFRA / "docker" / "Dockerfile").read_text()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    workers = {name: t for name, t in types.items() if name != cfg["head_node_type"]}
    cpu = [t for t in workers.values() if not t["resources"].get("GPU") and t["resources"].get("CPU")]
    gpu = [t for t in workers.values() if t["resources"].get("GPU")]
    assert cpu and gpu and head["resources"].get("GPU", 0) == 0
    for t in workers.values():
        assert 0 <= t["min_workers"] <= t["max_workers"]
    assert sum(t["max_workers"] for t in workers.values()) <= cfg["max_workers"]
    train = build_config(STAGES["train"].load_config_model(), dag_stages()["train"]["config"])
    assert sum(t["max_workers"] * t["resources"]["GPU"] for t in gpu) >= train.scaling.num_workers
    # Every node: codemill's image, this checkout synced over its source and installed with the extras.
    assert cfg["docker"]["image"] == built_image()
    copied = re.findall(r"^COPY --chown=ray:ray (.+) (/opt/codemill/src/\S*)$", dockerfile, re.M)
    in_image = {f"{dest.rstrip('/')}/{src}" if dest.endswith("/") else dest: src
                for sources, dest in copied for src in sources.split()}
    assert {k: v.removeprefix("./") for k, v in cfg["file_mounts"].items()} == in_image
    assert all((REPO / src).exists() for src in in_image.values())
    setup = " ".join(cfg["setup_commands"])
    assert re.search(r"pip install .*-c /opt/codemill/constraints\.txt .*-e \"/opt/codemill/src\[train,serve\]\"", setup)
    assert "/opt/codemill/constraints.txt" in dockerfile
    # Secrets are fetched on the node before Ray starts, by a script that exists in this checkout.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cfg[key])
        script = re.search(r"source (\S+)", start).group(1)
        assert in_repo(script).is_file() and start.index("source") < start.index("ray start")
    for node in types.values():  # S3 and SSM access by instance role, never by keys in the config
        assert "IamInstanceProfile" in node["node_config"]


# --- the image ------------------------------------------------------------------------------------------

def test_dockerfile_pins_match_pyproject_and_setup():
    args = dockerfile_args()
    project = pyproject()["project"]
    reqs = {canonicalize_name(r.name): r for r in map(Requirement, project["dependencies"])}
    extras = {canonicalize_name(r.name): r for e in ("train", "serve")
              for r in map(Requirement, project["optional-dependencies"][e])}
    assert Version(args["RAY_VERSION"]) in reqs["ray"].specifier
    assert Version(args["RAY_VERSION"]) in extras["ray"].specifier
    assert Version(args["DEEPSPEED_VERSION"]) in extras["deepspeed"].specifier
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert args["TORCH_VERSION"] == re.search(r'CODEMILL_TORCH_VERSION:-([^}"]+)', setup).group(1)
    assert args["CODEMILL_VERSION"] == project["version"]
    assert args["PYTHON_VERSION"] == f"{sys.version_info.major}.{sys.version_info.minor}"  # what the tests run on
    cuda = args["CUDA_VERSION"].split(".")
    assert args["TORCH_CUDA"] == f"cu{cuda[0]}{cuda[1]}"
    text = (INFRA / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-\S*devel\S*$", text, re.M)
    assert '-e "/opt/codemill/src[train,serve]"' in text and "COPY --chown=ray:ray data " in text
    # The eval stage's toolchains, the same packages scripts/setup-eval.sh installs (less the report
    # test's browser), and js-md5 where codemill.eval.toolchain looks for it.
    setup_eval = (REPO / "scripts" / "setup-eval.sh").read_text()
    wanted = set(re.findall(r"missing\+=\(([\w.-]+)\)", setup_eval)) - {"chromium"}
    assert wanted and all(re.search(rf"\s{re.escape(pkg)}\s", text) for pkg in wanted), wanted
    assert '--prefix /opt/codemill/src/.cache "js-md5@' in text
    # Ray is started by login shells (KubeRay: `bash -lc`), whose /etc/profile resets PATH.
    assert "export PATH=/opt/codemill/venv/bin:$PATH" in text.replace("\\n", "\n") and "/etc/profile.d/" in text
    assert built_image().endswith(f":{project['version']}-{args['TORCH_CUDA']}")


def constraint_pins() -> dict[str, Version]:
    pins = {}
    for line in (INFRA / "docker" / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version, f"constraints.txt: {line!r} is not pinned"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_constraints_pin_every_dependency_as_pyproject_allows():
    pins = constraint_pins()
    project = pyproject()["project"]
    required = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    names = {canonicalize_name(Requirement(r).name) for r in required}
    assert {"triton", "openai", "httpx", "lm-eval", "ruff", "polars", "torch"} <= names
    for req in map(Requirement, required):
        name = canonicalize_name(req.name)
        if name == "torch":  # installed on its own (setup.sh: the CPU build; the image: the CUDA index)
            for version in (dockerfile_args()["TORCH_VERSION"], setup_torch_version()):
                assert Version(version) in req.specifier, f"torch {version} does not satisfy pyproject's {req}"
            continue
        assert name in pins, f"{req.name} is not pinned in infra/docker/constraints.txt (bash infra/docker/freeze.sh)"
        assert pins[name] in req.specifier, f"{req.name}=={pins[name]} does not satisfy pyproject's {req}"
    args = dockerfile_args()
    assert pins["ray"] == Version(args["RAY_VERSION"]) and pins["deepspeed"] == Version(args["DEEPSPEED_VERSION"])
    assert "torch" not in pins and "codemill" not in pins  # installed on their own (CUDA index, the source)


def setup_torch_version() -> str:
    return re.search(r'CODEMILL_TORCH_VERSION:-([^}"]+)', (REPO / "scripts" / "setup.sh").read_text()).group(1)


def test_ruff_whose_output_the_filter_writes_is_pinned_exactly():
    (ruff,) = [Requirement(r) for r in pyproject()["project"]["dependencies"] if Requirement(r).name == "ruff"]
    (spec,) = ruff.specifier
    assert spec.operator == "==" and constraint_pins()["ruff"] == Version(spec.version)


# How each declared distribution shows up in the code when it is not imported under its own name.
USED_AS = {"pyyaml": r"^\s*(import|from) yaml\b", "moto": r"moto_server", "pytest": r"^\s*import pytest\b",
           "pytest-timeout": r"^timeout = ", "ruff": r"ruff_executable\(\)", "lm-eval": r"lm_eval",
           "tensorboard": r"torch\.utils\.tensorboard", "pytest-xdist": r"PYTEST_XDIST_WORKER"}


def test_every_declared_dependency_is_used_where_it_is_the_natural_tool():
    project = pyproject()["project"]
    required = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    sources = [p for folder in ("codemill", "benchmarks", "tests") for p in (REPO / folder).rglob("*.py")]
    text = "\n".join(p.read_text() for p in sources) + (REPO / "pyproject.toml").read_text()
    for name in sorted({canonicalize_name(Requirement(r).name) for r in required}):
        module = name.replace("-", "_")
        pattern = USED_AS.get(name, rf"^\s*(import|from) {module}\b|importorskip\(\"{module}\"\)")
        assert re.search(pattern, text, re.M), f"{name} is declared in pyproject.toml but used nowhere: drop it"


def requirements_module():
    spec = importlib.util.spec_from_file_location("image_requirements", INFRA / "docker" / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_installs_every_dependency_before_it_copies_the_code():
    text = (INFRA / "docker" / "Dockerfile").read_text()
    steps = re.findall(r"^(COPY|RUN) (.*?)(?<!\\)$", text, re.M | re.S)
    code_copied = next(i for i, (kind, body) in enumerate(steps) if kind == "COPY" and " codemill " in f" {body} ")
    installs = [(i, body) for i, (kind, body) in enumerate(steps) if kind == "RUN" and "pip install" in body]
    deps = [i for i, body in installs if "-r /opt/codemill/deps/requirements.txt" in body]
    assert deps and deps[0] < code_copied, "the dependencies must be installed before `COPY codemill`"
    for i, body in installs:
        if i > code_copied:
            assert "--no-deps" in body, f"a pip install after the code is copied reinstalls dependencies: {body}"
    # What requirements.py reads from pyproject.toml: every requirement of codemill[train,serve], torch aside.
    module = requirements_module()
    listed = module.main([str(REPO / "pyproject.toml"), "train", "serve", "--except", "torch"])
    project = pyproject()["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["train"],
              *project["optional-dependencies"]["serve"]]
    assert set(listed) == {r for r in wanted if Requirement(r).name != "torch"}
    assert "train serve --except torch" in text and "COPY --chown=ray:ray pyproject.toml infra/docker/requirements.py" in text


def test_the_image_builds_the_ops_the_train_stage_loads_on_a_cpu():
    from codemill.train.extensions import CPU_OPS

    text = (INFRA / "docker" / "Dockerfile").read_text()
    for builder in CPU_OPS:
        assert f"create_op_builder('{builder}').load()" in text
    assert "TORCH_EXTENSIONS_DIR=/home/ray/.cache/torch_extensions" in text
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "-m codemill.train.extensions" in setup


# --- monitoring -----------------------------------------------------------------------------------------

METRIC_CLASSES = {"Counter", "Gauge", "Histogram"}


def defined_metrics() -> dict[str, str]:
    """{metric name: Counter|Gauge|Histogram} of every `ray.util.metrics` metric the code creates, found by
    parsing codemill/ (imports under any alias, then calls with a literal name)."""
    found: dict[str, str] = {}
    for path in (REPO / "codemill").rglob("*.py"):
        tree = ast.parse(path.read_text())
        aliases = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "ray.util.metrics":
                aliases.update({a.asname or a.name: a.name for a in node.names if a.name in METRIC_CLASSES})
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            cls = aliases.get(func.id) if isinstance(func, ast.Name) else (
                func.attr if isinstance(func, ast.Attribute) and func.attr in METRIC_CLASSES
                and ast.unparse(func.value) == "ray.util.metrics" else None)
            if cls and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found[node.args[0].value] = cls
    return found


def exported_series(name: str, cls: str) -> set[str]:
    """The Prometheus series of a ray.util.metrics metric: Ray's exporter prefixes the namespace
    (ray._private.telemetry.open_telemetry_metric_recorder.NAMESPACE, "ray"); counters get `_total`
    (unless the name has it), histograms `_bucket`/`_sum`/`_count`, gauges stay as named."""
    from ray._private.telemetry.open_telemetry_metric_recorder import NAMESPACE

    full = f"{NAMESPACE}_{name}"
    if cls == "Counter":
        return {full if full.endswith("_total") else f"{full}_total"}
    if cls == "Histogram":
        return {f"{full}_bucket", f"{full}_sum", f"{full}_count"}
    return {full}


def test_grafana_panels_query_metrics_the_code_defines():
    metrics = defined_metrics()
    assert all(name.startswith("codemill_") for name in metrics), metrics
    series = set().union(*(exported_series(n, c) for n, c in metrics.items()))
    assert exported_series("codemill_x", "Counter") == {"ray_codemill_x_total"}
    dashboard = json.loads((INFRA / "grafana" / "codemill.json").read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert panels
    used = set()
    queries = [(p["title"], t["expr"]) for p in panels for t in p["targets"]]
    assert all(p["targets"] for p in panels)
    for title, expr in queries:
        names = set(re.findall(r"\b(?:ray_)?codemill_\w+", expr))
        assert names, f"panel {title!r}: its query names no codemill metric: {expr}"
        assert names <= series, f"panel {title!r}: {sorted(names - series)} are not metrics the code exports"
        used |= names
    for var in dashboard["templating"]["list"]:
        names = set(re.findall(r"\b(?:ray_)?codemill_\w+", json.dumps(var.get("query", ""))))
        assert names <= series, f"variable {var['name']}: {sorted(names - series)}"
    # Every metric the code defines today is on the dashboard.
    assert {n for n in metrics if not exported_series(n, metrics[n]).isdisjoint(used)} == set(metrics)


def test_prometheus_scrapes_the_discovery_file_ray_writes():
    from ray._private.ray_constants import PROMETHEUS_SERVICE_DISCOVERY_FILE

    cfg = load_yaml(INFRA / "prometheus" / "prometheus.yml")
    (job,) = [j for j in cfg["scrape_configs"] if j["job_name"] == "ray"]
    files = [f for sd in job["file_sd_configs"] for f in sd["files"]]
    # Ray 2.60 writes the file in the session folder (PrometheusServiceDiscoveryWriter.get_target_file_name).
    assert files == [f"/tmp/ray/session_latest/{PROMETHEUS_SERVICE_DISCOVERY_FILE}"]
    # On the launcher's head, that folder is the host's too, where Prometheus runs beside the Ray container.
    cluster = load_yaml(INFRA / "cluster.yaml")
    assert "--volume /tmp/ray:/tmp/ray" in cluster["docker"]["head_run_options"]
    start = " ".join(cluster["head_start_ray_commands"])
    assert "RAY_PROMETHEUS_HOST=http://127.0.0.1:9090" in start and "RAY_GRAFANA_HOST=http://127.0.0.1:3000" in start
    datasource = load_yaml(INFRA / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    listen = "127.0.0.1:9090"
    assert datasource["datasources"][0]["url"] == f"http://{listen}"
    assert listen in (INFRA / "prometheus" / "prometheus.yml").read_text()


# --- no credentials anywhere in infra/ or the DAG ----------------------------------------------------------

CREDENTIAL_PATTERNS = [r"AKIA[0-9A-Z]{16}", r"ASIA[0-9A-Z]{16}", r"gh[pousr]_[A-Za-z0-9]{30,}", r"github_pat_\w{20,}",
                       r"-----BEGIN [A-Z ]*PRIVATE KEY-----", r"(?i)aws_secret_access_key\s*[=:]\s*\S{16,}",
                       r"(?i)\bsk-[A-Za-z0-9]{20,}"]


def test_no_credentials_in_infra_or_the_dag():
    files = [p for p in INFRA.rglob("*") if p.is_file() and p.name != "constraints.txt"] + [CODEGEEX]
    for path in files:
        text = path.read_text()
        for pattern in CREDENTIAL_PATTERNS:
            assert not re.search(pattern, text), f"{path.relative_to(REPO)} matches {pattern}"
        assert redact_url(text) == text, f"{path.relative_to(REPO)}: a URL with credentials"
        for name, value in re.findall(r"(?:--env|-e)\s+([A-Z_][A-Z0-9_]*)=(\S+)", text):
            assert not is_secret_name(name), f"{path.relative_to(REPO)}: {name}={value}"
    assert re.search(r"AKIA[0-9A-Z]{16}", "key AKIAABCDEFGHIJKLMNOP")  # the patterns do match credentials


# --- the paper-scale DAG ----------------------------------------------------------------------------------


def test_codegeex_dag_is_the_papers_recipe():
    from codemill.languages import LANGUAGE_NAMES
    from codemill.train import schedule
    from codemill.train.config import PAPER_GLOBAL_BATCH, PAPER_LOSS_SCALE_WINDOW, PAPER_STEPS

    stages = dag_stages()
    crawl = build_config(STAGES["crawl"].load_config_model(), stages["crawl"]["config"])
    assert crawl.source.type == "github" and sorted(crawl.source.languages) == sorted(LANGUAGE_NAMES)
    assert len(LANGUAGE_NAMES) == 23 and crawl.selection.min_stars == 1 and crawl.selection.max_size_kb == 10240
    filt = build_config(STAGES["filter"].load_config_model(), stages["filter"]["config"])
    assert filt == build_config(STAGES["filter"].load_config_model(), {})  # the defaults are the paper's (SPEC §1)
    dedup = build_config(STAGES["dedup"].load_config_model(), stages["dedup"]["config"])
    shipped = sorted((REPO / "data" / "humaneval-x").glob("*/humaneval_*.jsonl.gz"))
    assert len(shipped) == 5 and sorted(in_repo(p) for p in dedup.decontaminate.paths) == shipped
    train = build_config(STAGES["train"].load_config_model(), stages["train"]["config"])
    assert train.model.preset == "13b" and train.model.seq_length == 2048
    assert (train.global_batch_size, train.steps) == (PAPER_GLOBAL_BATCH, PAPER_STEPS)
    o = train.optimizer
    assert (o.lr_max, o.lr_min, o.warmup_steps, o.decay_steps) == \
           (schedule.LR_MAX, schedule.LR_MIN, schedule.WARMUP_STEPS, schedule.DECAY_STEPS)
    assert train.deepspeed.precision == "fp16" and train.deepspeed.zero_stage == 2
    assert train.deepspeed.loss_scale_window == PAPER_LOSS_SCALE_WINDOW
    assert train.scaling.use_gpu and train.scaling.num_workers * train.scaling.gpus_per_worker >= 192
    tokenize = build_config(STAGES["tokenize"].load_config_model(), stages["tokenize"]["config"])
    assert tokenize.seq_len == train.model.seq_length + 1
    # Config keys that look like secrets only ever hold the NAME of a variable set on the nodes.
    def keys(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                yield f"{where}.{k}", k, v
                yield from keys(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                yield from keys(v, f"{where}[{i}]")

    for st in stages.values():
        for where, key, value in keys(st.get("config", {}), st["name"]):
            if is_secret_name(key):
                assert key in ("token_env", "api_key_env"), where
                names = value if isinstance(value, list) else [value]
                assert all(re.fullmatch(r"[A-Z_][A-Z0-9_]*", n) for n in names), f"{where}: {value!r}"
