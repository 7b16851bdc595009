"""The serve stage's YAML, validated: which exports to serve, how (dtype, replicas, GPUs) and the limits
every request is checked against. Defaults follow SPEC §5/§7 and what Ray Serve and vLLM users expect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from codemill.config import StrictModel
from codemill.train.model_config import MAX_SEQ_LENGTH

DEFAULT_MODEL_NAME = "codemill"
DEFAULT_PORT = 8000
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_BATCH_SIZE = 256     # sequences decoded together (their KV-cache blocks permitting)
DEFAULT_MAX_QUEUE = 256          # requests waiting for a slot before new ones get 503
DEFAULT_MAX_N = 16               # OpenAI's `n`, per request
DEFAULT_MAX_NUM_BEAMS = 8
DEFAULT_MAX_BATCHED_TOKENS = 2_048  # tokens in one step, decodes + prompt chunks (bounds one step's latency)
DEFAULT_MAX_ONGOING_REQUESTS = 256  # per replica: Serve's router queues or refuses above this
DEFAULT_STREAM_INTERVAL_MS = 20.0  # like Ray Serve LLM's stream batching: per-chunk work bounds big batches
# CUDA-graph sizes of the decode step (capped at the engine's max_num_seqs, which is captured too): a batch runs
# in the smallest graph that holds it, so the gaps bound the padding; past the largest the step runs eagerly.
DEFAULT_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)

Dtype = Literal["fp32", "bf16", "fp16", "int8"]


class AutoscalingSection(StrictModel):
    """Ray Serve's replica bounds; with min == max the deployment has a fixed replica count."""

    min_replicas: int = Field(1, ge=0, le=1024)
    max_replicas: int = Field(1, ge=1, le=1024)
    target_ongoing_requests: float = Field(32.0, gt=0, description="per replica, what autoscaling aims at")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSection:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} exceeds max_replicas={self.max_replicas}")
        return self


class ModelSection(StrictModel):
    """One export served as one Serve deployment; the request's `model` field picks it by `name`."""

    name: str = Field(DEFAULT_MODEL_NAME, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:/-]+$")
    input: str | None = Field(None, description="export URI (folder or s3://); `--input` fills the first model's")
    dtype: Dtype = "bf16"
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when the replica has a GPU")
    replicas: int | None = Field(None, ge=1, le=1024, description="fixed replica count; null: use autoscaling")
    autoscaling: AutoscalingSection = AutoscalingSection()
    gpus_per_replica: float = Field(0.0, ge=0, le=8)
    cpus_per_replica: float = Field(1.0, ge=0, le=256)
    max_ongoing_requests: int = Field(DEFAULT_MAX_ONGOING_REQUESTS, ge=1, le=100_000)
    cuda_graphs: bool = Field(True, description="capture the decode step per batch bucket (GPU only)")
    compile: bool = Field(False, description="torch.compile the decode step's block regions (GPU: fewer kernels; "
                                             "costs a compile at replica start)")
    attention: Literal["auto", "triton", "sdpa"] = Field(
        "auto", description="decode attention over the KV pages: the Triton flash-decoding kernel, or PyTorch SDPA "
                            "over gathered pages (the plain path); auto: triton on a GPU, sdpa on a CPU")
    gpu_memory_utilization: float = Field(0.9, gt=0.05, le=0.99, description="share of the GPU's memory the "
                                          "weights, KV cache and activations may use; the KV cache gets the rest")
    kv_cache_bytes: int | None = Field(None, ge=2**20, le=2**40, description="fixed KV-cache size (default: from "
                                       "gpu_memory_utilization on a GPU; room for max_batch_size full sequences, at "
                                       "most 2 GiB, on a CPU)")


