"""`codemill serve` / `python -m codemill.serve`: deploy the Serve application for an export on a Ray cluster
(RAY_ADDRESS / --address, or a local Ray started here), print the URL once /healthz answers 200, and stay in
the foreground until Ctrl-C or SIGTERM, then delete the application (and stop Serve if this process started
Ray). Long-running. With `--out` (a DAG gives it), its `_manifest.json` records the URL once the application
answers (status `serving`), or the smoke check's result (status `complete`), so a DAG knows it is up."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request

from codemill.config import ConfigError, build_config, read_yaml
from codemill.serve.config import DEFAULT_HOST, DEFAULT_PORT, ServeConfig, apply_overrides

log = logging.getLogger("codemill.serve")

STAGE = "serve"
APP_NAME = "codemill"
DESCRIPTION = "Serve exports over an OpenAI-compatible HTTP API with Ray Serve."
SMOKE_PROMPT = "# language: Python\ndef fibonacci(n):\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="codemill serve", description=DESCRIPTION)
    p.add_argument("--input", help="export URI (the train stage's export/): local folder or s3://; "
                                   "fills models[0].input")
    p.add_argument("--config", help="serve config YAML (models, limits, api_key_env, ...)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set max_batch_size=32 (repeatable)")
    p.add_argument("--host", help=f"HTTP host (default: the config's, {DEFAULT_HOST})")
    p.add_argument("--port", type=int, help=f"HTTP port (default: the config's, {DEFAULT_PORT})")
    p.add_argument("--address", help="Ray address (default: RAY_ADDRESS, else start a local Ray)")
    p.add_argument("--smoke", action="store_true",
                   help="deploy, ask one completion of every model, print it, shut down; exit 0 when all answered")
    p.add_argument("--out", help="record the service here (_manifest.json: URL, models, smoke result)")
    p.add_argument("--force", action="store_true", help="accepted for the DAG runner; a service always starts")
    return p


def record(out: str, cfg: ServeConfig, input_uri: str | None, status: str, counts: dict) -> None:
    """The service's manifest: what serves where (or the smoke check's result), and the input it serves.
    Its config hash is the config's as given (before `--input` fills the first model), as a DAG computes it;
    the input is identified by its fingerprint."""
    from codemill import manifest as mf
    from codemill import storage
    from codemill.config import config_hash
    from codemill.secrets import redact_config

    inputs = {}
    if input_uri:
        try:
            inputs["input"] = mf.input_record(input_uri, mf.require_complete(input_uri, "--input"))
        except mf.MissingInputError:
            pass  # an export made elsewhere: served, but with no stage output to fingerprint
        first = cfg.models[0].model_copy(update={"input": None})
        cfg = ServeConfig.model_validate({**cfg.model_dump(), "models": [first.model_dump(), *[
            m.model_dump() for m in cfg.models[1:]]]})
    storage.makedirs(out)
    mf.write_manifest(out, mf.Manifest(stage=STAGE, status=status, config_hash=config_hash(cfg),
                                       config=redact_config(cfg.model_dump(mode="json")), inputs=inputs,
                                       counts=counts, timings={"finished_at": time.time()}))


def resolve_config(args: argparse.Namespace) -> ServeConfig:
    overrides = list(args.overrides)
    if args.host:
        overrides.append(f"host={args.host}")
    if args.port is not None:
        overrides.append(f"port={args.port}")
    data = apply_overrides(read_yaml(args.config) if args.config else {}, overrides)
    cfg = build_config(ServeConfig, data, source=args.config or "<defaults + --set>")
    if args.input:
        from codemill import storage

        first = cfg.models[0].model_copy(update={"input": storage.absolute(args.input)})
        cfg = ServeConfig.model_validate({**cfg.model_dump(), "models": [first.model_dump(), *[
            m.model_dump() for m in cfg.models[1:]]]})
    if not all(m.input for m in cfg.models):
        raise ConfigError("no export to serve: give --input EXPORT_URI (or models[].input in the config)")
    return cfg


def wait_healthy(url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.time() > deadline:
            raise TimeoutError(f"{url}/healthz did not answer 200 within {timeout_s:.0f} s")
        time.sleep(0.5)


def smoke_check(url: str, cfg: ServeConfig) -> bool:
    """One greedy completion from every served model through the HTTP API."""
    import json

    headers = {"Content-Type": "application/json"}
    if cfg.api_key_env:
        headers["Authorization"] = f"Bearer {os.environ.get(cfg.api_key_env, '')}"
    ok = True
    for m in cfg.models:
        body = json.dumps({"model": m.name, "prompt": SMOKE_PROMPT, "max_tokens": 16, "temperature": 0}).encode()
        request = urllib.request.Request(url + "/v1/completions", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                answer = json.loads(r.read())
            print(f"codemill serve: smoke {m.name}: {answer['choices'][0]['text']!r} {answer['usage']}", flush=True)
        except (urllib.error.URLError, OSError, KeyError, ValueError) as exc:
            print(f"codemill serve: smoke {m.name} failed: {exc}", file=sys.stderr)
            ok = False
    return ok


def running_serve_port() -> int | None:
    """The HTTP port of the Serve already running on the cluster (its controller actor: e.g. another team's
    applications, or an earlier `codemill serve`), or None when none runs."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return None
    return ray.get(controller.get_http_config.remote()).port


