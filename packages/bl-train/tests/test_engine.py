"""The engine on the CPU: ZeRO-2 + CPU offload training, bit-exact resume after a kill -9, packed == padded."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoProcessor, GenerationConfig

from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor
from bl_train.batching import model_inputs
from bl_train.checkpoint import latest_tag
from bl_train.config import load_recipe
from bl_train.engine import Trainer, TrainingDiverged, _zero_gradient_loss

ROOT = Path(__file__).parents[3]
TRAIN, DEMO = ROOT / "apps" / "train", ROOT / "configs" / "demo.yaml"


def test_twenty_steps_of_zero2_with_cpu_offload_lower_the_loss(demo_recipe):
    recipe = demo_recipe("--train.max_steps", "20", "--train.save_every", "10", "--train.eval_every", "0")
    assert (recipe.deepspeed.stage, recipe.deepspeed.offload_optimizer) == (2, "cpu")
    summary = Trainer(recipe).run()
    losses = summary.losses
    assert summary.steps == 20 and len(losses) == 20
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    out = Path(recipe.train.output_dir)
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 21)) and logged[-1]["loss"] == losses[-1]
    events = EventAccumulator(str(out / "tensorboard"))  # the same records reached the TensorBoard sink
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [
        (r["step"], float(np.float32(r["loss"]))) for r in logged
    ]
    assert latest_tag(out / "checkpoints") == "step-20"
    reloaded = BehaviorLlavaForCausalLM.from_pretrained(summary.final_dir)  # the HF export loads back
    assert reloaded.config.text_config.vocab_size == recipe_vocab(recipe)
    assert (out / "recipe.yaml").exists()


def recipe_vocab(recipe) -> int:
    return BehaviorLlavaForCausalLM.config_class.from_pretrained(
        recipe.model.pretrained
    ).text_config.vocab_size


def _train(args: list[str]) -> subprocess.Popen:
    """A real `apps/train` process (its own process group on a free port)."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    }
    return subprocess.Popen(
        [sys.executable, str(TRAIN), "--recipe", str(DEMO), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _tensors(obj, name: str = "") -> dict[str, torch.Tensor]:
    """Every tensor (and numpy array) inside nested dicts / lists / tuples, by path."""
    if isinstance(obj, torch.Tensor | np.ndarray):
        return {name: torch.as_tensor(obj)}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list | tuple) else ()
    return {path: t for key, value in items for path, t in _tensors(value, f"{name}/{key}").items()}


def _final_state(out: Path) -> dict[str, torch.Tensor]:
    """The exported weights and the last checkpoint's tensors: weights, fp32 master, Adam moments, RNG states."""
    state = {f"final/{k}": v for k, v in load_file(out / "final" / "model.safetensors").items()}
    for path in sorted((out / "checkpoints" / "step-8").glob("*.pt")):
        state |= _tensors(torch.load(path, map_location="cpu", weights_only=False), path.name)
    return state


def test_killed_then_resumed_run_matches_an_uninterrupted_one(demo_args, tmp_path):
    """The shipped optimizer settings (ZeRO-2, DeepSpeedCPUAdam offload): SIGKILL two steps after checkpoint
    step-5, `--train.resume auto`, and every loss and every final tensor equals an uninterrupted run's (the same
    recipe run to the end in this process: no second interpreter start)."""
    short = ("--train.max_steps", "8", "--train.save_every", "5", "--train.eval_every", "0")
    killed_dir = tmp_path / "killed"
    killed = _train(demo_args(killed_dir, *short))
    deadline = time.monotonic() + 600
    metrics = killed_dir / "metrics.jsonl"
    while (
        not metrics.exists() or metrics.read_text().count("\n") < 7
    ):  # steps 6, 7 logged past checkpoint step-5
        assert killed.poll() is None, killed.stderr.read().decode()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert latest_tag(killed_dir / "checkpoints") == "step-5" and not (killed_dir / "final").exists()
    resumed = _train(demo_args(killed_dir, *short, "--train.resume", "auto"))
    Trainer(load_recipe(DEMO, demo_args(tmp_path / "straight", *short))).run()  # while `resumed` starts
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-3000:]
    reference, interrupted = _metrics(tmp_path / "straight"), _metrics(killed_dir)
    assert (
        [r["step"] for r in interrupted] == [r["step"] for r in reference] == list(range(1, 9))
    )  # once each
    assert [r["loss"] for r in interrupted] == [r["loss"] for r in reference]
    expected, got = _final_state(tmp_path / "straight"), _final_state(killed_dir)
    assert expected.keys() == got.keys() and len(expected) > 100
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []


