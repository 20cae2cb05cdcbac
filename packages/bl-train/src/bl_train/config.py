"""Typed training recipes: dataclasses loaded from YAML, with dot-path overrides from the CLI.

recipe = load_recipe("configs/behavior-llava-13b.yaml", ["--optim.lr", "1e-5"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


@dataclass
class ModelConfig:
    """Which model to train: a `bl_model` builder (`tiny`, `llama_vid_7b`, `llama_vid_13b`) or a saved model."""

    builder: Literal["tiny", "llama_vid_7b", "llama_vid_13b"] | None = "tiny"
    pretrained: str | None = (
        None  # a directory saved by `save_pretrained` / `bl_model.convert`; wins over builder
    )
    freeze_vision_tower: bool = True
    freeze_qformer: bool = True
    freeze_attention_projectors: bool = True
    freeze_mm_projector: bool = False
    freeze_language_model: bool = False
    gradient_checkpointing: bool = True


@dataclass
class DataConfig:
    """BLIFT shards mixed with LLaMA-VID instruction data, tokenised by bl-model's processor."""

    blift_shards: list[str] = field(default_factory=list)  # tar files or directories of shards
    instruction_json: str | None = None  # LLaMA-VID format: [{"id", "image"|"video", "conversations"}]
    media_root: str | None = None  # where instruction_json's image/video paths are relative to
    processor: str | None = None  # a saved BehaviorLlavaProcessor directory
    blift_ratio: float = 0.5  # fraction of samples drawn from BLIFT (paper: 1:1 -> 0.5)
    with_behavior: bool = True  # False: the Ad-LLaVA control (verbalisation without the behaviour block)
    max_length: int = 2048
    max_frames: int = 300
    packing: bool = True
    num_workers: int = 2
    heldout_shards: list[str] = field(default_factory=list)  # for the behaviour metrics


@dataclass
class OptimConfig:
    """AdamW + linear warmup + cosine decay (the paper: lr 2e-5, weight decay 0, warmup ratio 0.03)."""

    lr: float = 2e-5
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_ratio: float = 0.03
    schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0


@dataclass
class DeepSpeedConfig:
    """ZeRO settings. Parameter offload exists only at stage 3 (the ancestors' configs silently ignored it)."""

    stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: Literal["none", "cpu"] = "cpu"
    offload_param: Literal["none", "cpu"] = "none"
    overlap_comm: bool = True
    contiguous_gradients: bool = True
    reduce_bucket_size: int = 500_000_000
    allgather_bucket_size: int = 500_000_000


@dataclass
class TrainConfig:
    """Loop, precision, checkpoints and logging."""

    output_dir: str = "runs/demo"
    epochs: float = 2.2
    max_steps: int | None = None  # overrides epochs when set
    micro_batch_size: int = 4
    grad_accum: int = 1
    precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    tf32: bool = True
    seed: int = 42
    log_every: int = 1
    save_every: int = 500
    keep_last: int = 2
    eval_every: int = 0  # 0: no periodic behaviour evaluation
    eval_samples: int = 32
    eval_max_new_tokens: int = 512  # long enough for a scene-by-scene answer and its behaviour block
    resume: str | None = None  # "auto": newest loadable checkpoint; or a tag (step-N) / a folder
    max_bad_steps: int = 5  # stop after this many non-finite losses in a row
    wandb_project: str | None = None


