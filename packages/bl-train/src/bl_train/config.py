"""Typed training recipes: dataclasses read from YAML and `--section.key VALUE` overrides by jsonargparse.

recipe = load_recipe("configs/behavior-llava-13b.yaml", ["--optim.lr", "1e-5"])

Each field's docstring (the string under it) is its `apps/train --help` text.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, set_parsing_settings

# the string under each field is its help text (jsonargparse reads it through docstring-parser)
set_parsing_settings(docstring_parse_attribute_docstrings=True)


@dataclass(frozen=True)
class Range:
    """The bounds of a numeric recipe field (see `bounded`); each item of a tuple field is checked."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: > low, else >= low
    high_open: bool = False

    def __str__(self) -> str:
        low, high = (f"{x:g}" if isinstance(x, float) else x for x in (self.low, self.high))
        if high is None:
            return f"{'>' if self.low_open else '>='} {low}"
        if low is None:
            return f"{'<' if self.high_open else '<='} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"

    def problem(self, value: Any) -> str | None:
        """What is wrong with `value`, or None (an unset optional field, None, is fine)."""
        for item in value if isinstance(value, tuple | list) else [value]:
            if item is None:
                continue
            below = self.low is not None and (item <= self.low if self.low_open else item < self.low)
            above = self.high is not None and (item >= self.high if self.high_open else item > self.high)
            if below or above or not math.isfinite(item):
                return f"must be {'a finite number ' if not math.isfinite(item) else ''}{self}, got {value!r}"
        return None


def bounded(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A numeric recipe field with its range, checked when a recipe is parsed: `lr: float = bounded(2e-5, gt=0)`."""
    low, high = (gt if gt is not None else ge), (lt if lt is not None else le)
    return field(default=default, metadata={"range": Range(low, high, gt is not None, lt is not None)})


@dataclass
class ModelConfig:
    """Which model to train: a `bl_model` builder (`tiny`, `llama_vid_7b`, `llama_vid_13b`) or a saved model."""

    builder: Literal["tiny", "llama_vid_7b", "llama_vid_13b"] | None = "tiny"
    """a `bl_model` builder for a fresh model"""
    pretrained: str | None = None
    """a directory saved by `save_pretrained` / `bl_model.convert`; wins over builder"""
    freeze_vision_tower: bool = True
    """keep the EVA ViT frozen"""
    freeze_qformer: bool = True
    """keep the Q-Former frozen"""
    freeze_attention_projectors: bool = True
    """keep the context-attention projectors frozen"""
    freeze_mm_projector: bool = False
    """keep the multimodal projector frozen"""
    freeze_language_model: bool = False
    """keep the LLM frozen"""
    gradient_checkpointing: bool = True
    """recompute the LLM's activations in the backward pass"""


@dataclass
class DataConfig:
    """BLIFT shards mixed with LLaMA-VID instruction data, tokenised by bl-model's processor."""

    blift_shards: list[str] = field(default_factory=list)
    """tar files or directories of BLIFT shards"""
    instruction_json: str | None = None
    """LLaMA-VID format: [{"id", "image"|"video", "conversations"}]"""
    media_root: str | None = None
    """where instruction_json's image/video paths are relative to"""
    processor: str | None = None
    """a saved BehaviorLlavaProcessor directory"""
    preprocess: Literal["as_written", "llamavid"] | None = None
    """how samples are read: llamavid = the video in every human turn, each with its own Q-Former prompt;
    None: the processor's saved setting (the converter saves llamavid)"""
    build_demo: bool = False
    """build the demo set (synthesised clips -> shards, tokenizers, tiny model) in processor's parent folder first, once"""
    blift_ratio: float = bounded(0.5, ge=0, le=1)
    """fraction of samples drawn from BLIFT (paper: 1:1 -> 0.5)"""
    with_behavior: bool = True
    """False: the Ad-LLaVA control (verbalisation without the behaviour block)"""
    max_length: int = bounded(2048, ge=1)
    """tokens per sample; longer samples are skipped and counted"""
    max_frames: int = bounded(300, ge=1)
    """frames per video (1 fps)"""
    packing: bool = True
    """pack a micro-batch's samples into one row (no padding)"""
    num_workers: int = bounded(2, ge=0)
    """data-loader processes"""
    heldout_shards: list[str] = field(default_factory=list)
    """shards for the behaviour metrics"""


@dataclass
class OptimConfig:
    """AdamW + linear warmup + cosine decay (the paper: lr 2e-5, weight decay 0, warmup ratio 0.03)."""

    lr: float = bounded(2e-5, gt=0)
    """peak learning rate"""
    weight_decay: float = bounded(0.0, ge=0)
    """AdamW weight decay"""
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)
    """AdamW betas, each in [0, 1)"""
    eps: float = bounded(1e-8, gt=0)
    """AdamW epsilon"""
    warmup_ratio: float = bounded(0.03, ge=0, lt=1)
    """fraction of the steps with a linear warmup, in [0, 1)"""
    schedule: Literal["cosine", "constant"] = "cosine"
    """learning-rate decay after the warmup"""
    grad_clip: float = bounded(1.0, ge=0)
    """gradient-norm clipping (0: none)"""