class ServeConfig(StrictModel):
    models: list[ModelSection] = Field(default_factory=lambda: [ModelSection()], min_length=1)
    host: str = DEFAULT_HOST
    port: int = Field(DEFAULT_PORT, ge=1, le=65_535)
    route_prefix: str = Field("/", pattern=r"^/")
    max_batch_size: int = Field(DEFAULT_MAX_BATCH_SIZE, ge=1, le=1_024)
    max_queue: int = Field(DEFAULT_MAX_QUEUE, ge=0, le=100_000)
    max_n: int = Field(DEFAULT_MAX_N, ge=1, le=256)
    max_num_beams: int = Field(DEFAULT_MAX_NUM_BEAMS, ge=1, le=256)
    max_batched_tokens: int = Field(DEFAULT_MAX_BATCHED_TOKENS, ge=16, le=1_000_000,
                                    description="tokens one engine step runs: a decode token per running sequence, "
                                                "then prompt chunks (chunked prefill)")
    block_size: Literal[8, 16, 32, 64] = Field(16, description="positions per KV-cache block")
    context_length: int = Field(MAX_SEQ_LENGTH, ge=8, le=MAX_SEQ_LENGTH,
                                description="prompt + max_tokens must fit (SPEC §5: 2,048 positions)")
    stream_interval_ms: float = Field(DEFAULT_STREAM_INTERVAL_MS, ge=0, le=1_000,
                                      description="after the first chunk, a request's output is sent at most this "
                                                  "often (merged); 0 = every token")
    default_max_tokens: int = Field(16, ge=1, le=MAX_SEQ_LENGTH, description="OpenAI's default for max_tokens")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="NAME of the environment variable holding the API key")
    batch_buckets: list[Annotated[int, Field(ge=1, le=1_024)]] = Field(
        default_factory=lambda: list(DEFAULT_BATCH_BUCKETS), min_length=1)
    health_timeout_s: float = Field(600.0, gt=0, le=86_400,
                                    description="how long `codemill serve` waits for /healthz")
    max_body_bytes: int = Field(4 * 2**20, ge=1_024, le=2**30, description="larger request bodies get 413")
    max_prompts_per_request: int = Field(64, ge=1, le=4_096, description="prompts in one request's list")
    max_stop_strings: int = Field(64, ge=1, le=1_024, description="stop strings in one request")
    engine_start_timeout_s: float = Field(900.0, gt=0, le=86_400,
                                          description="how long a replica waits for its engine process to load")
    engine_ping_timeout_s: float = Field(20.0, gt=0, le=3_600,
                                         description="a replica is unhealthy when its engine does not answer a "
                                                     "ping (between two steps, after a device operation) this fast")
    health_check_period_s: float = Field(10.0, gt=0, le=3_600, description="Serve's replica health check period")
    health_check_timeout_s: float = Field(30.0, gt=0, le=3_600,
                                          description="Serve replaces a replica whose health check takes longer")
    smoke_check: bool = Field(False, description="deploy, ask every model one completion, shut down (a DAG's check "
                                                 "that a trained model serves); `--smoke` sets it")

    @field_validator("batch_buckets")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v) or sorted(set(v)) != v:
            raise ValueError("buckets must be positive and strictly increasing")
        return v

    @model_validator(mode="after")
    def _unique_names(self) -> ServeConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique, got {names}")
        if self.engine_ping_timeout_s >= self.health_check_timeout_s:
            raise ValueError(f"engine_ping_timeout_s={self.engine_ping_timeout_s} must be below "
                             f"health_check_timeout_s={self.health_check_timeout_s}")
        if self.max_n > self.max_batch_size or self.max_num_beams > self.max_batch_size:
            raise ValueError(f"max_n={self.max_n} and max_num_beams={self.max_num_beams} must fit in "
                             f"max_batch_size={self.max_batch_size}")
        if self.max_batched_tokens <= self.max_batch_size:
            raise ValueError(f"max_batched_tokens={self.max_batched_tokens} must exceed max_batch_size="
                             f"{self.max_batch_size}: a step decodes a token for every running sequence first")
        return self

    def model(self, name: str) -> ModelSection:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(name)

