"""`BehaviorLlavaProcessor`: a transformers processor that turns LLaMA-VID conversations + media into model tensors.

A thin façade in the shape of transformers' processors: it holds the LLaMA tokenizer, the Q-Former BERT tokenizer
and the image processor, and delegates the prompt / label algorithm to `llamavid_prompt` (the tokenization to
`tokenization`), pixels to `BehaviorLlavaImageProcessor` and batching to `batching`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from .batching import PaddingSide, pad_batch
from .configuration import BehaviorLlavaConfig
from .conversation import VICUNA_V1_CHAT_TEMPLATE, get_template
from .image_processing import BehaviorLlavaImageProcessor, Frames, as_frame_list
from .llamavid_prompt import PREPROCESS_MODES, EncodedPrompt, LlamaVidPrompt, Preprocess, Supervise
from .remote_code import PROCESSOR_AUTO_MAP, save_code
from .tokenization import add_media_token

QFORMER_BOS = "[DEC]"
PROCESSOR_CONFIG_NAME = "processor_config.json"


@dataclass(frozen=True, eq=False)  # frames may be an array: no element-wise ==
class Media:
    """One image or video of a sample.

    `frames`: a (T, H, W, 3) uint8 RGB array or a list of T PIL images / (H, W, 3) uint8 arrays; an image
    (`is_video=False`) has exactly one frame (a single PIL image or (H, W, 3) array is accepted too).
    """

    frames: Frames
    is_video: bool

    @property
    def num_frames(self) -> int:
        return len(as_frame_list(self.frames))

    @classmethod
    def for_placeholder(cls, prompt: str, frames: np.ndarray) -> Media:
        """A stored sample's frames (T, H, W, 3) as the media of its prompt's one placeholder: a video for
        `<video>`, else the first frame as an image."""
        is_video = "<video>" in prompt
        return cls(frames if is_video else frames[0], is_video=is_video)


class BehaviorLlavaProcessor(ProcessorMixin):
    """Turns one LLaMA-VID sample (or a generation prompt) and its media into model inputs: a transformers
    processor (LLaMA tokenizer + Q-Former BERT tokenizer + `BehaviorLlavaImageProcessor`), saved with
    `save_pretrained` and loaded with `from_pretrained` / `AutoProcessor.from_pretrained` without the model config.

    Build one for a model with `from_config(tokenizer, qformer_tokenizer, config, ...)`; `check_config(config)`
    says whether a loaded processor matches a model.

    Args:
        image_processor: frames -> pixel values (its `size` is the vision tower's image size).
        tokenizer: fast LLaMA tokenizer. `<media>` is added to it as a special token if missing (the
            tokenizer is modified in place); its id must equal `media_token_id`. The LLM embedding
            table is not resized: the model masks placeholder ids before its embedding lookup.
        qformer_tokenizer: BERT (bert-base-uncased) tokenizer. `[DEC]` is added as its bos token, as
            LLaMA-VID does (vocab 30523), and its truncation side is set to "left" (in place).
        media_token_id: the model's `media_token_id`.
        image_tokens / video_frame_tokens: LLM tokens a still image / each video frame expands to (the model
            config's `media_tokens(1, False)` / `media_tokens(1, True)`).
        qformer_max_length: the model's `qformer_max_length` (Q-Former prompts are left-truncated to it).
        template: conversation template name (`vicuna_v1` or `plain`).
        max_length: largest LLM sequence after media expansion; longer samples raise, never truncate.
        max_frames: most frames one media item may have; more raise, frames are never dropped.
        preprocess: how training samples are read: `"as_written"` or `"llamavid"` (`llamavid_prompt`'s docstring).
        chat_template: Jinja chat template (default: `VICUNA_V1_CHAT_TEMPLATE` for `vicuna_v1`).
    """

    def __init__(
        self,
        image_processor: BehaviorLlavaImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        qformer_tokenizer: PreTrainedTokenizerBase,
        media_token_id: int = 32000,
        image_tokens: int = 2,
        video_frame_tokens: int = 2,
        qformer_max_length: int = 256,
        template: str = "vicuna_v1",
        max_length: int = 2048,
        max_frames: int = 300,
        preprocess: Preprocess = "as_written",
        chat_template: str | None = None,
    ):
        if preprocess not in PREPROCESS_MODES:
            raise ValueError(f"unknown preprocess {preprocess!r}; valid: {list(PREPROCESS_MODES)}")
        self.conversation = get_template(template)
        add_media_token(tokenizer, media_token_id)
        if qformer_tokenizer.bos_token != QFORMER_BOS:
            qformer_tokenizer.add_special_tokens({"bos_token": QFORMER_BOS})
        qformer_tokenizer.truncation_side = "left"
        self.media_token_id = media_token_id
        self.image_tokens = image_tokens
        self.video_frame_tokens = video_frame_tokens
        self.qformer_max_length = qformer_max_length
        self.template = template
        self.max_length = max_length
        self.max_frames = max_frames
        self.preprocess = preprocess
        if chat_template is None and template == "vicuna_v1":
            chat_template = VICUNA_V1_CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, qformer_tokenizer, chat_template=chat_template)

    @classmethod
    def from_config(
        cls,
        tokenizer: PreTrainedTokenizerBase,
        qformer_tokenizer: PreTrainedTokenizerBase,
        config: BehaviorLlavaConfig,
        *,
        pad_to_square: bool = True,
        **settings,
    ) -> BehaviorLlavaProcessor:
        """The processor of a model config: its media token counts, `media_token_id`, `qformer_max_length` and
        image size; `settings`: template, max_length, max_frames, preprocess."""
        image_processor = BehaviorLlavaImageProcessor(
            size=config.vision_config.image_size, pad_to_square=pad_to_square
        )
        return cls(image_processor, tokenizer, qformer_tokenizer, **model_settings(config), **settings)

    def check_config(self, config: BehaviorLlavaConfig) -> None:
        """ValueError naming each setting where this processor and the model config disagree."""
        settings = model_settings(config)
        expected = settings | {"image_size": config.vision_config.image_size}
        actual = {key: getattr(self, key) for key in settings} | {"image_size": self.image_processor.size}
        wrong = [f"{k}: processor {actual[k]}, model {v}" for k, v in expected.items() if actual[k] != v]
        if wrong:
            raise ValueError(
                "the processor does not match the model config (" + "; ".join(wrong) + "); build it with "
                "BehaviorLlavaProcessor.from_config(tokenizer, qformer_tokenizer, model.config) and save it again"
            )

    @property
    def prompt(self) -> LlamaVidPrompt:
        """The LLaMA-VID prompt / label algorithm with this processor's tokenizers and settings."""
        return LlamaVidPrompt(
            self.tokenizer,
            self.qformer_tokenizer,
            self.conversation,
            media_token_id=self.media_token_id,
            image_tokens=self.image_tokens,
            video_frame_tokens=self.video_frame_tokens,
            qformer_max_length=self.qformer_max_length,
            max_length=self.max_length,
            max_frames=self.max_frames,
            preprocess=self.preprocess,
        )

    def media_tokens(self, num_frames: int, is_video: bool) -> int:
        """LLM tokens one media item expands to: T * video_frame_tokens for a video, image_tokens for an image."""
        return self.prompt.media_tokens(num_frames, is_video)

    @property
    def pad_token_id(self) -> int:
        """LLM padding id: the tokenizer's pad, else its unk, else 0."""
        for token_id in (self.tokenizer.pad_token_id, self.tokenizer.unk_token_id):
            if token_id is not None:
                return token_id
        return 0

    def __call__(
        self,
        sample: Mapping,
        media: Sequence[Media],
        supervise: Supervise | None = None,
        seed: int | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode one training sample.

        Args:
            sample: `{"id": str, "conversations": [{"from": "human" | "gpt", "value": str}, ...]}` with an
                optional `"system"` text; human values hold `<image>` / `<video>` placeholders.
            media: the sample's media, consumed in placeholder order (`"llamavid"`: at most one item).
            supervise: label only these `[start, end)` character spans of each assistant message (e.g. the
                comments of a behaviour block, for their perplexity); default: every answer and its "</s>".
            seed: draws the `"llamavid"` sides of the media in later turns; default `sample_seed(id)`.

        Returns:
            input_ids [L], labels [L] (-100 outside assistant text), pixel_values [S, 3, 224, 224]
            (S = frames of all media; the side is the image processor's `size`), media_frame_counts [M],
            media_is_video [M], query_input_ids [Q, Lq], query_attention_mask [Q, Lq], query_media_index [Q]
            (Q = placeholders, in text order).
        """
        return self._model_inputs(self.prompt.encode_sample(sample, media, supervise, seed), media)

    def prompt_for_generation(
        self, text: str | Sequence[str], media: Sequence[Media], system: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode a prompt ending in an open assistant turn: one human turn `text` (with placeholders), or
        alternating human/assistant turns that end with a human one (e.g. k-shot examples, then the query).

        Returns the tensors of `__call__` without `labels`.
        """
        turns = [text] if isinstance(text, str) else list(text)
        if len(turns) % 2 == 0:
            raise ValueError(
                f"a generation prompt needs alternating turns ending with a human one, got {len(turns)}"
            )
        encoded = self.prompt.encode("<generation prompt>", turns, media, system, with_labels=False)
        return self._model_inputs(encoded, media)

    def _model_inputs(self, encoded: EncodedPrompt, media: Sequence[Media]) -> dict[str, torch.Tensor]:
        """The encoded text and the media's pixels as `__call__`'s tensors."""
        out = {"input_ids": encoded.input_ids}  # (L,)
        if encoded.labels is not None:
            out["labels"] = encoded.labels  # (L,)
        size = self.image_processor.size  # 224 for the released models
        if media:
            pixel_values = torch.cat(
                [self.image_processor(item.frames, is_video=item.is_video)["pixel_values"] for item in media]
            )  # (S, 3, size, size)
        else:
            pixel_values = torch.empty(0, 3, size, size)
        out["pixel_values"] = pixel_values
        frame_counts = [item.num_frames for item in media]
        out["media_frame_counts"] = torch.tensor(frame_counts, dtype=torch.long)  # (M,)
        out["media_is_video"] = torch.tensor([item.is_video for item in media], dtype=torch.bool)  # (M,)
        out["query_input_ids"] = encoded.query_input_ids  # (Q, Lq)
        out["query_attention_mask"] = encoded.query_attention_mask  # (Q, Lq)
        out["query_media_index"] = encoded.query_media_index  # (Q,) media of each placeholder
        return out

    def collate(
        self, outputs: Sequence[Mapping[str, torch.Tensor]], padding_side: PaddingSide = "right"
    ) -> dict[str, torch.Tensor]:
        """Batch per-sample outputs of `__call__` (or `prompt_for_generation`); `padding_side="left"` for batched
        generation. Returns `batching.pad_batch`'s tensors: input_ids / attention_mask / labels [B, L],
        pixel_values [sum S, 3, 224, 224], media_frame_counts / media_is_video [sum M], query_input_ids /
        query_attention_mask [sum Q, max Lq], query_media_index [sum Q] indexing the batch's media."""
        query_pad = self.qformer_tokenizer.pad_token_id or 0
        return pad_batch(outputs, self.pad_token_id, query_pad, padding_side)

    def apply_chat_template(self, conversation, *args, tokenize: bool = False, **kwargs) -> str:
        """The conversation's prompt text (transformers' `apply_chat_template` with `tokenize=False`); encode it with
        `prompt_for_generation` / `__call__`, which take the turns and media as this processor's inputs."""
        if tokenize:
            raise ValueError(
                f"{type(self).__name__}.apply_chat_template renders text only (tokenize=False); encode a prompt with "
                "prompt_for_generation(turns, media) and a training sample with processor(sample, media)"
            )
        return super().apply_chat_template(conversation, *args, tokenize=False, **kwargs)

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> list[str]:
        """transformers' layout (tokenizer files at the root, `qformer_tokenizer/`, `processor_config.json` with the
        image processor and settings, `chat_template.jinja`), plus the source for `AutoProcessor`'s remote code."""
        directory = Path(save_directory)
        self.auto_map = {"AutoProcessor": PROCESSOR_AUTO_MAP["AutoProcessor"]}
        self.image_processor.auto_map = {"AutoImageProcessor": PROCESSOR_AUTO_MAP["AutoImageProcessor"]}
        written = super().save_pretrained(directory, **kwargs)
        if hasattr(self.tokenizer, "legacy"):  # transformers 5 leaves it out, and reloads legacy=False
            config_path = directory / "tokenizer_config.json"
            saved = json.loads(config_path.read_text())
            config_path.write_text(json.dumps(saved | {"legacy": self.tokenizer.legacy}, indent=2) + "\n")
        save_code(directory, type(self))
        return written

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> BehaviorLlavaProcessor:
        """Load a processor written by `save_pretrained`; `SETTINGS` given as keywords (e.g. max_length) replace the
        saved ones; other keywords go to transformers' loader."""
        reject_old_layout(Path(pretrained_model_name_or_path))
        overrides = {key: kwargs.pop(key) for key in SETTINGS if key in kwargs}
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if not overrides:
            return processor
        settings = {key: getattr(processor, key) for key in SETTINGS} | overrides
        parts = (processor.image_processor, processor.tokenizer, processor.qformer_tokenizer)
        # None: the new template's own
        chat_template = None if "template" in overrides else processor.chat_template
        return cls(*parts, **settings, chat_template=chat_template)


SETTINGS = (
    "media_token_id",
    "image_tokens",
    "video_frame_tokens",
    "qformer_max_length",
    "template",
    "max_length",
    "max_frames",
    "preprocess",
)
"""The processor's own settings (`__init__`'s keywords but the chat template), saved in `processor_config.json`."""


def model_settings(config: BehaviorLlavaConfig) -> dict[str, int]:
    """The processor settings a model config fixes."""
    return {
        "media_token_id": config.media_token_id,
        "image_tokens": config.media_tokens(1, is_video=False),
        "video_frame_tokens": config.media_tokens(1, is_video=True),
        "qformer_max_length": config.qformer_max_length,
    }


def reject_old_layout(directory: Path) -> None:
    """FileNotFoundError / ValueError saying how to re-save a processor in bl-model's pre-ProcessorMixin layout
    (`tokenizer/`, `qformer_tokenizer/`, settings-only `processor_config.json`, in `<model>/processor`)."""
    if not directory.is_dir() or (directory / "tokenizer_config.json").is_file():
        return  # a hub id, a missing path (transformers' own error) or the current layout
    old = directory / "processor" if (directory / "processor" / "tokenizer").is_dir() else directory
    if not (old / "tokenizer").is_dir():
        return
    raise ValueError(
        f"{old} holds a processor saved by an older bl-model (tokenizer/ + qformer_tokenizer/ + "
        f"{PROCESSOR_CONFIG_NAME} with settings only); re-save it in transformers' layout, beside the model:\n"
        "  import json; from transformers import AutoTokenizer; from bl_model import BehaviorLlavaConfig, "
        "BehaviorLlavaProcessor\n"
        f"  old = {str(old)!r}; settings = json.load(open(old + '/{PROCESSOR_CONFIG_NAME}'))\n"
        "  BehaviorLlavaProcessor.from_config(AutoTokenizer.from_pretrained(old + '/tokenizer'), "
        "AutoTokenizer.from_pretrained(old + '/qformer_tokenizer'), BehaviorLlavaConfig.from_pretrained(MODEL), "
        "**settings).save_pretrained(MODEL)"
    )
