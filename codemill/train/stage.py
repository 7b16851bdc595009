"""The train stage's Ray wiring: a `TorchTrainer` whose workers each run `loop.Trainer` (DeepSpeed inside),
checkpoints through `ray.train.report`, then the loss curve and stats on the driver.

Multi-node: every worker reads the shards itself (local paths must exist on every node, so use S3 or a
shared file system for --input), and `run.storage_path` (default <out>/ray_train) and --out must be S3 or
shared storage, since each rank uploads its part of every checkpoint and rank 0 writes the export. NCCL
finds peers through the Ray cluster; set NCCL_SOCKET_IFNAME (and NCCL_IB_HCA on InfiniBand) in the
driver's environment: every NCCL_* variable is passed on to the workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os

from codemill import manifest as mf
from codemill import storage
from codemill.config import ConfigError, config_hash
from codemill.runner import StageRun
from codemill.stages import TRAIN_CHECKPOINTS
from codemill.train import budget, metrics
from codemill.train.capacity import wait_for_resources
from codemill.train.config import TrainConfig

log = logging.getLogger("codemill.train")
# Passed from the driver to every worker: the compiled-extension cache, CUDA build targets, NCCL and the
# S3 endpoint. Never credentials: a runtime env is shown in the dashboard; nodes carry their own.
WORKER_ENV_NAMES = ("TMPDIR", "TORCH_EXTENSIONS_DIR", "TORCH_CUDA_ARCH_LIST", "TORCH_SYMM_MEM_DISABLE_MULTICAST",
                    "NVSHMEM_DISABLE_NVLS", "PYTHONPATH", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                    "AWS_DEFAULT_REGION")
WORKER_ENV_PREFIXES = ("NCCL_",)


def train_worker(loop_config: dict) -> None:
    """Runs in each Ray Train worker."""
    import ray.train
    import ray.train.torch
    import torch

    from codemill.logs import setup_logging
    from codemill.metrics import publish_training
    from codemill.train.extensions import load_train_ops
    from codemill.train.loop import Rank, RunPaths, Trainer

    setup_logging()
    # Before DeepSpeed loads its ops: a build lock left by a killed run is cleared here, not waited on forever.
    load_train_ops()
    cfg = TrainConfig.model_validate(loop_config["config"])
    context = ray.train.get_context()
    device = ray.train.torch.get_device() if cfg.scaling.use_gpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)

    def report(values: dict, checkpoint_dir: str | None) -> None:
        if context.get_world_rank() == 0:
            if device.type == "cuda":
                values = {**values, "gpu_memory_bytes": torch.cuda.max_memory_allocated(device)}
            publish_training(values)
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(values, checkpoint=ckpt, delete_local_checkpoint_after_upload=True)

    latest = ray.train.get_checkpoint()
    # A restarted run continues from its own checkpoint, whose weights have moved on from init_from's.
    trainer = Trainer(cfg, RunPaths(loop_config["input"], loop_config["out"]),
                      Rank(context.get_world_rank(), context.get_world_size(), device), report,
                      init_from=loop_config["init"] if latest is None else None)
    if latest is not None:
        with latest.as_directory() as directory:
            trainer.resume(directory)
    trainer.fit()


def worker_environment() -> dict[str, str]:
    """The variables of the driver that training workers need too."""
    return {k: v for k, v in os.environ.items() if k in WORKER_ENV_NAMES or k.startswith(WORKER_ENV_PREFIXES)}


def _storage(cfg: TrainConfig, out: str):
    """RunConfig's (storage_path, storage_filesystem): S3 through the same pyarrow filesystem as codemill."""
    uri = cfg.run.storage_path or storage.join(out, TRAIN_CHECKPOINTS)
    if storage.is_s3(uri):
        fs, path = storage.filesystem(uri)
        return path, fs
    return str(storage.filesystem(uri)[1]), None


def require_train_v2() -> None:
    """The loop uses Ray Train V2's API (Ray 2.60's default); a process that turned it off cannot run it."""
    from ray.train.v2._internal.constants import V2_ENABLED_ENV_VAR, is_v2_enabled

    if not is_v2_enabled():
        raise ConfigError(f"the train stage needs Ray Train V2, which {V2_ENABLED_ENV_VAR}=0 turns off in this "
                          f"process: unset {V2_ENABLED_ENV_VAR} (V2 is Ray 2.60's default)")


