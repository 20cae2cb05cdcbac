"""Recipes: every shipped YAML validates; overrides, type errors and DeepSpeed sanity checks."""

import dataclasses
from pathlib import Path

import pytest

from bl_train.config import Recipe, load_recipe
from bl_train.deepspeed_config import deepspeed_config, validate

CONFIGS = Path(__file__).parents[3] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_every_recipe_is_shipped():
    assert {p.stem for p in RECIPES} == {
        "demo", "behavior-llava-7b", "behavior-llava-13b", "behavior-llava-13b-fast", "ad-llava-13b",
    }  # fmt: skip


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
    r = load_recipe(CONFIGS / "demo.yaml", ["--optim.lr", "1e-5", "--train.max_steps=7", "--data.packing", "false",
                                             "--optim.betas", "[0.8, 0.95]", "--model.pretrained", "null", "--model.builder", "tiny"])  # fmt: skip
    assert r.optim.lr == 1e-5 and r.train.max_steps == 7 and r.data.packing is False
    assert r.optim.betas == (0.8, 0.95) and r.model.pretrained is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--optim.lrr", "1"], "unrecognized arguments: --optim.lrr"),
        (["--train.precision", "fp8"], r"--train.precision: expected Literal\['bf16', 'fp16', 'fp32'\], got 'fp8'"),
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
