"""The Ray Serve application: one `ModelServer` deployment per served export (replicas, GPUs, concurrency
and autoscaling from the config) behind one `Router` ingress that speaks HTTP: OpenAI's
`POST /v1/completions`, `GET /v1/models`, and `GET /healthz`. The router checks the API key, picks the
model by the request's `model` field, and streams what the model replica yields; all generation logic is
in the Ray-free engine and `openai_api`.

`build(args)` is the application builder for `serve run` / `serve deploy` (import path
`codemill.serve.app:build`, see infra/serve/codemill.yaml); `codemill serve` uses `application(config)`.
"""


import asyncio
import hashlib
import hmac
import json
import logging
import os
import re
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException

from codemill.config import ConfigError, build_config, read_yaml
from codemill.serve.config import ModelSection, ServeConfig
from codemill.serve.openai_api import APIError, parse_json_body

EOT = "<|endoftext|>"

log = logging.getLogger("codemill.serve")
HEALTH_TIMEOUT_S = 5.0

api = FastAPI(title="codemill", docs_url=None, redoc_url=None)


def _error(status: int, message: str, type_: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(APIError(status, message, type_, param, code).body(), status_code=status)


# Every answer, unknown routes and wrong methods included, has OpenAI's error shape.
@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
    message = {404: f"no route {request.url.path}; see /v1/completions, /v1/models, /healthz",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
    return _error(exc.status_code, message, type_, None, {404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _error(400, "the request is not valid", "invalid_request_error")


@api.exception_handler(Exception)
async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("request failed")
    return _error(500, "internal error", "server_error")


@serve.deployment
class ModelServer:
    """One export per replica: its engine runs in a process of its own (engine_process.py); this replica
    validates and tokenises requests, and turns engine outputs into OpenAI's responses."""

    def __init__(self, model: dict, config: dict):
        from codemill.serve.engine_process import EngineProcess, EngineSpec
        from codemill.serve.loader import export_uri
        from codemill.serve.metrics import ReplicaMetrics
        from codemill.serve.openai_api import CompletionService, Limits
        from codemill.train.export import load_tokenizer

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        cfg, m = ServeConfig.model_validate(config), ModelSection.model_validate(model)
        self.name, self.cfg = m.name, cfg
        self.metrics = ReplicaMetrics(m.name)
        options = {"dtype": m.dtype, "device": m.device, "max_batch_size": cfg.max_batch_size,
                   "context_length": cfg.context_length, "max_queue": cfg.max_queue,
                   "max_batched_tokens": cfg.max_batched_tokens, "block_size": cfg.block_size,
                   "gpu_memory_utilization": m.gpu_memory_utilization, "kv_cache_bytes_explicit": m.kv_cache_bytes,
                   "graph_sizes": cfg.batch_buckets, "cuda_graphs": m.cuda_graphs, "compile": m.compile,
                   "attention": m.attention}
        self.engine = EngineProcess(EngineSpec(m.input, options, cfg.stream_interval_ms / 1e3),
                                    cfg.engine_start_timeout_s,
                                    on_step=self.metrics.on_step)
        tokenizer = load_tokenizer(export_uri(m.input))
        self.eos_token = EOT
        limits = Limits(cfg.max_n, cfg.max_num_beams, self.engine.info["context_length"], cfg.default_max_tokens,
                        tokenizer.get_vocab_size(), cfg.max_prompts_per_request, cfg.max_stop_strings)
        self.service = CompletionService(self.engine, tokenizer, m.name, limits,
                                         on_finished=self.metrics.on_finished,
                                         stream_interval_s=cfg.stream_interval_ms / 1e3)

    def ready(self) -> dict:
        return {"model": self.name, "memory": self.engine.info["memory"], "engine_pid": self.engine.pid}

    async def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising (the engine process exited, or it did not
        answer a ping between steps, after a device operation, in engine_ping_timeout_s) makes Serve replace
        this replica."""
        await self.engine.ping(self.cfg.engine_ping_timeout_s)

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.kill()

    def tokenizer_call(self, route: str, body: dict) -> dict:
        """vLLM's /tokenize, /detokenize and /tokenizer_info for this model: {"status", "body"}."""
        try:
            if route == "tokenize":
                return {"status": 200, "body": self.service.tokenize_endpoint(body)}
            if route == "detokenize":
                return {"status": 200, "body": self.service.detokenize_endpoint(body)}
            return {"status": 200, "body": self.service.tokenizer_info(self.eos_token)}
        except APIError as exc:
            return {"status": exc.status, "body": exc.body()}

    async def completions(self, body: dict):
        """Yields {"status", "body"} once (a response or an error), or for a stream {"status": 200} then
        {"chunk"} items; the last item carries "replica_s", the seconds spent here."""
        started = time.perf_counter()
        try:
            if body.get("stream") is True:
                chunks = await self.service.stream(body)
                yield {"status": 200}
                try:
                    async for chunk in chunks:
                        yield {"chunk": chunk}
                except APIError as exc:  # after the headers: the error goes in the stream
                    yield {"chunk": exc.body()}
                yield {"end": True, "replica_s": time.perf_counter() - started}
            else:
                body_out = await self.service.complete(body)
                yield {"status": 200, "body": body_out, "replica_s": time.perf_counter() - started}
        except APIError as exc:
            yield {"status": exc.status, "body": exc.body(), "replica_s": time.perf_counter() - started}
        except Exception:
            log.exception("completion failed")
            yield {"status": 500, "body": APIError(500, "internal error", "server_error").body(),
                   "replica_s": time.perf_counter() - started}


@serve.deployment(max_ongoing_requests=10_000)
@serve.ingress(api)
class Router:
    def __init__(self, models: dict, api_key_sha256: str | None, created: int, max_body_bytes: int):
        from codemill.serve.metrics import RouterMetrics

        self.models = models  # name -> DeploymentHandle
        self.key_digest = api_key_sha256
        self.created = created
        self.max_body_bytes = max_body_bytes
        self.metrics = RouterMetrics()

    def _authorised(self, request: Request) -> bool:
        if self.key_digest is None:
            return True
        header = request.headers.get("authorization", "")
        key = header[7:] if header.lower().startswith("bearer ") else ""
        return hmac.compare_digest(hashlib.sha256(key.encode("utf-8", "replace")).hexdigest(), self.key_digest)

    async def _body(self, request: Request) -> dict:
        """The JSON object of the request, read up to max_body_bytes (413 past it), or an APIError."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            raise APIError(413, f"the request body exceeds {self.max_body_bytes} bytes", "invalid_request_error",
                           None, "request_too_large")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > self.max_body_bytes:
                raise APIError(413, f"the request body exceeds {self.max_body_bytes} bytes",
                               "invalid_request_error", None, "request_too_large")
        return parse_json_body(bytes(raw))

    def _model(self, name, default_first: bool = False) -> str:
        """The model a request names; without a name, the only one (or, for the tokenizer routes, the first:
        every codemill export has CodeGeeX's tokenizer, and lm-eval names no model there)."""
        default = next(iter(self.models)) if len(self.models) == 1 or default_first else None
        model = name if name is not None else default
        if not isinstance(model, str) or model not in self.models:
            raise APIError(404, f"the model {str(name)[:128]!r} does not exist; see /v1/models",
                           "invalid_request_error", "model", "model_not_found")
        return model

    @api.get("/healthz")
    async def healthz(self) -> Response:
        try:
            await asyncio.wait_for(asyncio.gather(*(h.ready.remote() for h in self.models.values())),
                                   HEALTH_TIMEOUT_S)
        except Exception:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "models": sorted(self.models)})

    @api.get("/v1/models")
    async def list_models(self, request: Request) -> Response:
        if not self._authorised(request):
            return _error(401, "invalid or missing API key", "invalid_request_error", None, "invalid_api_key")
        return JSONResponse({"object": "list", "data": [
            {"id": name, "object": "model", "created": self.created, "owned_by": "codemill"} for name in self.models]})

    @api.post("/tokenize")
    async def tokenize(self, request: Request) -> Response:
        return await self._tokenizer_route(request, "tokenize")

    @api.post("/detokenize")
    async def detokenize(self, request: Request) -> Response:
        return await self._tokenizer_route(request, "detokenize")

    @api.get("/tokenizer_info")
    async def tokenizer_info(self, request: Request) -> Response:
        return await self._tokenizer_route(request, "tokenizer_info")

    async def _tokenizer_route(self, request: Request, route: str) -> Response:
        """vLLM's tokenizer endpoints (lm-evaluation-harness tokenises through them)."""
        if not self._authorised(request):
            return _error(401, "invalid or missing API key", "invalid_request_error", None, "invalid_api_key")
        try:
            body = await self._body(request) if request.method == "POST" else {}
            name = body.get("model") if route != "tokenizer_info" else request.query_params.get("model")
            model = self._model(name, default_first=True)
            answer = await self.models[model].tokenizer_call.remote(route, body)
        except APIError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)
        return JSONResponse(answer["body"], status_code=answer["status"])

    @api.post("/v1/completions")
    async def completions(self, request: Request) -> Response:
        started = time.perf_counter()
        model, response, replica_s = "-", None, None
        try:
            if not self._authorised(request):
                response = _error(401, "invalid or missing API key", "invalid_request_error", None, "invalid_api_key")
                return response
            try:
                body = await self._body(request)
                model = self._model(body.get("model"))
            except APIError as exc:
                response = JSONResponse(exc.body(), status_code=exc.status)
                return response
            response, replica_s = await self._forward(model, body, started)
            return response
        finally:
            if not isinstance(response, StreamingResponse):
                status = response.status_code if response is not None else 500
                self.metrics.record(model, status, time.perf_counter() - started, replica_s)

    async def _forward(self, model: str, body: dict, started: float) -> tuple[Response, float | None]:
        from ray.serve.exceptions import BackPressureError

        stream = self.models[model].options(stream=True).completions.remote(body)
        try:
            first = await stream.__anext__()
        except BackPressureError:
            return _error(503, "the model's queue is full; retry later", "server_overloaded", None, "queue_full"), None
        except Exception as exc:
            log.warning("model %s unavailable: %s", model, type(exc).__name__)
            return _error(503, f"the model {model!r} is not available right now; retry later", "server_error",
                          None, "model_unavailable"), None
        if "body" in first:  # a whole response or an error; otherwise a stream follows
            return JSONResponse(first["body"], status_code=first["status"]), first.get("replica_s")

        async def events():
            replica_s = None
            try:
                async for item in stream:
                    if "chunk" in item:
                        yield f"data: {json.dumps(item['chunk'], separators=(',', ':'))}\n\n"
                    replica_s = item.get("replica_s", replica_s)
                yield "data: [DONE]\n\n"
            except Exception as exc:  # the replica died mid-stream: say so in the stream, then end it
                log.warning("stream from %s broke: %s", model, type(exc).__name__)
                err = APIError(503, "the model replica failed during the request", "server_error").body()
                yield f"data: {json.dumps(err)}\n\n"
            finally:
                self.metrics.record(model, 200, time.perf_counter() - started, replica_s)

        return StreamingResponse(events(), media_type="text/event-stream"), None


def _deployment_name(model: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_-]", "_", model)


def application(cfg: ServeConfig):
    """The Serve application for a validated config (every model must have its `input`)."""
    missing = [m.name for m in cfg.models if not m.input]
    if missing:
        raise ConfigError(f"models {missing} have no input: give --input EXPORT_URI or models[].input")
    digest = None
    if cfg.api_key_env:
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise ConfigError(f"api_key_env={cfg.api_key_env}, but that environment variable is empty or unset")
        # Only a digest travels to the router (deployment arguments show in the dashboard; the key must not).
        digest = hashlib.sha256(key.encode()).hexdigest()
    handles = {}
    config = cfg.model_dump(mode="json")
    for m in cfg.models:
        options = {"name": _deployment_name(m.name), "max_ongoing_requests": m.max_ongoing_requests,
                   "max_queued_requests": cfg.max_queue, "health_check_period_s": cfg.health_check_period_s,
                   "health_check_timeout_s": cfg.health_check_timeout_s,
                   "ray_actor_options": {"num_cpus": m.cpus_per_replica, "num_gpus": m.gpus_per_replica}}
        if m.replicas is not None:
            options["num_replicas"] = m.replicas
        else:
            a = m.autoscaling
            options["autoscaling_config"] = {"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                                             "target_ongoing_requests": a.target_ongoing_requests}
        handles[m.name] = ModelServer.options(**options).bind(m.model_dump(mode="json"), config)
    return Router.options(ray_actor_options={"num_cpus": 0}).bind(handles, digest, int(time.time()),
                                                                  cfg.max_body_bytes)


def build(args: dict):
    """`serve run codemill.serve.app:build input=EXPORT [config=serve.yaml] [set=k=v,...]`, or the
    `args` of an application in a Serve config file."""
    # `config` is a serve config inline (a mapping: the Serve config file stands alone, whatever the working
    # directory of Serve's controller) or the path of one (absolute, or relative to where the builder runs).
    config = args.get("config")
    data = dict(config) if isinstance(config, dict) else read_yaml(config) if config else {}
    overrides = [s for s in str(args.get("set", "")).split(",") if s] if isinstance(args.get("set"), str) \
        else list(args.get("set") or [])
    source = str(config) if isinstance(config, str) else "<serve args>"
    cfg = build_config(ServeConfig, data, overrides, source=source)
    if args.get("input"):
        first = cfg.models[0].model_copy(update={"input": str(args["input"])})
        cfg = cfg.model_copy(update={"models": [first, *cfg.models[1:]]})
    return application(cfg)
