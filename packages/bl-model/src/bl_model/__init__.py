"""bl-model: the LLaMA-VID architecture that Behavior-LLaVA fine-tunes, its processor and converters."""

import contextlib

from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoProcessor

from .builders import llama_vid_7b, llama_vid_13b, tiny
from .configuration import IGNORE_INDEX, BehaviorLlavaConfig, CompressMode, EvaVisionConfig, FreezePolicy
from .image_processing import BehaviorLlavaImageProcessor
from .modeling import BehaviorLlavaForCausalLM, MediaBatch
from .ops import compress_video_tokens
from .ops.varlen_attention import varlen_attention
from .packing import enable_packed_attention, pack_sequences
from .processing import BehaviorLlavaProcessor, Media

AutoModelForCausalLM.register(BehaviorLlavaConfig, BehaviorLlavaForCausalLM)
# transformers 5.17's AutoImageProcessor needs torchvision; without it AutoProcessor still loads ours
with contextlib.suppress(ImportError):
    AutoImageProcessor.register(
        BehaviorLlavaConfig,
        image_processor_classes=dict.fromkeys(("pil", "torchvision"), BehaviorLlavaImageProcessor),
    )
AutoProcessor.register(BehaviorLlavaConfig, BehaviorLlavaProcessor)

__version__ = "0.1.0"

__all__ = [
    "IGNORE_INDEX",
    "BehaviorLlavaConfig",
    "BehaviorLlavaForCausalLM",
    "BehaviorLlavaImageProcessor",
    "BehaviorLlavaProcessor",
    "CompressMode",
    "EvaVisionConfig",
    "FreezePolicy",
    "Media",
    "MediaBatch",
    "compress_video_tokens",
    "enable_packed_attention",
    "llama_vid_7b",
    "llama_vid_13b",
    "pack_sequences",
    "tiny",
    "varlen_attention",
]
