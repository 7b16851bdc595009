"""An export (local path or s3://) -> a ready `Engine`: weights in the chosen dtype (fp32, bf16, fp16, or
INT8 weight-only), the KV cache, the tokenizer, and the memory each takes. Ray-free."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from codemill import storage
from codemill.serve.decoder import Decoder
from codemill.serve.engine import Engine
from codemill.stages import TRAIN_EXPORT
from codemill.train.export import CONFIG_FILE, WEIGHTS_FILE, load_config, load_tokenizer

log = logging.getLogger("codemill.serve")

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
EOT = "<|endoftext|>"


@dataclass
class Loaded:
    engine: Engine
    tokenizer: object
    memory: dict          # bytes: weights, kv_cache, and the device's allocation after loading (GPU)
    context_length: int


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:  # the GPU Ray assigned this process is its current one
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def compute_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """INT8 keeps activations in bf16 on a GPU and fp32 on a CPU (CPU bf16 matmuls are slow)."""
    if dtype == "int8":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]


def export_uri(uri: str) -> str:
    """The export itself, or the train stage's output that holds it in export/ (what a DAG passes on)."""
    if not storage.exists(storage.join(uri, CONFIG_FILE)) and storage.exists(storage.join(uri, TRAIN_EXPORT,
                                                                                         CONFIG_FILE)):
        return storage.join(uri, TRAIN_EXPORT)
    return uri


def read_state(uri: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    if not storage.exists(storage.join(uri, CONFIG_FILE)):
        raise FileNotFoundError(f"{uri} is not a codemill export (no {CONFIG_FILE}); train writes one in export/")
    return load(storage.read_bytes(storage.join(uri, WEIGHTS_FILE)))


def load_engine(uri: str, dtype: str = "bf16", device: str = "auto", *, max_batch_size: int = 64,
                context_length: int | None = None, max_queue: int = 256, max_prefill_tokens: int = 8192,
                batch_buckets: list[int] | None = None, length_buckets: list[int] | None = None,
                cuda_graphs: bool = True, compile: bool = False, on_step=None) -> Loaded:
    dev = resolve_device(device)
    uri = export_uri(uri)
    if not storage.exists(storage.join(uri, CONFIG_FILE)):
        raise FileNotFoundError(f"{uri} is not a codemill export (no {CONFIG_FILE}); train writes one in export/")
    cfg = load_config(uri)
    tokenizer = load_tokenizer(uri)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        before = torch.cuda.memory_allocated(dev)
    decoder = Decoder(cfg, read_state(uri), dev, compute_dtype(dtype, dev), int8=dtype == "int8",
                      max_slots=max_batch_size, max_length=context_length, compile=compile)
    memory = {"weights": decoder.weight_bytes(), "kv_cache": decoder.cache_bytes()}
    if dev.type == "cuda":
        memory["allocated"] = torch.cuda.memory_allocated(dev) - before
    engine = Engine(decoder, tokenizer, eos_id=tokenizer.token_to_id(EOT), valid_vocab=tokenizer.get_vocab_size(),
                    max_queue=max_queue, max_prefill_tokens=max_prefill_tokens, batch_buckets=batch_buckets,
                    length_buckets=length_buckets, cuda_graphs=cuda_graphs, on_step=on_step)
    log.info("loaded %s as %s on %s: weights %.1f MB, KV cache %.1f MB", uri, dtype, dev,
             memory["weights"] / 1e6, memory["kv_cache"] / 1e6)
    return Loaded(engine, tokenizer, memory, decoder.max_length)
