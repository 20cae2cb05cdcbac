"""One training step of a few real-width LLaMA-13B layers: time, and `torch.cuda.max_memory_allocated` beside
the memory planner's prediction (`bl_train.plan.activation_bytes` + the parameter gradients).

The model is `llama_vid_13b` cut to `layers` decoder layers (hidden 5120, intermediate 13824, 40 heads, the
32000-token vocabulary), bf16, text only (packed tokens), with and without gradient checkpointing. The CPU
self-test runs the same code once at tiny width, without memory statistics.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import torch

import bl_model
from bl_model import BehaviorLlavaForCausalLM

from .runner import Runner, Sizes


def _planner():
    """bl_train.plan loaded from its file: the GPU image has bl-model's dependencies, not bl-train's."""
    path = Path(__file__).resolve().parents[2] / "packages" / "bl-train" / "src" / "bl_train" / "plan.py"
    spec = importlib.util.spec_from_file_location("bl_train_plan", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _config(sizes: Sizes, self_test: bool) -> bl_model.BehaviorLlavaConfig:
    config = bl_model.tiny() if self_test else bl_model.llama_vid_13b()
    config.text_config.num_hidden_layers = sizes.step_layers
    return config


def _one_step(model: BehaviorLlavaForCausalLM, tokens: int, device: torch.device) -> float:
    ids = torch.randint(3, model.config.text_config.vocab_size, (1, tokens), device=device)
    start = time.perf_counter()
    model(input_ids=ids, labels=ids, use_cache=False).loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_train_step(runner: Runner, sizes: Sizes) -> None:
    """Rows of runner.report["train_step"]: measured and planned peak bytes per checkpointing setting."""
    plan = _planner()
    config = _config(sizes, runner.self_test)
    shape = plan.model_shape(config)
    for checkpointing in (True, False):
        row = dict(layers=sizes.step_layers, tokens=sizes.step_tokens, checkpointing=checkpointing)
        runner.report["train_step"].append(row)
        model = None
        try:
            with torch.device(runner.device):  # built on the device: no 13B-width copy through host memory
                model = BehaviorLlavaForCausalLM(config).to(torch.bfloat16).train()
            for p in model.vision_tower.parameters():
                p.requires_grad_(False)
            if checkpointing:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            _one_step(model, sizes.step_tokens, runner.device)  # warm-up: kernels compiled, grads allocated
            model.zero_grad(set_to_none=True)
            grads = 2 * sum(p.numel() for p in model.parameters() if p.requires_grad)  # bf16 .grad
            planned = plan.activation_bytes(shape, sizes.step_tokens, 0, 2, checkpointing)["peak"] + grads
            if runner.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            row["step_s"] = round(_one_step(model, sizes.step_tokens, runner.device), 3)
            row["planned_GiB"] = round(planned / 2**30, 2)
            if runner.device.type == "cuda":
                measured = torch.cuda.max_memory_allocated() - base
                row["measured_GiB"] = round(measured / 2**30, 2)
                row["planned_over_measured"] = round(planned / measured, 3)
            row["status"] = "ok" if not runner.self_test else "ok (ran once)"
        except Exception as exc:  # an out-of-memory here must not cost the report
            row["status"] = f"error: {type(exc).__name__}: {exc}"[:300]
        finally:
            del model
            if runner.device.type == "cuda":
                torch.cuda.empty_cache()
