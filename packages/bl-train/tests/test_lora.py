"""LoRA (peft) on the CPU: only the adapters and modules_to_save train, under ZeRO-2 (with and without offload)
and ZeRO-3; the merged final/ and final-adapter/ exports agree with each other and with the engine; a stopped
run resumes to the same losses; bad settings are one line naming the option."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM

from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor
from bl_model.inference import load
from bl_train.batching import model_inputs
from bl_train.config import LoraConfig
from bl_train.engine import Trainer
from bl_train.lora import LoraSetupError, apply_lora

from .conftest import CONFIGS

TRAIN = Path(__file__).parents[3] / "apps" / "train"
LORA = ("--train.finetune", "lora", "--train.eval_every", "0", "--data.num_workers", "0")


def expected_counts(base: nn.Module, settings: LoraConfig) -> tuple[int, int]:
    """(trainable, total) from the definition of LoRA, not from peft: r x (in + out) per adapted Linear, plus
    every parameter of the modules trained in full; total = the base's parameters + the adapters'."""
    adapters = sum(
        settings.r * (m.in_features + m.out_features)
        for name, m in base.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in settings.target_modules
    )
    full = sum(p.numel() for name in settings.modules_to_save for p in getattr(base, name).parameters())
    return adapters + full, sum(p.numel() for p in base.parameters()) + adapters


def _batch(recipe, processor: BehaviorLlavaProcessor) -> dict:
    dataset = Trainer(recipe)._data(processor)
    return model_inputs(processor, [dataset.get(0, i)[0] for i in range(2)], packing=False)


@pytest.mark.parametrize(
    "zero",
    [
        ("--deepspeed.stage", "2", "--deepspeed.offload_optimizer", "cpu"),
        (
            "--deepspeed.stage",
            "2",
            "--deepspeed.offload_optimizer",
            "none",
            "--train.eval_every",
            "2",
            "--train.eval_samples",
            "2",
            "--train.eval_max_new_tokens",
            "8",
        ),
        ("--deepspeed.stage", "3", "--deepspeed.offload_optimizer", "cpu"),
    ],
    ids=["zero2-offload", "zero2-eval", "zero3"],
)
def test_lora_trains_only_adapters_and_both_exports_match_the_engine(demo_recipe, zero):
    recipe = demo_recipe(*LORA, "--train.max_steps", "2", *zero)
    trainer = Trainer(recipe)
    summary = trainer.run()
    out = Path(recipe.train.output_dir)
    base = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained).eval()
    trainable, total = expected_counts(base, recipe.lora)
    assert (summary.trainable_params, summary.total_params) == (trainable, total) and trainable < total / 5

    # the adapter folder: adapter weights only, its base named as an absolute path that loads as it stands
    adapter_dir = out / "final-adapter"
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    full = tuple(
        f"base_model.model.{name}." for name in recipe.lora.modules_to_save
    )  # saved under their own names
    assert all(".lora_A." in k or ".lora_B." in k or k.startswith(full) for k in weights), list(weights)
    assert sum(w.numel() for w in weights.values()) == trainable
    named = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert named == str(Path(recipe.model.pretrained).resolve())
    adapted = PeftModel.from_pretrained(BehaviorLlavaForCausalLM.from_pretrained(named), adapter_dir).eval()

    # the merged folder: transformers' layout, loaded by the Auto class from its own copy of the code
    merged = AutoModelForCausalLM.from_pretrained(summary.final_dir, trust_remote_code=True).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    batch = _batch(recipe, BehaviorLlavaProcessor.from_pretrained(summary.final_dir))
    with torch.no_grad():
        expected = adapted(**batch).logits
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(
            trainer.engine.module.eval()(**batch).logits, expected, rtol=1e-5, atol=1e-5
        )
        assert (base(**batch).logits - expected).abs().max() > 1e-4  # training moved the model
        loaded, _ = load(adapter_dir, device="cpu")  # what apps/eval and apps/predict do with the folder
        torch.testing.assert_close(loaded(**batch).logits, expected, rtol=1e-5, atol=1e-5)
    # the frozen vision tower is the base's, bit for bit
    assert all(
        torch.equal(a, b)
        for a, b in zip(merged.vision_tower.parameters(), base.vision_tower.parameters(), strict=True)
    )

    # checkpoints hold the trainable tensors only (the base is rebuilt from model.pretrained on resume)
    states = next((out / "checkpoints" / "step-2").glob("*model_states.pt"))  # ZeRO-3 names it per rank
    saved = torch.load(states, weights_only=False)["module"]
    if recipe.deepspeed.stage == 2:
        assert sum(t.numel() for t in saved.values()) == trainable
    assert all(".lora_" in k or ".modules_to_save." in k for k in saved), list(saved)
    if "--train.eval_every" in zero:
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert [r["eval"]["samples"] for r in records if "eval" in r] == [2]


def test_a_stopped_lora_run_resumes_to_the_same_losses_and_adapter(demo_recipe, tmp_path):
    args = (*LORA, "--train.max_steps", "4", "--train.save_every", "2")
    straight = Trainer(demo_recipe(*args, "--train.output_dir", str(tmp_path / "straight"))).run()
    again = ("--train.output_dir", str(tmp_path / "stopped"))
    first = Trainer(demo_recipe(*args, *again)).run(stop_after=3)  # step 3 is lost: the checkpoint is step-2
    assert first.steps == 3 and first.final_dir is None
    resumed = Trainer(demo_recipe(*args, *again, "--train.resume", "auto")).run()
    assert resumed.losses == straight.losses[2:] and first.losses[:2] == straight.losses[:2]
    a, b = (
        load_file(tmp_path / d / "final-adapter" / "adapter_model.safetensors")
        for d in ("straight", "stopped")
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_lora_settings_that_match_nothing_name_the_option(demo_recipe):
    recipe = demo_recipe(*LORA)
    model = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained)
    bad = LoraConfig(target_modules=["q_proj", "q_projj"])
    with pytest.raises(LoraSetupError, match=r"^--lora.target_modules: 'q_projj' matches no module .*q_proj"):
        apply_lora(model, bad, recipe.model.pretrained)
    with pytest.raises(LoraSetupError, match=r"^--lora.modules_to_save: 'projector' matches no module"):
        apply_lora(model, LoraConfig(modules_to_save=["mm_projector", "projector"]), recipe.model.pretrained)


def _app_error(*args: str) -> str:
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    proc = subprocess.run(
        [sys.executable, str(TRAIN), "--recipe", str(CONFIGS / "demo.yaml"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [
        line for line in proc.stderr.splitlines() if "error" in line.lower()
    ]  # log lines may precede it
    assert len(errors) == 1 and errors[0].startswith("apps/train: error: "), proc.stderr[-3000:]
    assert proc.stderr.strip().endswith(errors[0])
    return errors[0]


def test_apps_train_reports_a_target_that_matches_nothing_in_one_line(demo_args, tmp_path):
    line = _app_error(*demo_args(tmp_path / "run", *LORA, "--lora.target_modules", "[q_proj, qproj]"))
    assert "--lora.target_modules: 'qproj' matches no module of the model" in line


def test_apps_predict_names_the_missing_base_of_an_adapter_folder_in_one_line(tmp_path):
    adapter = tmp_path / "final-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "gone")})
    )
    proc = subprocess.run(
        [sys.executable, str(TRAIN.parent / "predict"), "--model", str(adapter), "--video", "x.mp4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert (
        f"--model: {adapter / 'adapter_config.json'}: base_model_name_or_path {tmp_path / 'gone'} is not"
        in proc.stderr
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA error")
def test_apps_train_refuses_qlora_without_cuda_in_one_line(tmp_path):
    line = _app_error("--train.finetune", "qlora", "--train.output_dir", str(tmp_path / "run"))
    assert "--train.finetune: qlora needs a CUDA GPU" in line
    assert not (tmp_path / "run").exists()


@pytest.mark.gpu
def test_qlora_trains_adapters_on_a_4bit_base_and_exports_like_lora(demo_recipe):
    recipe = demo_recipe(
        "--train.finetune",
        "qlora",
        "--train.eval_every",
        "0",
        "--data.num_workers",
        "0",
        "--train.max_steps",
        "6",
        "--train.precision",
        "bf16",
        "--deepspeed.offload_optimizer",
        "none",
    )
    trainer = Trainer(recipe)
    summary = trainer.run()
    kinds = {type(m).__name__ for m in trainer.engine.module.modules()}
    assert "Linear4bit" in kinds and summary.losses[-1] < summary.losses[0], (kinds, summary.losses)
    base = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained).eval()
    # a 4-bit weight counts its unpacked elements, so the totals are the unquantized model's
    assert (summary.trainable_params, summary.total_params) == expected_counts(base, recipe.lora)
    adapter_dir = Path(recipe.train.output_dir) / "final-adapter"
    adapted = PeftModel.from_pretrained(base, adapter_dir).eval()  # on the unquantized base
    merged = AutoModelForCausalLM.from_pretrained(summary.final_dir, trust_remote_code=True).eval()
    batch = _batch(recipe, BehaviorLlavaProcessor.from_pretrained(summary.final_dir))
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted(**batch).logits, rtol=1e-5, atol=1e-5)
