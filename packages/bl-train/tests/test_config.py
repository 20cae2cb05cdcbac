"""Recipes: every shipped YAML validates; overrides, type errors and DeepSpeed sanity checks."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from bl_train.config import OptimConfig, Recipe, TrainConfig, load_recipe
from bl_train.deepspeed_config import deepspeed_config, validate

CONFIGS = Path(__file__).parents[3] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_every_recipe_is_shipped():
    assert {p.stem for p in RECIPES} == {
        "demo",
        "behavior-llava-7b",
        "behavior-llava-13b",
        "behavior-llava-13b-fast",
        "ad-llava-13b",
        "behavior-llava-13b-lora",
        "behavior-llava-7b-qlora",
    }


def test_the_fast_13b_recipe_is_the_paper_recipe_without_offload():
    """ZeRO-2 with the optimizer on the GPUs; every other field is the paper's 13b recipe."""
    paper, fast = (
        load_recipe(CONFIGS / f"{name}.yaml") for name in ("behavior-llava-13b", "behavior-llava-13b-fast")
    )
    assert (fast.deepspeed.stage, fast.deepspeed.offload_optimizer, fast.deepspeed.offload_param) == (
        2,
        "none",
        "none",
    )
    assert fast.name == "behavior-llava-13b-fast" and fast.train.output_dir == "runs/behavior-llava-13b-fast"
    same = dataclasses.replace(
        fast,
        name=paper.name,
        deepspeed=dataclasses.replace(fast.deepspeed, offload_optimizer="cpu"),
        train=dataclasses.replace(fast.train, output_dir=paper.train.output_dir),
    )
    assert same == paper
    assert "offload_optimizer" not in deepspeed_config(fast, world_size=8)["zero_optimization"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipe_validates_and_round_trips(path, tmp_path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    ds = deepspeed_config(recipe, world_size=8)
    assert ds["train_batch_size"] == recipe.train.micro_batch_size * recipe.train.grad_accum * 8
    recipe.save(tmp_path / "recipe.yaml")
    assert load_recipe(tmp_path / "recipe.yaml") == recipe


@pytest.mark.parametrize(
    ("name", "finetune", "builder", "r"),
    [
        ("behavior-llava-13b-lora", "lora", "llama_vid_13b", 128),
        ("behavior-llava-7b-qlora", "qlora", "llama_vid_7b", 64),
    ],
)
def test_lora_recipes_fit_their_model(name, finetune, builder, r):
    """The adapters and modules trained in full exist in the real 13B / 7B layout (built on the meta device);
    what trains is the adapters' r x (in + out) per LLM linear plus the projectors, a few % of the model."""
    import bl_model
    from bl_model import BehaviorLlavaForCausalLM
    from bl_train.lora import _check_names

    recipe = load_recipe(CONFIGS / f"{name}.yaml")
    assert (recipe.train.finetune, recipe.lora.r, recipe.deepspeed.stage) == (finetune, r, 2)
    with torch.device("meta"):
        model = BehaviorLlavaForCausalLM(getattr(bl_model, builder)())
    _check_names(model, recipe.lora)  # raises for a name that matches nothing
    adapters = sum(
        r * (m.in_features + m.out_features)
        for n, m in model.language_model.named_modules()
        if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in recipe.lora.target_modules
    )
    full = sum(p.numel() for n in recipe.lora.modules_to_save for p in getattr(model, n).parameters())
    total = sum(p.numel() for p in model.parameters())
    assert 0.01 < (adapters + full) / total < 0.05


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--lora.r", "0"], "--lora.r: must be >= 1, got 0"),
        (["--lora.dropout", "1"], r"--lora.dropout: must be in \[0, 1\), got 1"),
        (["--lora.target_modules", "[]"], "lora.target_modules must name at least one layer"),
        (
            ["--model.pretrained", "null", "--model.builder", "tiny"],
            "train.finetune lora needs model.pretrained",
        ),
    ],
)
def test_bad_lora_settings_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(CONFIGS / "demo.yaml", ["--train.finetune", "lora", *overrides])
    if message.startswith("--"):  # a value out of its range is refused whatever the finetune
        with pytest.raises(ValueError, match=message):
            load_recipe(CONFIGS / "demo.yaml", overrides)
    else:  # a full fine-tune does not use the LoRA layers or the base path
        load_recipe(CONFIGS / "demo.yaml", overrides[:2] if overrides[0].startswith("--lora") else [])


def test_qlora_refuses_zero3():
    with pytest.raises(ValueError, match=r"qlora needs deepspeed\.stage <= 2"):
        load_recipe(
            CONFIGS / "behavior-llava-7b-qlora.yaml", ["--deepspeed.stage", "3", "--train.eval_every", "0"]
        )


