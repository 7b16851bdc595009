"""The training loop of one data-parallel rank: DeepSpeed engine, the paper's schedule, evaluation,
checkpoints, metrics, export. No Ray here: the stage's worker function (stage.py) hands in the rank, the
checkpoint to resume from, and a `report(metrics, checkpoint_dir)` callable.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from codemill import storage
from codemill.languages import LANGUAGE_NAMES
from codemill.stages import TRAIN_EXPORT, TRAIN_FAULT_MARKER, TRAIN_TENSORBOARD
from codemill.train import checkpoint, export, flops, init, metrics
from codemill.train.config import TrainConfig
from codemill.train.data import Batch, RankRows, make_batch, select_languages, validation_rows
from codemill.train.ds_config import deepspeed_config
from codemill.train.model import IGNORE_INDEX, CodeGeeX
from codemill.train.schedule import learning_rate

log = logging.getLogger("codemill.train")

FAULT_MARKER = TRAIN_FAULT_MARKER
TEMP_PREFIX = "cm-train-"  # of this loop's local folders (checkpoints before upload, TensorBoard)
Report = Callable[[dict, "str | None"], None]


@dataclass(frozen=True)
class Rank:
    rank: int
    world_size: int
    device: torch.device


@dataclass(frozen=True)
class RunPaths:
    input: str   # the tokenize stage's output
    out: str     # this stage's output: export/, metrics.jsonl, tensorboard/

    @property
    def export(self) -> str:
        return storage.join(self.out, TRAIN_EXPORT)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """torch's Adam (L2 weight decay, not AdamW's decoupled one), handed to DeepSpeed as the client optimizer:
    it runs on the CPU and the GPU alike and needs no extension build; on CUDA its fused kernel does the
    update of all parameters in a few launches."""
    o = cfg.optimizer
    return torch.optim.Adam(model.parameters(), lr=learning_rate(0, o.lr_max, o.lr_min, o.warmup_steps, o.decay_steps),
                            betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay,
                            fused=device.type == "cuda")


def dropout_seed(seed: int, step: int, rank: int, world_size: int) -> int:
    """Dropout masks depend on (seed, step, rank) only, so a resumed step draws the masks it drew before."""
    return (seed * 1_000_003 + step * world_size + rank) % (2**63)


class Trainer:
    """`init_from`: an export whose weights replace the initial ones (a fresh run only: a resumed run's
    checkpoint holds its own weights)."""

    def __init__(self, cfg: TrainConfig, paths: RunPaths, rank: Rank, report: Report, init_from: str | None = None):
        import deepspeed

        from codemill.tokenize.reader import ShardReader

        self.cfg, self.paths, self.rank, self.report = cfg, paths, rank, report
        self.is_chief = rank.rank == 0
        self.seq_length = cfg.model.seq_length
        self.train_reader = select_languages(ShardReader(paths.input, split="train"), cfg.data.languages)
        self.rows = RankRows(self.train_reader, rank.rank, rank.world_size, cfg.seed,
                             cfg.micro_batch_size * cfg.gradient_accumulation_steps)
        self.val_reader = self._validation_reader(ShardReader, paths.input, cfg.data.languages)

        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        model = CodeGeeX(cfg.model.build())
        if init_from:  # before DeepSpeed copies the weights into its optimizer state
            init.load_weights(model, init_from)
            log.info("rank %d: weights from %s", rank.rank, init_from)
        model = model.to(rank.device)
        self.flops_per_token = model.flops_per_token(self.seq_length)
        self.num_parameters = model.num_parameters()
        if cfg.model.compile:
            model.compile_regions()
        self.optimizer = make_optimizer(model, cfg, rank.device)
        self.engine, _, _, _ = deepspeed.initialize(model=model, optimizer=self.optimizer,
                                                    config=deepspeed_config(cfg, rank.world_size))
        self.tokens_per_step = cfg.global_batch_size * self.seq_length
        peak = cfg.peak_tflops * 1e12 if cfg.peak_tflops else (
            flops.peak_flops(torch.cuda.get_device_name(rank.device)) if rank.device.type == "cuda" else None)
        self.peak_flops = peak
        self.step = 0
        self.resumes = 0  # how often this run restarted from a checkpoint (worker failure or rerun)
        self.records: list[dict] = []
        self.tensorboard = (metrics.TensorBoardLog(tempfile.mkdtemp(prefix=TEMP_PREFIX + "tb-"),
                                                   storage.join(paths.out, TRAIN_TENSORBOARD))
                            if self.is_chief else None)

    @staticmethod
    def _validation_reader(reader_cls, uri: str, languages: list[str] | None):
        try:
            reader = select_languages(reader_cls(uri, split="validation"), languages)
        except (FileNotFoundError, KeyError, ValueError) as exc:
            log.warning("no validation split in %s (%s): validation loss is not computed", uri, exc)
            return None
        return reader if len(reader) else None

    # -- state ------------------------------------------------------------------------------------------
    def resume(self, directory: str) -> None:
        state, records = checkpoint.load(self.engine, directory)
        self.step = state["step"]
        self.resumes = state["resumes"] + 1
        self.records = records
        if self.tensorboard:
            for record in records:
                self.tensorboard.add(record)
        log.info("rank %d: resumed at step %d (epoch %d, row offset %d)", self.rank.rank, self.step,
                 *self.rows.position(self.step))

    def _save(self) -> str:
        directory = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}ckpt-{self.step}-r{self.rank.rank}-")
        epoch, offset = self.rows.position(self.step)
        state = {"step": self.step, "epoch": epoch, "row_offset": offset, "seed": self.cfg.seed,
                 "world_size": self.rank.world_size, "resumes": self.resumes}
        checkpoint.save(self.engine, directory, state, self.records if self.is_chief else None)
        return directory

    # -- one step -----------------------------------------------------------------------------------------
    def _to_device(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        def move(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(a)
            if self.rank.device.type == "cuda":
                t = t.pin_memory()
            return t.to(self.rank.device, non_blocking=True)

        documents = move(batch.document_ids) if self.cfg.model.document_masking else None
        return move(batch.tokens), move(batch.labels), documents

    def _set_learning_rate(self) -> float:
        o = self.cfg.optimizer
        lr = learning_rate(self.step, o.lr_max, o.lr_min, o.warmup_steps, o.decay_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def train_step(self) -> dict:
        """One optimizer step (gradient accumulation included); values stay on the device (no sync)."""
        lr = self._set_learning_rate()
        torch.manual_seed(dropout_seed(self.cfg.seed, self.step, self.rank.rank, self.rank.world_size))
        rows = self.rows.rows_of_step(self.step)
        mb = self.cfg.micro_batch_size
        loss_sum = torch.zeros((), device=self.rank.device)
        for start in range(0, len(rows), mb):
            tokens, labels, documents = self._to_device(make_batch(self.train_reader, rows[start:start + mb],
                                                                   self.seq_length))
            loss = self.engine(tokens, labels, documents)
            self.engine.backward(loss)
            self.engine.step()
            loss_sum += loss.detach().float()
        self.step += 1
        grad_norm = self.engine.get_global_grad_norm()
        return {"step": self.step, "loss": loss_sum / self.cfg.gradient_accumulation_steps, "lr": lr,
                "grad_norm": grad_norm, "loss_scale": getattr(self.engine.optimizer, "loss_scale", 1.0)}

    # -- evaluation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Validation loss over a fixed sample, overall and per language (summed over all ranks)."""
        n = self.cfg.eval_batches * self.cfg.micro_batch_size
        rows = validation_rows(self.val_reader, self.rank.rank, self.rank.world_size, self.cfg.seed, n)
        sums = torch.zeros(len(LANGUAGE_NAMES), dtype=torch.float64, device=self.rank.device)
        counts = torch.zeros_like(sums)
        self.engine.eval()
        for start in range(0, len(rows), self.cfg.micro_batch_size):
            batch = make_batch(self.val_reader, rows[start:start + self.cfg.micro_batch_size], self.seq_length)
            tokens, labels, documents = self._to_device(batch)
            losses = self.engine(tokens, labels, documents, reduction="none")
            language = torch.tensor([LANGUAGE_NAMES.index(x) for x in batch.languages], device=self.rank.device)
            sums.index_add_(0, language, losses.double().sum(1))
            counts.index_add_(0, language, (labels != IGNORE_INDEX).double().sum(1))
        self.engine.train()
        torch.distributed.all_reduce(sums)
        torch.distributed.all_reduce(counts)
        sums, counts = sums.tolist(), counts.tolist()
        result = {"val_loss": sum(sums) / max(sum(counts), 1.0), "val_tokens": int(sum(counts))}
        for name, s, c in zip(LANGUAGE_NAMES, sums, counts):
            if c:
                result[f"val_loss/{name}"] = s / c
        return result

    # -- metrics ---------------------------------------------------------------------------------------------
    def _flush(self, pending: list[dict], seconds: float) -> list[dict]:
        """One host sync for the steps since the last flush: global mean loss, throughput, MFU."""
        losses = torch.stack([p["loss"] for p in pending])
        torch.distributed.all_reduce(losses)
        losses = (losses / self.rank.world_size).tolist()
        tokens_per_s = self.tokens_per_step * len(pending) / seconds
        out = []
        for p, loss in zip(pending, losses):
            record = {"step": p["step"], "loss": loss, "lr": p["lr"], "grad_norm": _number(p["grad_norm"]),
                      "loss_scale": _number(p["loss_scale"]), "tokens_per_s": tokens_per_s,
                      "tokens": p["step"] * self.tokens_per_step, "resumes": self.resumes}
            if self.peak_flops:
                record["mfu"] = flops.mfu(tokens_per_s, self.flops_per_token, self.peak_flops, self.rank.world_size)
            out.append(record)
        return out

    def _publish(self) -> None:
        """metrics.jsonl and TensorBoard to the stage output (chief only)."""
        storage.write_bytes(storage.join(self.paths.out, metrics.METRICS_FILE), metrics.to_jsonl(self.records))
        self.tensorboard.sync()

    def _maybe_fail(self) -> None:
        """Fault injection for the restart test: the last rank raises once, at the configured step."""
        if self.cfg.fault_injection_step != self.step or self.rank.rank != self.rank.world_size - 1:
            return
        marker = storage.join(self.paths.out, FAULT_MARKER)
        if storage.exists(marker):
            return
        storage.write_json(marker, {"step": self.step, "rank": self.rank.rank})
        raise RuntimeError(f"fault injected at step {self.step} on rank {self.rank.rank}")

    # -- the run ---------------------------------------------------------------------------------------------
    def fit(self) -> None:
        cfg = self.cfg
        pending: list[dict] = []
        window_start = time.perf_counter()
        while self.step < cfg.steps:
            pending.append(self.train_step())
            self._maybe_fail()
            last = self.step == cfg.steps
            eval_due = self.val_reader is not None and (self.step % cfg.eval_every == 0 or last)
            checkpoint_due = self.step % cfg.checkpoint_every == 0 or last
            if not (self.step % cfg.log_every == 0 or eval_due or checkpoint_due):
                continue
            new = self._flush(pending, time.perf_counter() - window_start)
            pending = []
            if eval_due:
                new[-1].update(self.evaluate())
            self.records.extend(new)
            if self.tensorboard:
                for record in new:
                    self.tensorboard.add(record)
            directory = self._save() if checkpoint_due else None
            if directory and self.is_chief:
                self._publish()
            self.report(new[-1], directory)
            if directory:  # uploaded by report(): the local copy would fill the temp area over a long run
                shutil.rmtree(directory, ignore_errors=True)
            if self.is_chief:
                log.info("step %d: %s", self.step, {k: round(v, 4) if isinstance(v, float) else v
                                                    for k, v in new[-1].items() if "/" not in k})
            window_start = time.perf_counter()
        self.export()

    def export(self) -> None:
        if self.cfg.deepspeed.zero_stage == 3:
            state = self.engine._zero3_consolidated_16bit_state_dict()  # collective; full dict on rank 0
        else:
            state = self.engine.module.state_dict()
        if self.is_chief:
            export.write_export(state, self.engine.module.config, self.train_reader.tokenizer_path,
                                self.paths.export, extra={"step": self.step, "seq_length": self.seq_length})
            self._publish()
            self.tensorboard.close()


def _number(value) -> float | None:
    if value is None:
        return None
    return float(value.item() if isinstance(value, torch.Tensor) else value)
