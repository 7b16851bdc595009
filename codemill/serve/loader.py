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
from codemill.train.model_config import MAX_SEQ_LENGTH

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


# GPU memory kept free beside weights and KV cache: activations of a prefill chunk, logits and sampling of a
# full batch, CUDA graphs' pool, cuBLAS workspaces.
ACTIVATION_RESERVE_BYTES = 2 * 2**30
CPU_KV_CACHE_MAX_BYTES = 2 * 2**30


def kv_cache_bytes(decoder: Decoder, device: torch.device, gpu_memory_utilization: float, max_num_seqs: int,
                   block_size: int, explicit: int | None) -> int:
    """The KV cache's size: `explicit` if given; on a GPU, what `gpu_memory_utilization` of its memory leaves
    after the weights (already loaded) and a reserve for activations; on a CPU, room for every sequence at
    full context length, at most CPU_KV_CACHE_MAX_BYTES."""
    if explicit:
        return explicit
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        budget = int(total * gpu_memory_utilization) - (total - free) - ACTIVATION_RESERVE_BYTES
        if budget <= 0:
            raise RuntimeError(f"no GPU memory left for the KV cache: {free / 2**30:.1f} GiB free of "
                               f"{total / 2**30:.1f} after the weights (gpu_memory_utilization="
                               f"{gpu_memory_utilization})")
        return budget
    per_seq = decoder.bytes_per_block(block_size) * -(-decoder.max_length // block_size)
    return min(per_seq * max_num_seqs, CPU_KV_CACHE_MAX_BYTES)


def load_engine(uri: str, dtype: str = "bf16", device: str = "auto", *, max_batch_size: int = 64,
                context_length: int | None = None, max_queue: int = 256, max_batched_tokens: int = 2048,
                block_size: int = 16, gpu_memory_utilization: float = 0.9, kv_cache_bytes_explicit: int | None = None,
                graph_sizes: list[int] | None = None, cuda_graphs: bool = True, compile: bool = False,
                attention: str = "auto", overlap: bool = True, on_step=None) -> Loaded:
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
                      max_length=context_length, compile=compile, attention=attention)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the state dict read from storage is gone: its memory is free for the cache
    per_block = decoder.bytes_per_block(block_size)
    budget = kv_cache_bytes(decoder, dev, gpu_memory_utilization, max_batch_size, block_size, kv_cache_bytes_explicit)
    num_blocks = budget // per_block
    engine = Engine(decoder, tokenizer, eos_id=tokenizer.token_to_id(EOT), valid_vocab=tokenizer.get_vocab_size(),
                    num_blocks=num_blocks, block_size=block_size, max_num_seqs=max_batch_size,
                    max_batched_tokens=max_batched_tokens, max_queue=max_queue, cuda_graphs=cuda_graphs,
                    graph_sizes=graph_sizes, overlap=overlap, on_step=on_step)
    per_token = per_block // block_size
    memory = {"weights": decoder.weight_bytes(), "kv_cache": decoder.cache_bytes(), "kv_blocks": num_blocks,
              "kv_bytes_per_token": per_token, "kv_bytes_per_2k_sequence": per_token * MAX_SEQ_LENGTH,
              "kv_tokens": num_blocks * block_size,
              "concurrent_2k_sequences": (num_blocks - 1) // -(-MAX_SEQ_LENGTH // block_size)}
    if dev.type == "cuda":
        memory["allocated"] = torch.cuda.memory_allocated(dev) - before
    log.info("loaded %s as %s on %s: weights %.1f MB, KV cache %.1f MB (%d blocks of %d positions: %d concurrent "
             "2,048-token sequences), attention %s", uri, dtype, dev, memory["weights"] / 1e6,
             memory["kv_cache"] / 1e6, num_blocks, block_size, memory["concurrent_2k_sequences"], decoder.attention)
    return Loaded(engine, tokenizer, memory, decoder.max_length)
