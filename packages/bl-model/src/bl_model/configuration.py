"""Typed configuration for Behavior-LLaVA (LLaMA-VID architecture).

`BehaviorLlavaConfig` is a composite `PretrainedConfig` with three sub-configs: a vision tower
(`EvaVisionConfig` or transformers' `CLIPVisionConfig`), an InstructBLIP Q-Former, and a LLaMA LLM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from transformers import (
    AutoConfig,
    CLIPVisionConfig,
    InstructBlipQFormerConfig,
    LlamaConfig,
    PretrainedConfig,
)

from .remote_code import AUTO_MAP, save_code

IGNORE_INDEX = -100
"""The label of tokens without loss (`torch.nn.functional.cross_entropy`'s default `ignore_index`)."""


class EvaVisionConfig(PretrainedConfig):
    """EVA ViT-G/14 as LAVIS builds it for BLIP-2 / InstructBLIP (no final norm, no rel-pos bias).

    `num_hidden_layers` is the depth *built*: LAVIS builds 39 of the checkpoint's 40 blocks.
    """

    model_type = "bl_eva_vit"

    def __init__(
        self,
        image_size: int = 224,
        patch_size: int = 14,
        num_channels: int = 3,
        hidden_size: int = 1408,
        num_hidden_layers: int = 39,
        num_attention_heads: int = 16,
        mlp_ratio: float = 4.3637,
        layer_norm_eps: float = 1e-6,
        qkv_bias: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.mlp_ratio = mlp_ratio
        self.layer_norm_eps = layer_norm_eps
        self.qkv_bias = qkv_bias

    @property
    def intermediate_size(self) -> int:
        return int(self.hidden_size * self.mlp_ratio)  # 1408 * 4.3637 -> 6144, as LAVIS computes it

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass(frozen=True)
class CompressMode:
    """How a frame's N patch features become "content" tokens: `mean` -> 1, `grid:k` -> k*k, `none` -> N."""

    kind: Literal["mean", "grid", "none"]
    grid: int = 0

    @classmethod
    def parse(cls, spec: str) -> CompressMode:
        if spec in ("mean", "none"):
            return cls(spec)
        if spec.startswith("grid:") and spec[5:].isdigit() and int(spec[5:]) > 1:
            return cls("grid", int(spec[5:]))
        raise ValueError(f"compress mode must be 'mean', 'none' or 'grid:k' with k > 1, got {spec!r}")

    def num_tokens(self, num_patches: int) -> int:
        """Content tokens per frame. `grid:k` pools an s x s patch grid with kernel = stride = s // k, as
        LLaMA-VID does, so it gives (s // (s // k))**2 tokens: k*k when k divides s, more otherwise."""
        side = round(num_patches**0.5)
        if self.kind == "mean":
            return 1
        if self.kind == "none":
            return num_patches
        if side * side != num_patches or self.grid > side:
            raise ValueError(
                f"grid:{self.grid} needs a square patch grid at least {self.grid} wide, got N={num_patches}"
            )
        return (side // self.grid_stride(side)) ** 2

    def grid_stride(self, side: int) -> int:
        """Pooling kernel and stride of `grid:k` on an s x s patch grid: s // k (floored, as LLaMA-VID)."""
        return side // self.grid


@dataclass(frozen=True)
class FreezePolicy:
    """Which parts train. Defaults are the released LLaMA-VID / Behavior-LLaVA fine-tuning recipe."""

    vision_tower: bool = True
    qformer: bool = True  # Q-Former, its learned queries and the LayerNorm on its visual input
    attention_projectors: bool = True  # vlm_att_{projector, key_projector, val_projector}
    mm_projector: bool = False
    language_model: bool = False


def _sub_config(value, default: PretrainedConfig, name: str) -> PretrainedConfig:
    """A sub-config from a config or a dict; our own model types resolve to this module's classes (not
    through AutoConfig, whose mapping a second copy of this code, loaded as remote code, may re-register)."""
    if value is None:
        return default
    if isinstance(value, PretrainedConfig):
        return value
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(f"{name} dict needs a 'model_type' key, got keys {sorted(value)}")
        value = dict(value)
        model_type = value.pop("model_type")
        if model_type == EvaVisionConfig.model_type:
            return EvaVisionConfig(**value)
        return AutoConfig.for_model(model_type, **value)
    raise TypeError(f"{name} must be a PretrainedConfig or a dict, got {type(value).__name__}")


class BehaviorLlavaConfig(PretrainedConfig):
    """LLaMA-VID: vision tower -> text-guided Q-Former context token + compressed content token(s) -> LLaMA.

    Args:
        vision_config: `EvaVisionConfig` (default) or `CLIPVisionConfig`.
        qformer_config: `InstructBlipQFormerConfig`; `encoder_hidden_size` must equal the vision width.
        text_config: `LlamaConfig` of the LLM (Vicuna v1.5 shapes for the real models).
        num_query: learned Q-Former queries (32).
        video_compress / image_compress: `CompressMode` spec for video frames / still images.
        vision_select_layer: index into the tower's hidden states (embeddings, block 1, …, block D);
            -1 with LAVIS' 39-block EVA is the checkpoint's penultimate layer.
        qformer_max_length: instruction tokens kept for the Q-Former (left-truncated).
        media_token_id: placeholder id the processor writes; may lie outside the LLM vocabulary.
        freeze_*: the `FreezePolicy` fields.
    """

    model_type = "behavior_llava"
    sub_configs = {"vision_config": AutoConfig, "qformer_config": AutoConfig, "text_config": AutoConfig}

    def __init__(
        self,
        vision_config: PretrainedConfig | dict | None = None,
        qformer_config: PretrainedConfig | dict | None = None,
        text_config: PretrainedConfig | dict | None = None,
        num_query: int = 32,
        video_compress: str = "mean",
        image_compress: str = "mean",
        vision_select_layer: int = -1,
        qformer_max_length: int = 256,
        media_token_id: int = 32000,
        freeze_vision_tower: bool = True,
        freeze_qformer: bool = True,
        freeze_attention_projectors: bool = True,
        freeze_mm_projector: bool = False,
        freeze_language_model: bool = False,
        **kwargs,
    ):
        self.vision_config = _sub_config(vision_config, EvaVisionConfig(), "vision_config")
        self.qformer_config = _sub_config(
            qformer_config,
            InstructBlipQFormerConfig(vocab_size=30523, encoder_hidden_size=1408),
            "qformer_config",
        )
        self.text_config = _sub_config(text_config, LlamaConfig(), "text_config")
        self.num_query = num_query
        self.video_compress = video_compress
        self.image_compress = image_compress
        self.vision_select_layer = vision_select_layer
        self.qformer_max_length = qformer_max_length
        self.media_token_id = media_token_id
        self.freeze_vision_tower = freeze_vision_tower
        self.freeze_qformer = freeze_qformer
        self.freeze_attention_projectors = freeze_attention_projectors
        self.freeze_mm_projector = freeze_mm_projector
        self.freeze_language_model = freeze_language_model
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        CompressMode.parse(self.video_compress)
        CompressMode.parse(self.image_compress)
        if not isinstance(self.vision_config, EvaVisionConfig | CLIPVisionConfig):
            raise TypeError(
                f"vision_config must be EvaVisionConfig or CLIPVisionConfig, got {type(self.vision_config).__name__}"
            )
        if self.qformer_config.encoder_hidden_size != self.vision_config.hidden_size:
            raise ValueError(
                f"qformer_config.encoder_hidden_size ({self.qformer_config.encoder_hidden_size}) must equal the "
                f"vision width ({self.vision_config.hidden_size})"
            )
        if self.num_query < 1 or self.qformer_max_length < 1:
            raise ValueError("num_query and qformer_max_length must be positive")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """transformers' loader; a config of another model type (e.g. the LLM's own, which `base_model` saves) is
        an error: read as this config it would silently give the default 7B sub-models."""
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **kwargs)
        found = config_dict.get("model_type", cls.model_type)
        if found != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path}: config.json is a {found!r} config, not {cls.model_type!r}; "
                f"to load its weights into the LLM, pass config=BehaviorLlavaConfig(text_config=..., ...)"
            )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs) -> None:
        """transformers' writer, plus this module's source and an `auto_map` entry for `AutoConfig`."""
        self.auto_map = {**(getattr(self, "auto_map", None) or {}), "AutoConfig": AUTO_MAP["AutoConfig"]}
        super().save_pretrained(save_directory, *args, **kwargs)
        save_code(save_directory, type(self))

    @property
    def vision_hidden_size(self) -> int:
        return self.vision_config.hidden_size

    @property
    def num_patches(self) -> int:
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2

    @property
    def freeze(self) -> FreezePolicy:
        return FreezePolicy(
            vision_tower=self.freeze_vision_tower,
            qformer=self.freeze_qformer,
            attention_projectors=self.freeze_attention_projectors,
            mm_projector=self.freeze_mm_projector,
            language_model=self.freeze_language_model,
        )

    def media_tokens(self, num_frames: int, is_video: bool) -> int:
        """LLM tokens one media item expands to: T*(1+content) for a video, 1+content for an image."""
        mode = CompressMode.parse(self.video_compress if is_video else self.image_compress)
        per_frame = 1 + mode.num_tokens(self.num_patches)
        return num_frames * per_frame if is_video else per_frame


AutoConfig.register(EvaVisionConfig.model_type, EvaVisionConfig)
AutoConfig.register(BehaviorLlavaConfig.model_type, BehaviorLlavaConfig)
