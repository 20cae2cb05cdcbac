"""The DeepSpeed JSON, generated from a `Recipe` and checked before DeepSpeed sees it."""

from __future__ import annotations

from typing import Any

from .config import Recipe, zero_offload_problem


def deepspeed_config(recipe: Recipe, world_size: int) -> dict[str, Any]:
    """ZeRO config dict for `deepspeed.initialize(config=...)`.

    Batch arithmetic: train_batch_size (DeepSpeed's name for the global batch size) = micro_batch_size x
    grad_accum x world_size (`TrainConfig.global_batch_size`, checked by `validate`).
    The optimizer and scheduler are built by the engine (DeepSpeedCPUAdam when offloading), not here.
    """
    ds, t = recipe.deepspeed, recipe.train
    zero: dict[str, Any] = {
        "stage": ds.stage,
        "overlap_comm": ds.overlap_comm,
        "contiguous_gradients": ds.contiguous_gradients,
        "reduce_bucket_size": ds.reduce_bucket_size,
        "allgather_bucket_size": ds.allgather_bucket_size,
    }
    if ds.offload_optimizer != "none":
        zero["offload_optimizer"] = {"device": ds.offload_optimizer, "pin_memory": True}
    if ds.offload_param != "none":
        zero["offload_param"] = {"device": ds.offload_param, "pin_memory": True}
    if ds.stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True  # the HF export needs whole weights
    config = {
        "train_batch_size": t.global_batch_size(world_size),
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "gradient_clipping": recipe.optim.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": t.precision == "bf16"},
        "fp16": {"enabled": t.precision == "fp16", "initial_scale_power": 16},
        "steps_per_print": 1 << 30,  # the engine logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
    }
    validate(config, world_size)
    return config


def validate(config: dict[str, Any], world_size: int) -> None:
    """Raise ValueError for a DeepSpeed config whose ZeRO/offload or batch settings cannot work."""
    zero = config.get("zero_optimization", {})
    stage = zero.get("stage", 0)
    problem = zero_offload_problem(stage, "offload_optimizer" in zero, "offload_param" in zero)
    if problem:
        raise ValueError(problem)
    micro, accum = config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"]
    if config["train_batch_size"] != micro * accum * world_size:
        raise ValueError(
            f"train_batch_size {config['train_batch_size']} != micro {micro} x accum {accum} x world {world_size}"
        )
    if config["bf16"]["enabled"] and config["fp16"]["enabled"]:
        raise ValueError("enable at most one of bf16 and fp16")
