"""The serve stage's metrics through Ray's metrics API (`ray.util.metrics`): shown on the Ray dashboard and
its Prometheus endpoint, all named `codemill_serve_*` and tagged by model (and status where it applies).
Engine time (queue + prefill + decode, inside the replica) and framework time (everything else a request
spends between the HTTP proxy and the engine) are separate series (ray#63585)."""

from __future__ import annotations

from codemill.serve.engine import RequestMetrics, StepStats

_LATENCY_BOUNDS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 60, 120]
_TPOT_BOUNDS = [0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1]


class ReplicaMetrics:
    """What a model replica records: its engine's view of each request and step."""

    def __init__(self, model: str):
        from ray.util.metrics import Counter, Gauge, Histogram

        self.tags = {"model": model}
        keys = ("model",)
        self.queue = Histogram("codemill_serve_queue_time_s", "seconds a request waited for a KV-cache slot",
                               _LATENCY_BOUNDS, keys)
        self.ttft = Histogram("codemill_serve_ttft_s", "time to first token, in the engine", _LATENCY_BOUNDS, keys)
        self.tpot = Histogram("codemill_serve_tpot_s", "time per output token after the first", _TPOT_BOUNDS, keys)
        self.engine = Histogram("codemill_serve_engine_time_s", "seconds a request spent in the engine",
                                _LATENCY_BOUNDS, keys)
        self.tokens = Counter("codemill_serve_tokens_generated_total", "output tokens generated", keys)
        self.prompt_tokens = Counter("codemill_serve_prompt_tokens_total", "prompt tokens prefilled", keys)
        self.batch = Gauge("codemill_serve_running_batch_size", "sequences in the last decode step", keys)
        self.step = Histogram("codemill_serve_step_time_s", "seconds per engine step", _TPOT_BOUNDS, keys)

    def on_step(self, stats: StepStats) -> None:
        self.batch.set(stats.batch_size, self.tags)
        if stats.batch_size or stats.prefill_tokens:
            self.step.observe(stats.seconds, self.tags)

    def on_finished(self, m: RequestMetrics) -> None:
        if m.admitted is not None:
            self.queue.observe(m.admitted - m.arrival, self.tags)
        if m.first_token is not None:
            self.ttft.observe(m.first_token - m.arrival, self.tags)
            if m.finished is not None and m.completion_tokens > 1:
                self.tpot.observe((m.finished - m.first_token) / (m.completion_tokens - 1), self.tags)
        if m.finished is not None:
            self.engine.observe(m.finished - m.arrival, self.tags)
        add(self.tokens, m.completion_tokens, self.tags)  # 0 for a prompt scored with max_tokens 0
        add(self.prompt_tokens, m.prompt_tokens, self.tags)


def add(counter, amount: float, tags: dict) -> None:
    """counter += amount. Ray's Counter.inc raises on 0 (and on negatives): a request that generated nothing
    (echo + logprobs with max_tokens 0) adds nothing instead of failing."""
    if amount > 0:
        counter.inc(amount, tags)


class RouterMetrics:
    """What the HTTP ingress records: every request by model and status, end to end and framework time."""

    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        self.requests = Counter("codemill_serve_requests_total", "completion requests by model and HTTP status",
                                ("model", "status"))
        self.latency = Histogram("codemill_serve_request_time_s", "seconds from request to last byte",
                                 _LATENCY_BOUNDS, ("model",))
        self.framework = Histogram("codemill_serve_framework_time_s",
                                   "request seconds outside the engine (HTTP, routing, serialisation)",
                                   _LATENCY_BOUNDS, ("model",))

    def record(self, model: str, status: int, seconds: float, engine_seconds: float | None) -> None:
        add(self.requests, 1, {"model": model, "status": str(status)})
        self.latency.observe(seconds, {"model": model})
        if engine_seconds is not None:
            self.framework.observe(max(seconds - engine_seconds, 0.0), {"model": model})