def test_packed_and_padded_batches_give_the_same_loss_at_step_zero(demo_recipe):
    recipe = demo_recipe()
    model = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained).eval()
    processor = BehaviorLlavaProcessor.from_pretrained(recipe.data.processor)
    trainer = Trainer(recipe)
    dataset = trainer._data(processor)
    samples = [dataset.get(0, i)[0] for i in range(4)]
    with torch.no_grad():
        padded = model(**model_inputs(processor, samples, packing=False)).loss
        packed = model(**model_inputs(processor, samples, packing=True)).loss
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def test_a_dropped_micro_step_reaches_the_same_parameters_with_exact_zero_gradients(demo_recipe):
    recipe = demo_recipe()
    model = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained)
    processor = BehaviorLlavaProcessor.from_pretrained(recipe.data.processor)
    dataset = Trainer(recipe)._data(processor)
    batch = model_inputs(processor, [dataset.get(0, i)[0] for i in range(2)], packing=True)

    class Engine:  # what `_zero_gradient_loss` uses of a DeepSpeed engine
        device = torch.device("cpu")

        def __call__(self, **inputs):
            return model(**inputs)

    def gradients(loss: torch.Tensor) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        loss.backward()
        return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}

    real = gradients(model(**batch, num_items_in_batch=5.0).loss)
    stand_in = _zero_gradient_loss(Engine(), batch, per_backward=5.0)
    assert stand_in.item() == 0.0
    zero = gradients(stand_in)
    assert (
        zero.keys() == real.keys() and len(real) > 10
    )  # DeepSpeed's gradient hooks fire for the same tensors
    assert any(torch.count_nonzero(g) for g in real.values())
    assert [name for name, g in zero.items() if torch.count_nonzero(g)] == []


def test_behavior_metrics_on_heldout_shards(demo_recipe):
    from bl_data.shards import ShardIndex
    from bl_train.evaluate import evaluate_behavior

    recipe = demo_recipe()
    model = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained)
    processor = BehaviorLlavaProcessor.from_pretrained(recipe.data.processor)
    result = evaluate_behavior(
        model, processor, ShardIndex(recipe.data.heldout_shards), num_samples=2, max_new_tokens=8
    )
    assert result["samples"] == 2 and math.isfinite(result["comment_ppl"])
    # an untrained model's perplexity on the comments is of the order of the vocabulary size
    assert 50 < result["comment_ppl"] < 20 * model.config.text_config.vocab_size


def test_overlong_samples_are_counted_and_skipped_with_their_reason(demo_recipe):
    summary = Trainer(
        demo_recipe("--train.max_steps", "3", "--train.eval_every", "0", "--data.max_length", "200")
    ).run()
    assert summary.steps == 3
    assert summary.skipped_samples and all("max_length=200" in reason for reason in summary.skipped_samples)


def test_non_finite_losses_skip_steps_then_stop_training(demo_recipe, monkeypatch):
    forward = BehaviorLlavaForCausalLM.forward

    def poisoned(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(BehaviorLlavaForCausalLM, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="3 non-finite losses in a row"):
        Trainer(
            demo_recipe("--train.max_steps", "10", "--train.eval_every", "0", "--train.max_bad_steps", "3")
        ).run()


@pytest.mark.parametrize(
    "zero",
    [
        ("--deepspeed.stage", "2", "--deepspeed.offload_optimizer", "cpu"),
        (
            "--deepspeed.stage",
            "3",
            "--deepspeed.offload_optimizer",
            "cpu",
            "--deepspeed.offload_param",
            "cpu",
        ),
    ],
    ids=["zero2-offload-optimizer", "zero3-offload-param"],
)
def test_final_export_loads_and_matches_the_engine_module(demo_recipe, zero):
    recipe = demo_recipe(
        "--train.max_steps", "2", "--train.eval_every", "0", "--data.num_workers", "0", *zero
    )
    trainer = Trainer(recipe)
    summary = trainer.run()
    processor = AutoProcessor.from_pretrained(summary.final_dir)  # exported beside the weights
    assert type(processor) is BehaviorLlavaProcessor and processor.max_length == recipe.data.max_length
    batch = model_inputs(processor, [trainer._data(processor).get(0, i)[0] for i in range(2)], packing=False)
    reloaded = BehaviorLlavaForCausalLM.from_pretrained(summary.final_dir).eval()
    assert (
        reloaded.generation_config.to_dict() == GenerationConfig.from_pretrained(summary.final_dir).to_dict()
    )
    trained = BehaviorLlavaForCausalLM.from_pretrained(recipe.model.pretrained)
    assert any(
        not torch.equal(a, b) for a, b in zip(reloaded.parameters(), trained.parameters(), strict=True)
    )
    with torch.no_grad():
        expected = trainer.engine.module.eval()(**batch).logits  # ZeRO-3 gathers the partitions in its hooks
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=1e-5, atol=1e-5)
