"""The train stage's YAML, validated; defaults are the paper's values (SPEC §5, §6)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from pydantic import Field, field_validator, model_validator

from codemill.config import StrictModel
from codemill.languages import LANGUAGE_NAMES
from codemill.train import schedule
from codemill.train.model_config import DROPOUT, MAX_SEQ_LENGTH, PRESETS, ModelConfig

PAPER_GLOBAL_BATCH = 3_072      # sequences per optimizer step
PAPER_MICRO_BATCH = 16          # sequences per device per forward/backward
PAPER_STEPS = 213_000
PAPER_LOSS_SCALE_WINDOW = 1_000  # FP16 dynamic loss scaling: steps without overflow before the scale grows
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
GRADIENT_CLIPPING = 1.0


class ModelSection(StrictModel):
    preset: Literal["tiny", "125m", "350m", "1.3b", "2.7b", "6.7b", "13b"] = "13b"
    seq_length: int = Field(MAX_SEQ_LENGTH, ge=8, description="tokens read per training row (rows are cropped)")
    dropout: float = Field(DROPOUT, ge=0.0, lt=1.0)
    document_masking: bool = False
    activation_checkpointing: bool = False
    compile: bool = Field(False, description="torch.compile each block and the head (GPU runs: it pays)")

    def build(self) -> ModelConfig:
        base = PRESETS[self.preset]
        return replace(base, dropout=self.dropout, document_masking=self.document_masking,
                       activation_checkpointing=self.activation_checkpointing)


class OptimizerSection(StrictModel):
    """Adam (not AdamW), with the paper's warm-up + cosine schedule computed by codemill (schedule.py)."""

    lr_max: float = Field(schedule.LR_MAX, gt=0)
    lr_min: float = Field(schedule.LR_MIN, ge=0)
    warmup_steps: int = Field(schedule.WARMUP_STEPS, ge=0)
    decay_steps: int = Field(schedule.DECAY_STEPS, ge=1)
    beta1: float = Field(ADAM_BETAS[0], ge=0.0, lt=1.0)
    beta2: float = Field(ADAM_BETAS[1], ge=0.0, lt=1.0)
    eps: float = Field(ADAM_EPS, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0, description="L2 penalty added to the gradient (Adam, not AdamW)")
    gradient_clipping: float = Field(GRADIENT_CLIPPING, ge=0, description="global norm; 0 = off")


class DeepSpeedSection(StrictModel):
    zero_stage: Literal[0, 1, 2, 3] = 2
    precision: Literal["fp16", "bf16", "fp32"] = "fp16"
    loss_scale_window: int = Field(PAPER_LOSS_SCALE_WINDOW, ge=1)
    initial_loss_scale_power: int = Field(16, ge=0, le=32)
    overlap_comm: bool = True
    bucket_size: int = Field(500_000_000, ge=1, description="elements per reduce / all-gather bucket")


class ScalingSection(StrictModel):
    num_workers: int = Field(1, ge=1, description="Ray Train workers = data-parallel ranks")
    use_gpu: bool = True
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(1, ge=0)
    # An autoscaling cluster may have no GPU node yet: wait this long for the resources to appear (the
    # autoscaler starts nodes for Ray Train's request), then refuse with what is missing.
    resource_wait_s: float = Field(600.0, ge=0, le=86_400)
    # When the cluster's autoscaler is known to provide the nodes, skip the check and let Ray Train wait.
    trust_autoscaler: bool = False
    # How workers are placed: PACK fills nodes first (NVLink within a node); STRICT_SPREAD puts each worker on
    # its own node.
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


class RunSection(StrictModel):
    name: str | None = Field(None, description="Ray Train run name; default: train-<config hash>")
    storage_path: str | None = Field(None, description="checkpoints (local, shared or s3://); default <out>/ray_train")
    max_failures: int = Field(3, ge=-1, description="worker-group restarts before giving up (-1: no limit)")
    keep_checkpoints: int = Field(2, ge=1)


class DataSection(StrictModel):
    languages: list[str] | None = Field(
        None, min_length=1, description="train (and validate) on the rows of these languages only; default: all")

    @field_validator("languages")
    @classmethod
    def _known(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        unknown = [name for name in v if name not in LANGUAGE_NAMES]
        if unknown:
            raise ValueError(f"unknown languages {unknown}; known (as SPEC §2 spells them): {list(LANGUAGE_NAMES)}")
        return sorted(set(v), key=LANGUAGE_NAMES.index)


class TrainConfig(StrictModel):
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    optimizer: OptimizerSection = OptimizerSection()
    deepspeed: DeepSpeedSection = DeepSpeedSection()
    scaling: ScalingSection = ScalingSection()
    run: RunSection = RunSection()
    # Staged training (CodeGen's Multi -> Mono): start from another run's weights; the optimizer, the schedule
    # and the step count start afresh. In a DAG, wire it as the train stage's `init` input instead.
    init_from: str | None = Field(None, min_length=1, description="a train stage's export/ (local or s3://) "
                                  "whose weights the run starts from")
    steps: int = Field(PAPER_STEPS, ge=1, description="optimizer steps")
    global_batch_size: int = Field(PAPER_GLOBAL_BATCH, ge=1, description="sequences per optimizer step")
    micro_batch_size: int = Field(PAPER_MICRO_BATCH, ge=1, description="sequences per worker per pass")
    seed: int = Field(1234, ge=0, lt=2**63)
    log_every: int = Field(10, ge=1, description="steps between metric flushes (one host sync each)")
    eval_every: int = Field(1_000, ge=1)
    eval_batches: int = Field(8, ge=1, description="validation micro-batches per worker per evaluation")
    checkpoint_every: int = Field(1_000, ge=1)
    peak_tflops: float | None = Field(None, gt=0, description="per-device peak for MFU; default: by GPU name")
    fault_injection_step: int | None = Field(
        None, ge=1, description="tests only: the last worker raises once at this step, to exercise restarts")

    @model_validator(mode="after")
    def _batch_divides(self) -> TrainConfig:
        per_step = self.micro_batch_size * self.scaling.num_workers
        if self.global_batch_size % per_step:
            raise ValueError(f"global_batch_size={self.global_batch_size} is not a multiple of micro_batch_size "
                             f"× scaling.num_workers = {per_step}")
        if self.model.seq_length > PRESETS[self.model.preset].max_seq_length:
            raise ValueError(f"model.seq_length={self.model.seq_length} exceeds the {self.model.preset} preset's "
                             f"{PRESETS[self.model.preset].max_seq_length} positions")
        if self.deepspeed.precision == "fp16" and not self.scaling.use_gpu:
            raise ValueError("deepspeed.precision=fp16 needs GPUs; use fp32 (or bf16) with scaling.use_gpu=false")
        return self

    @property
    def gradient_accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.scaling.num_workers)