def deploy(cfg: ServeConfig, address: str | None = None, started: dict | None = None) -> str:
    """Start (or reuse) Serve's HTTP proxy and deploy the application; returns its base URL once healthy.
    `started["serve"]` tells whether this call started Serve (then stopping it is this process's job)."""
    import ray
    from ray import serve

    from codemill.serve.app import application

    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS") or None, log_to_driver=True)
    port = running_serve_port()
    if started is not None:
        started["serve"] = port is None
    if port is not None and port != cfg.port:
        # Serve has one HTTP proxy per cluster, and a running one keeps its port: waiting on another would
        # only time out.
        print(f"codemill serve: Serve already runs on this cluster with its HTTP proxy on port {port}; the "
              f"application is served there, not on port {cfg.port}", file=sys.stderr, flush=True)
        cfg = cfg.model_copy(update={"port": port})
    serve.start(http_options={"host": cfg.host, "port": cfg.port})
    serve.run(application(cfg), name=APP_NAME, route_prefix=cfg.route_prefix, blocking=False)
    url = f"http://{cfg.host}:{cfg.port}{cfg.route_prefix.rstrip('/')}"
    wait_healthy(url, cfg.health_timeout_s)
    return url


def main(argv: list[str] | None = None) -> int:
    from codemill.runner import setup_logging

    setup_logging()
    args = parser().parse_args(argv)
    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        print(f"codemill serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(*_) -> None:
        stop.set()

    import ray
    from ray import serve

    # Serve is one per cluster: stop it at the end only if this process started it (or Ray itself).
    started = {"serve": False}
    started_ray = not (args.address or os.environ.get("RAY_ADDRESS"))
    try:
        url = deploy(cfg, args.address, started)
    except (ConfigError, TimeoutError) as exc:
        print(f"codemill serve: {exc}", file=sys.stderr)
        _shutdown(serve, ray, started_ray or started["serve"])
        return 2
    from codemill import manifest as mf
    from codemill import storage

    out = storage.absolute(args.out) if args.out else None
    input_uri = cfg.models[0].input if args.input else None
    if args.smoke or cfg.smoke_check:
        ok = smoke_check(url, cfg)
        _shutdown(serve, ray, started_ray or started["serve"])
        if ok and out:
            record(out, cfg, input_uri, mf.STATUS_COMPLETE, {"smoke_check": "passed", "models": len(cfg.models)})
        return 0 if ok else 1
    if out:
        record(out, cfg, input_uri, mf.STATUS_SERVING, {"url": f"{url}/v1", "models": len(cfg.models)})
    # After ray.init, which installs its own SIGTERM handler: ours shuts the application down first.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    print(f"codemill serve: {', '.join(m.name for m in cfg.models)} at {url}/v1 (Ctrl-C to stop)", flush=True)
    while not stop.wait(1.0):  # a timed wait lets the signal handlers run
        pass
    log.info("stopping")
    _shutdown(serve, ray, started_ray or started["serve"])
    return 0


def _shutdown(serve, ray, stop_serve: bool) -> None:
    try:
        serve.delete(APP_NAME)
        if stop_serve:
            serve.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
