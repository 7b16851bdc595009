"""The DeepSpeed config, generated from the stage's YAML (never written by hand).

No "optimizer" and no "scheduler" block: the loop passes its own Adam and sets the learning rate of each
step itself (schedule.py), so DeepSpeed's defaults cannot change either.
"""

from __future__ import annotations

from codemill.train.config import TrainConfig

NEVER = 10**12  # steps_per_print: DeepSpeed's own step logging would only add host syncs


def deepspeed_config(cfg: TrainConfig, world_size: int) -> dict:
    ds = cfg.deepspeed
    zero: dict = {"stage": ds.zero_stage}
    if ds.zero_stage > 0:
        zero.update({
            "contiguous_gradients": True,   # gradients copied into one buffer as they are reduced
            "overlap_comm": ds.overlap_comm and cfg.scaling.use_gpu,  # reduce while backward still runs
            "reduce_scatter": True,
            "reduce_bucket_size": ds.bucket_size,
            "allgather_bucket_size": ds.bucket_size,
        })
    if ds.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # the export gathers the full weights
    config = {
        "train_batch_size": cfg.micro_batch_size * cfg.gradient_accumulation_steps * world_size,
        "train_micro_batch_size_per_gpu": cfg.micro_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "gradient_clipping": cfg.optimizer.gradient_clipping,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch.optim.Adam, see loop.make_optimizer
        "steps_per_print": NEVER,
        "wall_clock_breakdown": False,
    }
    if ds.precision == "fp16":
        config["fp16"] = {
            "enabled": True,
            "loss_scale": 0,  # 0 = dynamic
            "loss_scale_window": ds.loss_scale_window,
            "initial_scale_power": ds.initial_loss_scale_power,
            "hysteresis": 2,
            "min_loss_scale": 1,
        }
    elif ds.precision == "bf16":
        config["bf16"] = {"enabled": True}
    return config