@dataclass
class DeepSpeedConfig:
    """ZeRO settings (the offload rules are in `zero_offload_problem`)."""

    stage: Literal[0, 1, 2, 3] = 2
    """ZeRO stage"""
    offload_optimizer: Literal["none", "cpu"] = "cpu"
    """optimizer state on the CPU (DeepSpeedCPUAdam); needs stage >= 1"""
    offload_param: Literal["none", "cpu"] = "none"
    """parameters on the CPU; exists only at stage 3"""
    overlap_comm: bool = True
    """overlap gradient reduction with the backward pass"""
    contiguous_gradients: bool = True
    """copy gradients into one buffer as they are produced"""
    reduce_bucket_size: int = bounded(500_000_000, ge=1)
    """elements per gradient reduction"""
    allgather_bucket_size: int = bounded(500_000_000, ge=1)
    """elements per parameter all-gather"""


@dataclass
class LoraConfig:
    """LoRA adapters (peft) for `train.finetune lora|qlora`; unused by a full fine-tune."""

    r: int = bounded(16, ge=1)
    """adapter rank, >= 1"""
    alpha: float = bounded(32.0, gt=0)
    """scaling: the update is (alpha / r) B A"""
    dropout: float = bounded(0.05, ge=0, lt=1)
    """dropout on the adapters' input, in [0, 1)"""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """linear layers that get adapters, by name or dotted-path suffix (default: the LLM's attention and MLP)"""
    modules_to_save: list[str] = field(
        default_factory=lambda: ["mm_projector", "query_projector", "key_projector", "val_projector"]
    )
    """modules trained in full beside the adapters (default: the projector and the Q-Former's text-query path)"""


@dataclass
class TrainConfig:
    """Loop, precision, checkpoints and logging."""

    finetune: Literal["full", "lora", "qlora"] = "full"
    """full: the parameters model.freeze_* leave trainable; lora: peft adapters (lora.*) on a frozen base
    (model.freeze_* ignored); qlora: lora on a 4-bit NF4 base (CUDA, the bl-train[qlora] extra)"""
    output_dir: str = "runs/demo"
    """where checkpoints, metrics.jsonl, TensorBoard logs and final/ go"""
    epochs: float = bounded(2.2, ge=0)
    """passes over the data (0 when max_steps is set)"""
    max_steps: int | None = bounded(None, ge=1)
    """optimizer steps; overrides epochs when set"""
    micro_batch_size: int = bounded(4, ge=1)
    """samples per GPU per forward (the micro-batch)"""
    grad_accum: int = bounded(1, ge=1)
    """micro-batches per GPU per optimizer step (global batch size: micro_batch_size x grad_accum x ranks)"""
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    """training precision"""
    tf32: bool = True
    """allow TF32 matmuls on Ampere and later"""
    seed: int = bounded(42, ge=0, le=2**32 - 1)
    """seed of the data order and the model's initialisation"""
    log_every: int = bounded(1, ge=1)
    """steps between metrics.jsonl / TensorBoard records"""
    save_every: int = bounded(500, ge=1)
    """steps between DeepSpeed checkpoints"""
    keep_last: int = bounded(2, ge=0)
    """checkpoints kept (0: all)"""
    eval_every: int = bounded(0, ge=0)
    """steps between behaviour evaluations on data.heldout_shards (0: none)"""
    eval_samples: int = bounded(32, ge=1)
    """held-out samples per evaluation"""
    eval_max_new_tokens: int = bounded(512, ge=1)
    """long enough for a scene-by-scene answer and its behaviour block"""
    resume: str | None = None
    """"auto": the newest loadable checkpoint in output_dir (damaged ones skipped); or a tag (step-N) / a folder"""
    max_bad_steps: int = bounded(5, ge=1)
    """stop after this many non-finite losses in a row"""
    wandb_project: str | None = None
    """also log to this Weights & Biases project (the `wandb` extra)"""

    def global_batch_size(self, world_size: int) -> int:
        """Samples per optimizer step over all ranks: micro_batch_size x grad_accum x world_size."""
        return self.micro_batch_size * self.grad_accum * world_size


def zero_offload_problem(stage: int, offload_optimizer: bool, offload_param: bool) -> str | None:
    """The ZeRO offload rules, in one place: what is wrong with this combination, or None."""
    if offload_param and stage != 3:
        return f"offload_param exists only at ZeRO stage 3 (stage {stage} would silently ignore it)"
    if offload_optimizer and stage < 1:
        return "offload_optimizer needs ZeRO stage >= 1"
    return None


