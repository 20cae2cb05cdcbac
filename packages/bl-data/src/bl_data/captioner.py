"""Per-scene captions and tags from a local transformers VLM (e.g. LLaVA-1.6), for `pipeline.prepare`.

    captioner = VlmCaptioner("models/llava-v1.6-vicuna-13b-hf")
    captioner([keyframe])  # [("A man rides a bike down a hill.", ["man", "bike", "hill", "riding"])]

Each keyframe gets two greedy generations: a one-sentence caption and a comma-separated tag list, prompted through
the processor's chat template when it has one, else LLaVA-1.6 vicuna's ``USER: <image>\\n... ASSISTANT:``.
torch and transformers are imported only when a `VlmCaptioner` is built.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

CAPTION_QUESTION = "Describe this image in one sentence."
TAGS_QUESTION = (
    "List 5 to 10 single-word tags for the objects, actions and setting in this image, comma-separated."
)
MAX_TAGS = 10

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_LEAD_IN = re.compile(
    r"^(?:this|the) (?:image|picture|photo|photograph|frame|scene) (?:shows|depicts|features|captures|displays)\s+",
    re.IGNORECASE,
)
_TAG_SPLIT = re.compile(r"[,;\n]")
_TAG_NOISE = re.compile(r"^(?:[-*•#\s]+|\d+[.)]\s*)+|[.!?]+$")
_TAG_FILLER = re.compile(r"^(?:and|or|a|an|the)\s+")
_TAG_OK = re.compile(r"[^\W\d_]+(?:[ -][^\W\d_]+){0,2}")  # letters only: a word or a phrase of up to 3 words


def first_sentence(text: str) -> str:
    """The first sentence of a generated caption, whitespace collapsed.

    A "The image shows" lead-in is dropped: the caption becomes the object of verbalize's "The scene shows …".
    """
    return _LEAD_IN.sub("", _SENTENCE_END.split(" ".join(text.split()), maxsplit=1)[0])


def parse_tags(text: str, max_tags: int = MAX_TAGS) -> list[str]:
    """Tags from a generated list: split on commas/newlines, lower-cased, deduplicated, at most `max_tags`.

    List bullets, numbering, a ``Tags:`` label, a leading "and"/article and final punctuation are removed;
    anything but alphabetic words or short phrases (up to three words) is dropped.
    """
    tags: dict[str, None] = {}
    for item in _TAG_SPLIT.split(text.lower()):
        tag = item.rsplit(":", 1)[-1]
        tag = _TAG_FILLER.sub("", _TAG_NOISE.sub("", tag.strip()).strip())
        tag = " ".join(tag.split())
        if _TAG_OK.fullmatch(tag):
            tags.setdefault(tag)
    return list(tags)[:max_tags]


def _image(keyframe: np.ndarray) -> Image.Image:
    if keyframe.ndim != 3 or keyframe.shape[2] != 3 or keyframe.dtype != np.uint8:
        raise ValueError(f"a keyframe must be (H, W, 3) uint8 RGB, got {keyframe.shape} {keyframe.dtype}")
    return Image.fromarray(keyframe)


class VlmCaptioner:
    """A `bl_data.pipeline.Captioner` backed by a local image-text-to-text checkpoint (e.g. LLaVA-1.6).

    `device` defaults to CUDA when available, else CPU; `dtype` to bf16 (fp16 where bf16 is unsupported) on
    CUDA and fp32 on CPU. `batch_size` keyframes go through one `generate` call (two prompts each).
    """

    name: str

    def __init__(
        self,
        path: str | Path,
        *,
        batch_size: int = 8,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_new_tokens: int = 64,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"VLM checkpoint folder not found: {path}")
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no config.json (not a transformers checkpoint)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        config = AutoConfig.from_pretrained(path)
        if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
            raise ValueError(
                f"{path}: model_type {config.model_type!r} is not an image-text-to-text model "
                "(AutoModelForImageTextToText cannot load it)"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            cuda = self.device.type == "cuda"
            dtype = (
                (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                if cuda
                else torch.float32
            )
        self.processor: Any = AutoProcessor.from_pretrained(path)
        tokenizer = self.processor.tokenizer
        tokenizer.padding_side = "left"  # generation continues every row from its last (rightmost) token
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model: Any = AutoModelForImageTextToText.from_pretrained(path, config=config, dtype=dtype)
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.name = f"{path.resolve().name} ({config.model_type})"
        self.prompts = (self._prompt(CAPTION_QUESTION), self._prompt(TAGS_QUESTION))

    def _prompt(self, question: str) -> str:
        if getattr(self.processor, "chat_template", None):
            message = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            return self.processor.apply_chat_template([message], add_generation_prompt=True, tokenize=False)
        return f"USER: {getattr(self.processor, 'image_token', '<image>')}\n{question} ASSISTANT:"

    def generate(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[str]:
        """Greedy answers to `prompts[i]` about `images[i]`, in one left-padded batch; only the new text."""
        import torch

        inputs = self.processor(images=list(images), text=list(prompts), padding=True, return_tensors="pt")
        inputs = inputs.to(self.device, dtype=self.model.dtype)  # casts only the floating tensors (pixels)
        with torch.inference_mode():
            out = self.model.generate(
                **inputs,
                do_sample=False,
                max_new_tokens=self.max_new_tokens,
                pad_token_id=self.processor.tokenizer.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]

    def __call__(self, keyframes: Sequence[np.ndarray]) -> list[tuple[str, list[str]]]:
        """(caption, tags) per keyframe (H, W, 3) uint8 RGB."""
        results: list[tuple[str, list[str]]] = []
        for start in range(0, len(keyframes), self.batch_size):
            images = [_image(kf) for kf in keyframes[start : start + self.batch_size]]
            answers = self.generate([im for im in images for _ in self.prompts], self.prompts * len(images))
            results.extend(
                (first_sentence(caption), parse_tags(tags))
                for caption, tags in zip(answers[::2], answers[1::2], strict=True)
            )
        return results
