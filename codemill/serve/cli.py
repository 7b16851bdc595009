"""`codemill serve` / `python -m codemill.serve`: deploy the Serve application for an export on a Ray cluster
(RAY_ADDRESS / --address, or a local Ray started here), print the URL once /healthz answers 200, and stay in
the foreground until Ctrl-C or SIGTERM, then delete the application (and stop Serve if this process started
Ray). Long-running. With `--out` (a DAG gives it), its `_manifest.json` records the URL once the application
answers (status `serving`), or the smoke check's result (status `complete`), so a DAG knows it is up.

Under the stage contract as every stage: its command line is the registry's (`codemill/stages.py`: its input
and flags, through `codemill.runner.stage_parser`), its config is read by the one `--set` parser
(`codemill.config`), and its manifest is written by the runner's manifest code. What differs is the life of a
service: it starts whatever a manifest says (a DAG decides whether to run it), and writes its manifest once up.
"""

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

from codemill import manifest as mf
from codemill import stages, storage
from codemill.config import ConfigError, load_config
from codemill.runner import InputError, check_paths, parsed_flags, resolve_inputs, stage_parser, write_stage_manifest
from codemill.serve.config import ServeConfig

log = logging.getLogger("codemill.serve")

STAGE = "serve"
APP_NAME = "codemill"
SMOKE_PROMPT = "# language: Python\ndef fibonacci(n):\n"


def resolve_config(args: argparse.Namespace) -> tuple[ServeConfig, ServeConfig]:
    """(the config as given: its file, `--set` and the flags that stand for config keys, which the manifest
    records and hashes as a DAG computes it; the config served: the same with `--input` as the first model's
    input)."""
    overrides, _ = parsed_flags(stages.get(STAGE), args)
    given = load_config(ServeConfig, args.config, [*args.overrides, *overrides])
    served = given
    if args.input_input:
        first = given.models[0].model_copy(update={"input": storage.absolute(args.input_input)})
        served = ServeConfig.model_validate({**given.model_dump(), "models": [first.model_dump(), *[
            m.model_dump() for m in given.models[1:]]]})
    if not all(m.input for m in served.models):
        raise ConfigError("no export to serve: give --input EXPORT_URI (or models[].input in the config)")
    return given, served


class Record:
    """Where the service's manifest goes (`--out`), with what it records: the config as given, its identity
    and the input's fingerprint, resolved before anything is deployed (an input that is not complete is refused
    as by every stage; an export made elsewhere, without a manifest, is identified by its URI)."""

    def __init__(self, out: str, given: ServeConfig, inputs: dict[str, str], flags: dict):
        check_paths(out, inputs)
        _, self.records, self.identity = resolve_inputs(STAGE, given, inputs, flags)
        self.out, self.given = out, given

    def write(self, status: str, counts: dict) -> None:
        storage.makedirs(self.out)
        write_stage_manifest(STAGE, self.out, status, self.given, self.identity, self.records, counts,
                             {"finished_at": time.time()})


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
    from codemill.logs import setup_logging

    setup_logging()
    args = stage_parser(stages.get(STAGE)).parse_args(argv)
    try:
        given, cfg = resolve_config(args)
        _, flags = parsed_flags(stages.get(STAGE), args)
        inputs = {"input": cfg.models[0].input} if args.input_input else {}
        record = Record(storage.absolute(args.out), given, inputs, flags) if args.out else None
    except (ConfigError, mf.MissingInputError, InputError) as exc:
        print(f"codemill serve: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(*_) -> None:
        stop.set()

    import ray
    from ray import serve

    # Serve is one per cluster: stop it at the end only if this process started it (or Ray itself).
    address = flags.get("address")
    started = {"serve": False}
    started_ray = not (address or os.environ.get("RAY_ADDRESS"))
    try:
        url = deploy(cfg, address, started)
    except (ConfigError, TimeoutError) as exc:
        print(f"codemill serve: {exc}", file=sys.stderr)
        _shutdown(serve, ray, started_ray or started["serve"])
        return 2
    if cfg.smoke_check:
        ok = smoke_check(url, cfg)
        _shutdown(serve, ray, started_ray or started["serve"])
        if ok and record:
            record.write(mf.STATUS_COMPLETE, {"smoke_check": "passed", "models": len(cfg.models)})
        return 0 if ok else 1
    if record:
        record.write(mf.STATUS_SERVING, {"url": f"{url}/v1", "models": len(cfg.models)})
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