def init_source(run: StageRun) -> tuple[str, str] | None:
    """The export the run starts from (the `init` input, or `init_from`) and the fingerprint of the train
    stage output that holds it; None for a run from random weights."""
    cfg: TrainConfig = run.config
    if "init" in run.inputs and cfg.init_from:
        raise ConfigError(f"init_from={cfg.init_from} and the init input {run.inputs['init']}: give one of them")
    if "init" in run.inputs:
        uri, owner = run.inputs["init"], run.input_manifests["init"]
    elif cfg.init_from:
        uri = storage.absolute(cfg.init_from)
        owner = mf.require_complete(uri, "init_from")
    else:
        return None
    if owner.stage != "train":
        raise ConfigError(f"init_from {uri}: a {owner.stage} stage's output, not a train stage's export/")
    return uri, owner.fingerprint


def run_name(cfg: TrainConfig, identities: dict[str, str]) -> str:
    """Ray Train's run name: the same config on the same inputs resumes the same run (a rerun after a crash
    continues from its latest checkpoint); a changed config, other data or other initial weights start a
    new one."""
    if cfg.run.name:
        return cfg.run.name
    key = json.dumps({"config": config_hash(cfg), **identities}, sort_keys=True)
    return f"train-{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def body(run: StageRun) -> dict:
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from codemill.raysupport import ensure_ray
    from codemill.train.init import check_export

    cfg: TrainConfig = run.config
    data_uri = run.inputs["data"]
    data = budget.data_budget(data_uri, cfg)
    log.info("train: %s", budget.describe(data))
    identities = {name: m.fingerprint for name, m in run.input_manifests.items()}
    init = init_source(run)
    init_uri = init[0] if init else None
    if init:
        identities["init"] = init[1]
        exported = check_export(init_uri, data_uri, cfg.model.preset)
        log.info("train: starting from %s (step %s of its run); optimizer, schedule and steps start afresh",
                 init_uri, exported.get("step"))
    require_train_v2()
    ray = ensure_ray()
    from ray.autoscaler.sdk import request_resources

    requested = wait_for_resources(cfg, ray.cluster_resources, lambda bundles: request_resources(bundles=bundles))
    storage_path, storage_fs = _storage(cfg, run.out)
    scaling = cfg.scaling
    resources = {"CPU": scaling.cpus_per_worker, **({"GPU": scaling.gpus_per_worker} if scaling.use_gpu else {})}
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "input": data_uri, "out": run.out,
                           "init": init_uri},
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources, placement_strategy=scaling.placement_strategy),
        run_config=RunConfig(
            name=run_name(cfg, identities),
            storage_path=storage_path, storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
            worker_runtime_env={"env_vars": worker_environment()}),
    )
    with run.phase("fit"):
        try:
            result = trainer.fit()
        finally:
            if requested:  # the autoscaler was asked for the workers: let it scale down once they are done
                request_resources(bundles=[])
    records = metrics.read_records(run.path(metrics.METRICS_FILE))
    storage.write_bytes(run.path(metrics.LOSS_CURVE_FILE),
                        metrics.loss_curve_png(records, f"CodeGeeX {cfg.model.preset}: loss"))
    stats = {**summarize(records, cfg), "init_from": init_uri,
             "tokens_available": {name: c["tokens"] for name, c in data["languages"].items()},
             "epochs": data["epochs"]}
    run.write_stats({**stats, "data": data, "checkpoint": result.checkpoint.path if result.checkpoint else None})
    return stats


def summarize(records: list[dict], cfg: TrainConfig) -> dict:
    import torch

    from codemill.train.model import CodeGeeX

    with torch.device("meta"):
        model = CodeGeeX(cfg.model.build())
    last = records[-1] if records else {}
    evals = [r for r in records if "val_loss" in r]
    mfus = [r["mfu"] for r in records if "mfu" in r]
    return {
        "preset": cfg.model.preset,
        "parameters": model.num_parameters(),
        "flops_per_token": model.flops_per_token(cfg.model.seq_length),
        "steps": last.get("step", 0),
        "tokens": last.get("tokens", 0),
        "first_loss": records[0]["loss"] if records else None,
        "final_loss": last.get("loss"),
        "final_val_loss": evals[-1]["val_loss"] if evals else None,
        "mean_tokens_per_s": (sum(r["tokens_per_s"] for r in records) / len(records)) if records else None,
        "mean_mfu": (sum(mfus) / len(mfus)) if mfus else None,
        "workers": cfg.scaling.num_workers,
    }