@pytest.mark.parametrize("name", ["behavior-llava-7b", "behavior-llava-13b", "ad-llava-13b"])
def test_paper_recipes_carry_the_paper_hyperparameters(name):
    r = load_recipe(CONFIGS / f"{name}.yaml")
    assert (r.optim.lr, r.optim.weight_decay, r.optim.warmup_ratio, r.optim.schedule) == (
        2e-5,
        0.0,
        0.03,
        "cosine",
    )
    assert (r.train.micro_batch_size, r.train.precision, r.train.epochs, r.data.max_length) == (
        4,
        "bf16",
        2.2,
        2048,
    )
    assert r.model.gradient_checkpointing and r.data.blift_ratio == 0.5
    assert (r.deepspeed.stage, r.deepspeed.offload_optimizer, r.deepspeed.offload_param) == (2, "cpu", "none")
    assert r.data.with_behavior == (name != "ad-llava-13b")


def test_dot_path_overrides_are_typed():
    r = load_recipe(
        CONFIGS / "demo.yaml",
        [
            "--optim.lr",
            "1e-5",
            "--train.max_steps=7",
            "--data.packing",
            "false",
            "--optim.betas",
            "[0.8, 0.95]",
            "--model.pretrained",
            "null",
            "--model.builder",
            "tiny",
        ],
    )
    assert r.optim.lr == 1e-5 and r.train.max_steps == 7 and r.data.packing is False
    assert r.optim.betas == (0.8, 0.95) and r.model.pretrained is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--optim.lrr", "1"], "unrecognized arguments: --optim.lrr"),
        (
            ["--train.precision", "fp8"],
            r"--train.precision: expected Literal\['bf16', 'fp16', 'fp32'\], got 'fp8'",
        ),
        (["--train.max_steps", "ten"], "--train.max_steps: expected int or null, got 'ten'"),
        (["--deepspeed.offload_param", "cpu"], "offload_param exists only at ZeRO stage 3"),
        (["--data.blift_ratio", "1.5"], "blift_ratio"),
        (["--optim.lr"], "--optim.lr: expected one argument"),
    ],
)
def test_bad_overrides_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_recipe(CONFIGS / "demo.yaml", overrides)


def test_a_yaml_recipe_with_an_unknown_key_names_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text((CONFIGS / "demo.yaml").read_text().replace("  lr: 2.0e-3", "  lr: 2.0e-3\n  lrr: 1"))
    with pytest.raises(ValueError, match=r"bad.yaml: .*lrr"):
        load_recipe(path)


def test_deepspeed_validation_catches_silent_misconfigurations():
    ds = deepspeed_config(Recipe(data=load_recipe(CONFIGS / "demo.yaml").data), world_size=2)
    assert ds["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert "offload_param" not in ds["zero_optimization"]
    bad = ds | {"zero_optimization": ds["zero_optimization"] | {"offload_param": {"device": "cpu"}}}
    with pytest.raises(ValueError, match="only at ZeRO stage 3"):
        validate(bad, world_size=2)
    with pytest.raises(ValueError, match="train_batch_size"):
        validate(ds, world_size=3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--train.max_steps", "-5"], "--train.max_steps: must be >= 1, got -5"),
        (["--train.micro_batch_size", "0"], "--train.micro_batch_size: must be >= 1, got 0"),
        (["--train.seed", "-1"], "--train.seed: must be in [0, 4294967295], got -1"),
        (["--train.save_every", "0"], "--train.save_every: must be >= 1, got 0"),
        (["--optim.lr", "0"], "--optim.lr: must be > 0, got 0.0"),
        (["--optim.lr=-1e-5"], "--optim.lr: must be > 0, got -1e-05"),
        (["--optim.betas", "[0.9, 1.0]"], "--optim.betas: must be in [0, 1), got (0.9, 1.0)"),
        (["--optim.warmup_ratio", "1"], "--optim.warmup_ratio: must be in [0, 1), got 1.0"),
        (["--data.blift_ratio", "-0.1"], "--data.blift_ratio: must be in [0, 1], got -0.1"),
        (["--data.num_workers", "-1"], "--data.num_workers: must be >= 0, got -1"),
        (["--deepspeed.reduce_bucket_size", "0"], "--deepspeed.reduce_bucket_size: must be >= 1, got 0"),
    ],
)
def test_numeric_fields_out_of_range_are_rejected_at_parse_time(overrides, message):
    """Issue 25 item 3: a value out of its field's range is one clear error when the recipe is parsed."""
    with pytest.raises(ValueError) as raised:
        load_recipe(CONFIGS / "demo.yaml", overrides)
    assert str(raised.value) == f"{CONFIGS / 'demo.yaml'}: {message}"


def test_every_numeric_recipe_field_declares_its_range():
    """New int/float fields (e.g. LoRA's) must say their range: `bounded(default, ge=..., lt=...)`."""
    recipe = Recipe()
    for section in ("model", "data", "optim", "deepspeed", "train"):
        for f in dataclasses.fields(getattr(recipe, section)):
            numeric = any(t in str(f.type) for t in ("int", "float")) and "Literal" not in str(f.type)
            assert not numeric or "range" in f.metadata, f"{section}.{f.name} ({f.type}) has no range"


def test_recipes_built_in_python_are_range_checked_too():
    with pytest.raises(ValueError, match=r"--train.eval_samples: must be >= 1, got 0"):
        Recipe(train=TrainConfig(eval_samples=0)).validate()
    with pytest.raises(ValueError, match=r"--optim.eps: must be a finite number > 0, got inf"):
        Recipe(optim=OptimConfig(eps=math.inf)).validate()