@dataclass
class Recipe:
    """A complete training recipe: what `apps/train` runs and saves beside its checkpoints."""

    name: str = "demo"
    """the recipe's name (reports and run folders)"""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)

    def validate(self) -> Recipe:
        """Raise ValueError for a numeric field out of its range (`--section.field: must be ...`) or settings
        that cannot work together; returns self."""
        for section in SECTIONS:
            config = getattr(self, section)
            for f in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
                limits = f.metadata.get("range")
                problem = limits.problem(getattr(config, f.name)) if limits else None
                if problem:
                    raise ValueError(f"--{section}.{f.name}: {problem}")
        ds, t, d = self.deepspeed, self.train, self.data
        offload = zero_offload_problem(ds.stage, ds.offload_optimizer != "none", ds.offload_param != "none")
        if offload:
            raise ValueError(f"deepspeed: {offload}")
        if ds.stage == 3 and t.eval_every:
            raise ValueError(
                "train.eval_every needs ZeRO stage <= 2: under stage 3 every forward gathers weights from all "
                "ranks, so ranks generating answers of different lengths would wait on each other forever"
            )
        if (t.max_steps is None) == (t.epochs <= 0):
            raise ValueError("set exactly one of train.epochs (> 0) and train.max_steps")
        if d.blift_ratio > 0 and not d.blift_shards:
            raise ValueError("data.blift_ratio > 0 needs data.blift_shards")
        if d.blift_ratio < 1 and not d.instruction_json:
            raise ValueError("data.blift_ratio < 1 needs data.instruction_json")
        if d.build_demo and not d.processor:
            raise ValueError("data.build_demo needs data.processor (the demo is built in its parent folder)")
        if self.model.builder is None and self.model.pretrained is None:
            raise ValueError("set model.builder or model.pretrained")
        if t.finetune != "full":
            self._validate_lora()
        return self

    def _validate_lora(self) -> None:
        lo, t = self.lora, self.train
        if not lo.target_modules:
            raise ValueError("lora.target_modules must name at least one layer")
        if self.model.pretrained is None:
            raise ValueError(
                f"train.finetune {t.finetune} needs model.pretrained (the base the adapters are for)"
            )
        if t.finetune == "qlora" and self.deepspeed.stage == 3:
            raise ValueError(
                "train.finetune qlora needs deepspeed.stage <= 2 (ZeRO-3 cannot partition 4-bit weights)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


SECTIONS = tuple(f.name for f in dataclasses.fields(Recipe))


def recipe_parser(prog: str = "apps/train", description: str | None = None) -> ArgumentParser:
    """A jsonargparse parser: `--recipe FILE` (a YAML recipe), then `--section.key VALUE` per field.

    It raises `argparse.ArgumentError` instead of exiting, and has `--print_config` (the resolved recipe as
    YAML, fit for `--recipe`).
    """
    parser = ArgumentParser(prog=prog, description=description, exit_on_error=False, default_env=False)
    parser.add_argument(
        "--recipe", action=ActionConfigFile, help="a YAML recipe; options after it override it"
    )
    parser.add_class_arguments(Recipe, None, fail_untyped=True, sub_configs=False)
    return parser


def recipe_from_namespace(parser: ArgumentParser, namespace: Any) -> Recipe:
    """The validated `Recipe` of a namespace parsed by `parser` (its other keys, e.g. --recipe, are ignored)."""
    sections = parser.instantiate(namespace)  # the sections as their dataclasses
    return Recipe(**{name: sections[name] for name in SECTIONS}).validate()


def one_line(err: Exception) -> str:
    """A jsonargparse error as one line that starts with the option: `--train.max_steps: expected int, got 'x'`."""
    text = " ".join(str(err).split())
    text = re.sub(r'Parser key "([\w.]+)":', r"--\1:", text)
    text = re.sub(r"<class '(\w+)'>", r"\1", text).replace("typing.", "").replace("NoneType", "null")
    union = re.search(
        r"Does not validate against any of the Union subtypes Subtypes: \[(.*?)\].*Given value: (.*)$", text
    )
    if union:
        text = f"{text[: union.start()]}expected {union[1].replace(', ', ' or ')}, got {union[2]!r}"
    return re.sub(r"Expected a (.*?)\. Got value: (.*)$", r"expected \1, got '\2'", text)


def load_recipe(path: Path | str | None = None, overrides: list[str] | None = None) -> Recipe:
    """A validated `Recipe` from a YAML file (or the defaults) plus `--a.b value` overrides.

    Raises ValueError naming the file and the field for a bad key, type or combination.
    """
    args = ["--recipe", str(path)] if path is not None else []
    try:
        parser = recipe_parser()
        return recipe_from_namespace(parser, parser.parse_args([*args, *(overrides or [])]))
    except (argparse.ArgumentError, ValueError) as err:
        raise ValueError(f"{path or 'recipe'}: {one_line(err)}") from err
