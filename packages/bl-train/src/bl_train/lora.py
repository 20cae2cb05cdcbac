"""LoRA and QLoRA with peft: the recipe's `lora` section applied to a model, and the two exports.

    model = apply_lora(model, recipe.lora, base_dir)   # a peft.PeftModel: only adapters + modules_to_save train
    save_adapter(model, out / "final-adapter")         # adapter weights + adapter_config.json (all ranks call)
    merge_into_base(out / "final-adapter", out / "final")  # base + adapter merged, transformers' layout

QLoRA loads the LLM's linear layers as 4-bit NF4 (bitsandbytes, CUDA only); every other part of the model and
the modules trained in full stay in the training precision. Both exports merge into the unquantized base.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import peft
import torch
from torch import nn
from transformers import BitsAndBytesConfig

from bl_model.inference import load_merged_adapter

from .config import LoraConfig

# parts of BehaviorLlavaForCausalLM that QLoRA keeps unquantized (everything but the LLM's decoder linears)
_NOT_QUANTIZED = [
    "vision_tower",
    "qformer",
    "query_projector",
    "key_projector",
    "val_projector",
    "mm_projector",
    "lm_head",
]


class LoraSetupError(ValueError):
    """A `lora.*` setting that does not fit the model; the message starts with the option it names."""


def _matches(module_name: str, wanted: str) -> bool:
    """peft's rule for a name in `target_modules` / `modules_to_save`: the whole path or a dotted suffix."""
    return module_name == wanted or module_name.endswith(f".{wanted}")


def _check_names(model: nn.Module, settings: LoraConfig) -> None:
    """Raise LoraSetupError for a target_modules / modules_to_save entry that matches no module of `model`
    (peft itself only complains when none of the entries match)."""
    names = [name for name, _ in model.named_modules()]
    linears = sorted(
        {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}
        - set("0123456789")  # nn.Sequential positions
    )
    for option, wanted in (
        ("target_modules", settings.target_modules),
        ("modules_to_save", settings.modules_to_save),
    ):
        missing = [w for w in wanted if not any(_matches(name, w) for name in names)]
        if missing:
            raise LoraSetupError(
                f"--lora.{option}: {', '.join(map(repr, missing))} matches no module of the model "
                f"(its linear layers are named {', '.join(linears)})"
            )


def apply_lora(model: nn.Module, settings: LoraConfig, base: str | Path) -> peft.PeftModel:
    """`model` frozen with LoRA adapters on `settings.target_modules` and full copies of `settings.modules_to_save`
    trainable; the adapter config names `base` (resolved to an absolute path) as its base model."""
    _check_names(model, settings)
    config = peft.LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        modules_to_save=list(settings.modules_to_save) or None,
        bias="none",
    )
    model.requires_grad_(False)  # peft unfreezes what it adds; a 4-bit weight cannot require grad anyway
    wrapped = peft.get_peft_model(model, config)
    wrapped.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    return wrapped


def qlora_problem() -> str | None:
    """Why QLoRA cannot run on this machine (no CUDA device, bitsandbytes missing), else None."""
    if not torch.cuda.is_available():
        return "qlora needs a CUDA GPU (bitsandbytes' 4-bit NF4 kernels) and none is visible; use --train.finetune lora"
    if importlib.util.find_spec("bitsandbytes") is None:
        return "qlora needs bitsandbytes: pip install 'bl-train[qlora]'"
    return None


def quantization_config(compute_dtype: torch.dtype) -> BitsAndBytesConfig:
    """The QLoRA paper's storage: NF4 with double quantization; matmuls in `compute_dtype`."""
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=_NOT_QUANTIZED,
    )


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of the model as trained: a module trained in full counts once (not also
    peft's frozen original beside it), a 4-bit weight counts its unpacked elements (two per byte)."""
    trainable = total = 0
    for name, p in model.named_parameters():
        if ".original_module." in name:
            continue
        n = p.numel() * (2 * p.element_size() if type(p).__name__ == "Params4bit" else 1)
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


def save_adapter(model: peft.PeftModel, out: Path, is_main_process: bool) -> None:
    """The adapter weights (and modules_to_save) + adapter_config.json in `out`. Every rank calls it: under
    ZeRO-3 the trainable tensors are gathered first (a no-op otherwise; they are a small fraction)."""
    import deepspeed

    trainable = [p for p in model.parameters() if p.requires_grad]
    with deepspeed.zero.GatheredParameters(trainable, modifier_rank=None):
        if is_main_process:
            model.save_pretrained(out, save_embedding_layers=False)


def merge_into_base(adapter_dir: str | Path, out: Path) -> None:
    """Base + adapter merged into plain weights, saved in transformers' layout (with the model's code)."""
    load_merged_adapter(adapter_dir).save_pretrained(out)
