"""Named model configs: `tiny()` for tests and demos, and the released LLaMA-VID 7B / 13B shapes."""

from __future__ import annotations

from transformers import InstructBlipQFormerConfig, LlamaConfig

from .configuration import BehaviorLlavaConfig, EvaVisionConfig


def _qformer(
    hidden: int, layers: int, heads: int, intermediate: int, vision_width: int
) -> InstructBlipQFormerConfig:
    # bert-base-uncased vocab + "[DEC]" (LLaMA-VID's resize_token_embeddings) = 30523
    return InstructBlipQFormerConfig(
        vocab_size=30523,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=512,
        layer_norm_eps=1e-12,
        cross_attention_frequency=2,
        encoder_hidden_size=vision_width,
    )


def _vicuna(hidden: int, layers: int, heads: int, intermediate: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=32000,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )


def llama_vid_7b(**overrides) -> BehaviorLlavaConfig:
    """`llama-vid-7b-full-224-video-fps-1`: EVA ViT-G (39 blocks), BERT-base Q-Former, Vicuna-7B v1.5."""
    return BehaviorLlavaConfig(
        vision_config=EvaVisionConfig(),
        qformer_config=_qformer(768, 12, 12, 3072, 1408),
        text_config=_vicuna(4096, 32, 32, 11008),
        **overrides,
    )


def llama_vid_13b(**overrides) -> BehaviorLlavaConfig:
    """`llama-vid-13b-full-224-video-fps-1`, the model Behavior-LLaVA fine-tunes (Vicuna-13B v1.5)."""
    return BehaviorLlavaConfig(
        vision_config=EvaVisionConfig(),
        qformer_config=_qformer(768, 12, 12, 3072, 1408),
        text_config=_vicuna(5120, 40, 40, 13824),
        **overrides,
    )


def tiny(**overrides) -> BehaviorLlavaConfig:
    """A few-MB model with the real key layout, 224 px input and the real vocabularies (32000 / 30523)."""
    vision = EvaVisionConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2.0)
    text = _vicuna(64, 2, 4, 128)
    text.num_key_value_heads = 2
    return BehaviorLlavaConfig(
        vision_config=vision,
        qformer_config=_qformer(32, 2, 2, 64, vision.hidden_size),
        text_config=text,
        num_query=4,
        **overrides,
    )