@dataclass
class Recipe:
    """A complete training recipe: what `apps/train` runs and saves beside its checkpoints."""

    name: str = "demo"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    deepspeed: DeepSpeedConfig = field(default_factory=DeepSpeedConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> Recipe:
        """Raise ValueError for settings that cannot work together; returns self."""
        ds, t, d = self.deepspeed, self.train, self.data
        if ds.offload_param != "none" and ds.stage != 3:
            raise ValueError(
                f"deepspeed.offload_param={ds.offload_param!r} needs ZeRO stage 3, got stage {ds.stage}"
            )
        if ds.stage == 3 and t.eval_every:
            raise ValueError(
                "train.eval_every needs ZeRO stage <= 2: under stage 3 every forward gathers weights from all "
                "ranks, so ranks generating answers of different lengths would wait on each other forever"
            )
        if ds.offload_optimizer != "none" and ds.stage == 0:
            raise ValueError("deepspeed.offload_optimizer needs ZeRO stage >= 1")
        if t.micro_batch_size < 1 or t.grad_accum < 1:
            raise ValueError("train.micro_batch_size and train.grad_accum must be >= 1")
        if (t.max_steps is None) == (t.epochs <= 0):
            raise ValueError("set exactly one of train.epochs (> 0) and train.max_steps")
        if not 0.0 <= d.blift_ratio <= 1.0:
            raise ValueError(f"data.blift_ratio must be in [0, 1], got {d.blift_ratio}")
        if d.blift_ratio > 0 and not d.blift_shards:
            raise ValueError("data.blift_ratio > 0 needs data.blift_shards")
        if d.blift_ratio < 1 and not d.instruction_json:
            raise ValueError("data.blift_ratio < 1 needs data.instruction_json")
        if self.model.builder is None and self.model.pretrained is None:
            raise ValueError("set model.builder or model.pretrained")
        if not 0 <= self.optim.warmup_ratio < 1:
            raise ValueError("optim.warmup_ratio must be in [0, 1)")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML / CLI value to the annotated type, or raise naming the field."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        is_null = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_null and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except (TypeError, ValueError) as err:
                errors.append(str(err))
        raise ValueError(f"{where}: {value!r} matches none of {hint}: {'; '.join(errors)}")
    if origin is Literal:
        for option in args:
            if value == option or (isinstance(value, str) and str(option) == value):
                return option
        raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple):
        items = yaml.safe_load(value) if isinstance(value, str) else value
        if isinstance(items, str) or not isinstance(items, list | tuple):
            items = [items]
        if origin is tuple:
            return tuple(_coerce(v, a, where) for v, a in zip(items, args, strict=True))
        return [_coerce(v, args[0], where) for v in items]
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where}: expected a bool, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected {hint.__name__}, got {value!r}")
        number = (
            hint(float(value))
            if hint is int and isinstance(value, str) and "e" in value.lower()
            else hint(value)
        )
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(f"{where}: expected an int, got {value!r}")
        return number
    if hint is str:
        return str(value)
    raise TypeError(f"{where}: unsupported type {hint}")


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"{where or 'recipe'}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint, path = hints[name], f"{where}.{name}".lstrip(".")
        kwargs[name] = (
            _build(hint, value or {}, path) if dataclasses.is_dataclass(hint) else _coerce(value, hint, path)
        )
    return cls(**kwargs)


def _set_dotted(tree: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise ValueError(f"--{dotted}: {key!r} is not a section")
    tree[leaf] = value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`["--optim.lr", "1e-5", "--train.max_steps=20"]` -> nested dict of raw string values."""
    tree: dict[str, Any] = {}
    it = iter(args)
    for arg in it:
        if not arg.startswith("--"):
            raise ValueError(f"expected --section.key VALUE, got {arg!r}")
        key, sep, value = arg[2:].partition("=")
        if not sep:
            value = next(it, None)
            if value is None:
                raise ValueError(f"--{key} needs a value")
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = (
            _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def load_recipe(path: Path | str | None = None, overrides: list[str] | None = None) -> Recipe:
    """A validated `Recipe` from a YAML file (or the defaults) plus `--a.b value` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a recipe must be a mapping, got {type(values).__name__}")
    values = _merge(values, parse_overrides(overrides or []))
    try:
        return _build(Recipe, values, "").validate()
    except ValueError as err:
        raise ValueError(f"{path or 'recipe'}: {err}") from err
