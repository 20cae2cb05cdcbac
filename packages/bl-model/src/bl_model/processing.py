"""`BehaviorLlavaProcessor`: LLaMA-VID conversations + media -> model tensors, and the batch collator.

Each `<image>` / `<video>` placeholder of a human turn is written as one added `<media>` token. As LLaVA's
`tokenizer_image_token`, the text between placeholders is tokenized piece by piece (each piece starts a new
SentencePiece text, so it gets its "▁" prefix whatever the tokenizer's `legacy` setting) and the pieces are
joined with the `<media>` id, after one bos. Each piece is tokenized as transformers 4.31's slow
`LlamaTokenizer` (what LLaMA-VID ran) did, after `</s>` and other added tokens too (`_encode_text`). Every
`<media>` id is then expanded into exactly `media_tokens(T, is_video)` copies (the model config's counts, saved
with the processor), which the model fills with its visual tokens. Labels come from the pieces' character
offsets: a token is supervised iff it covers a character of an assistant message, its closing separator or the
space before it. Nothing is truncated: over-long samples and too many frames are errors.

Two ways to read a training sample (`preprocess`):
- `"as_written"`: media are shown where placeholders are written, one media item per placeholder; each
  placeholder's Q-Former prompt is its turn's text without placeholders.
- `"llamavid"`: LLaMA-VID's training preprocessing (`preprocess_multimodal` + `preprocess_imgsp_v1`). A
  sample has at most one media item; the human turn that writes its placeholder gets it moved to the front
  (`"<video>\ntext"`), and every later human turn gets it too, in front or at the end (`"text\n<video>"`)
  at random, drawn from the sample's seed. Each of these turns has its own Q-Former prompt: the turn's text
  without placeholders and with its newlines removed (`"clip\nthen"` -> `"clipthen"`), so every answer is
  conditioned on context tokens computed from its own question.
Generation prompts are always read as written (LLaMA-VID's evaluation writes `"<image>\nquestion"`).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import AddedToken, pre_tokenizers
from torch.nn.utils.rnn import pad_sequence
from transformers import PreTrainedTokenizerBase, ProcessorMixin

from .configuration import IGNORE_INDEX, BehaviorLlavaConfig
from .conversation import MEDIA_TOKEN, VICUNA_V1_CHAT_TEMPLATE, get_template
from .image_processing import BehaviorLlavaImageProcessor, Frames, as_frame_list
from .remote_code import PROCESSOR_AUTO_MAP, save_code

PLACEHOLDER_IS_VIDEO = {"<image>": False, "<video>": True}
QFORMER_BOS = "[DEC]"
PROCESSOR_CONFIG_NAME = "processor_config.json"
_PLACEHOLDER = re.compile("|".join(map(re.escape, PLACEHOLDER_IS_VIDEO)))
_ROLES = ("human", "gpt")
Preprocess = Literal["as_written", "llamavid"]
PREPROCESS_MODES: tuple[Preprocess, ...] = ("as_written", "llamavid")


Supervise = Callable[[str], Sequence[tuple[int, int]]]


class SampleBudgetError(ValueError):
    """A well-formed sample over the frame cap or `max_length`: training skips and counts it."""


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


def sample_seed(sample_id: str) -> int:
    """A sample's default seed: stable across runs and processes (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")


def llamavid_turns(messages: Sequence[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """LLaMA-VID's training turns: (messages with the media shown in every human turn from the first that
    writes a placeholder on, the Q-Former prompt of each human turn that shows it).

    A turn that writes placeholders keeps one, moved to the front (`"<video>\ntext"`, stripped); a later turn
    gets it in front or at the end (`"text\n<video>"`), `rng.randint(0, 1) == 0` choosing the front.
    """
    rewritten, prompts = [], []
    shown: str | None = None  # the placeholder, once a human turn has written it
    for turn, text in enumerate(messages):
        if turn % 2 == 0 and (found := _PLACEHOLDER.search(text)):
            shown, bare = found.group(), _PLACEHOLDER.sub("", text).strip()
            rewritten.append(f"{shown}\n{bare}".strip())
            prompts.append(bare.replace("\n", ""))
        elif turn % 2 == 0 and shown is not None:
            rewritten.append(f"{shown}\n{text}" if rng.randint(0, 1) == 0 else f"{text}\n{shown}")
            prompts.append(text.replace("\n", ""))
        else:
            rewritten.append(text)
    return rewritten, prompts


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
        preprocess: how training samples are read: `"as_written"` or `"llamavid"` (module docstring).
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
        if MEDIA_TOKEN not in tokenizer.get_added_vocab():
            tokenizer.add_tokens(
                [AddedToken(MEDIA_TOKEN, special=True, normalized=False)], special_tokens=True
            )
        media_id = tokenizer.convert_tokens_to_ids(MEDIA_TOKEN)
        if media_id != media_token_id:
            raise ValueError(
                f"the tokenizer gives {MEDIA_TOKEN} id {media_id} but media_token_id is {media_token_id}; "
                f"set the model config's media_token_id={media_id} or use a matching tokenizer"
            )
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
        expected = model_settings(config) | {"image_size": config.vision_config.image_size}
        actual = {key: getattr(self, key) for key in model_settings(config)} | {"image_size": self.image_processor.size}
        wrong = [f"{k}: processor {actual[k]}, model {expected[k]}" for k in expected if actual[k] != expected[k]]
        if wrong:
            raise ValueError(
                "the processor does not match the model config (" + "; ".join(wrong) + "); build it with "
                "BehaviorLlavaProcessor.from_config(tokenizer, qformer_tokenizer, model.config) and save it again"
            )

    def media_tokens(self, num_frames: int, is_video: bool) -> int:
        """LLM tokens one media item expands to: T * video_frame_tokens for a video, image_tokens for an image."""
        return num_frames * self.video_frame_tokens if is_video else self.image_tokens

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
        sample_id = str(sample.get("id", "<no id>"))
        conversations = sample.get("conversations") or []
        if not conversations:
            raise ValueError(f"sample {sample_id}: no conversations")
        for i, turn in enumerate(conversations):
            role = turn.get("from")
            if role not in _ROLES:
                raise ValueError(
                    f"sample {sample_id}: turn {i} has unknown 'from' {role!r}; expected 'human' or 'gpt'"
                )
            if role != _ROLES[i % 2]:
                raise ValueError(
                    f"sample {sample_id}: turn {i} is from {role!r}; roles must alternate human/gpt starting with human"
                )
        if len(conversations) % 2:
            raise ValueError(f"sample {sample_id}: the last turn must be from 'gpt' to be trained on")
        messages = [turn["value"] for turn in conversations]
        prompts = None
        if self.preprocess == "llamavid":
            if len(media) > 1:
                raise ValueError(
                    f"sample {sample_id}: {len(media)} media items; llamavid preprocessing shows one item in "
                    "every human turn (use preprocess='as_written' for several)"
                )
            rng = random.Random(sample_seed(sample_id) if seed is None else seed)
            messages, prompts = llamavid_turns(messages, rng)
        return self._encode(
            sample_id,
            messages,
            media,
            sample.get("system"),
            with_labels=True,
            supervise=supervise,
            prompts=prompts,
        )

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
        return self._encode("<generation prompt>", turns, media, system, with_labels=False)

    def _encode(
        self,
        sample_id: str,
        messages: list[str],
        media: Sequence[Media],
        system: str | None,
        *,
        with_labels: bool,
        supervise: Supervise | None = None,
        prompts: Sequence[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """`prompts`: each placeholder's Q-Former prompt with every placeholder showing media 0 (`llamavid`);
        None: one media item per placeholder, prompted by its turn's text without placeholders."""
        media = list(media)
        if any(MEDIA_TOKEN in text for text in [*messages, system or ""]):
            raise ValueError(f"sample {sample_id}: the text contains the reserved token {MEDIA_TOKEN}")
        frame_counts = [item.num_frames for item in media]
        for index, (item, count) in enumerate(zip(media, frame_counts, strict=True)):
            if count == 0:
                raise ValueError(f"sample {sample_id}: media {index} has zero frames")
            if not item.is_video and count != 1:
                raise ValueError(f"sample {sample_id}: media {index} is an image but has {count} frames")
            if count > self.max_frames:
                raise SampleBudgetError(
                    f"sample {sample_id}: media {index} has {count} frames, more than max_frames={self.max_frames}; "
                    "subsample it to fewer frames or raise max_frames (frames are never dropped)"
                )

        shown: list[int] = []  # media index of each placeholder, in text order
        queries: list[str] = []  # Q-Former prompt of each placeholder
        rewritten: list[str] = []
        for turn, text in enumerate(messages):
            if turn % 2:
                rewritten.append(text)
                continue
            for match in _PLACEHOLDER.finditer(text):
                index = 0 if prompts is not None else len(shown)
                if index >= len(media):
                    raise ValueError(
                        f"sample {sample_id}: more placeholders than media ({len(media)} media items given)"
                    )
                if PLACEHOLDER_IS_VIDEO[match.group()] != media[index].is_video:
                    kind = "a video" if media[index].is_video else "an image"
                    raise ValueError(
                        f"sample {sample_id}: placeholder {match.group()} (turn {turn}) is matched with media "
                        f"{index}, which is {kind}"
                    )
                shown.append(index)
                queries.append(
                    _PLACEHOLDER.sub("", text).strip() if prompts is None else prompts[len(queries)]
                )
            rewritten.append(_PLACEHOLDER.sub(MEDIA_TOKEN, text))
        if len(set(shown)) < len(media):
            raise ValueError(
                f"sample {sample_id}: {len(media)} media items but only {len(set(shown))} placeholders "
                f"({len(media) - len(set(shown))} media unused)"
            )

        rendered = self.conversation.render(rewritten, system)
        ids, offsets = self._tokenize(rendered.text)  # (L0,), (L0, 2) char spans
        is_media = ids == self.media_token_id  # (L0,)
        if int(is_media.sum()) != len(shown):
            raise ValueError(
                f"sample {sample_id}: the text holds {int(is_media.sum())} {MEDIA_TOKEN} ids for "
                f"{len(shown)} placeholders (is {MEDIA_TOKEN} in the tokenizer's vocabulary as text?)"
            )
        repeats = torch.ones_like(ids)  # (L0,) copies of each token after expansion
        repeats[is_media] = torch.tensor(
            [self.media_tokens(frame_counts[m], media[m].is_video) for m in shown], dtype=torch.long
        )
        input_ids = ids.repeat_interleave(repeats)  # (L,)
        if input_ids.numel() > self.max_length:
            raise SampleBudgetError(
                f"sample {sample_id}: {input_ids.numel()} tokens after media expansion exceed "
                f"max_length={self.max_length}; samples are never truncated"
            )

        out = {"input_ids": input_ids}
        if with_labels:
            supervised = np.zeros(len(rendered.text), dtype=np.int64)  # (chars,) 1 on supervised characters
            spans = rendered.supervised_spans
            if supervise is not None:  # sub-spans of each answer, relative to where its message starts
                answers = messages[1::2]
                spans = [
                    (s + a, s + b)
                    for s, text in zip(rendered.answer_starts, answers, strict=True)
                    for a, b in supervise(text)
                ]
            for start, end in spans:
                supervised[start:end] = 1
            prefix = np.concatenate([[0], np.cumsum(supervised)])  # (chars + 1,) supervised chars before i
            keep = torch.from_numpy(prefix[offsets[:, 1]] > prefix[offsets[:, 0]])  # (L0,) token covers one
            labels = torch.where(keep, ids, torch.full_like(ids, IGNORE_INDEX))  # (L0,)
            out["labels"] = labels.repeat_interleave(repeats)  # (L,)

        size = self.image_processor.size  # 224 for the released models
        if media:
            pixel_values = torch.cat(
                [self.image_processor(item.frames, is_video=item.is_video)["pixel_values"] for item in media]
            )  # (S, 3, size, size)
        else:
            pixel_values = torch.empty(0, 3, size, size)
        out["pixel_values"] = pixel_values
        out["media_frame_counts"] = torch.tensor(frame_counts, dtype=torch.long)  # (M,)
        out["media_is_video"] = torch.tensor([item.is_video for item in media], dtype=torch.bool)  # (M,)
        out.update(self._encode_queries(queries))
        out["query_media_index"] = torch.tensor(shown, dtype=torch.long)  # (Q,) media of each placeholder
        return out

    def _tokenize(self, text: str) -> tuple[torch.Tensor, np.ndarray]:
        """LLaVA's `tokenizer_image_token` on a prompt with `<media>` placeholders. -> ids (L0,), offsets (L0, 2).

        The pieces between placeholders are tokenized separately (each a text of its own, `_encode_text`), the
        first with the tokenizer's special tokens (bos), the rest without; the placeholder ids join them.
        Offsets are character spans in `text`.
        """
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        start = 0
        for i, piece in enumerate(text.split(MEDIA_TOKEN)):
            if i:
                ids.append(self.media_token_id)
                offsets.append((start - len(MEDIA_TOKEN), start))
            piece_ids, piece_offsets = self._encode_text(piece, specials=i == 0)
            ids += piece_ids
            offsets += [(a + start, b + start) for a, b in piece_offsets]
            start += len(piece) + len(MEDIA_TOKEN)
        return torch.tensor(ids, dtype=torch.long), np.asarray(offsets, dtype=np.int64).reshape(-1, 2)

    def _encode_text(self, text: str, specials: bool) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and offsets of one text as transformers 4.31's slow `LlamaTokenizer` (what LLaMA-VID ran) encodes it.

        The slow tokenizer splits the text at its added tokens (`</s>`, `<s>`, ...), strips the whitespace beside
        them (`_split_at_added_tokens`) and encodes each part as a SentencePiece text of its own (`_encode_piece`:
        with the "▁" prefix). With `legacy=False`
        (a Metaspace with prepend_scheme "first") a part after an added token that does not start with a space
        loses that prefix again: its first piece "▁x" becomes the piece "x" (the unknown token where "x" is no
        piece; nothing for a lone "▁"). A tokenizer without SentencePiece's prefix encodes the text itself.
        """
        if not self._sentencepiece_prefix:
            return self._encode_with_offsets(text, specials)
        ids, offsets = self._encode_with_offsets("", True) if specials else ([], [])
        legacy = self.tokenizer.backend_tokenizer.pre_tokenizer.prepend_scheme == "always"
        text = text.replace("▁", " ")  # SentencePiece reads "▁" as a space (so does the slow tokenizer)
        for index, (start, end, token_id) in enumerate(self._split_at_added_tokens(text)):
            if token_id is not None:
                ids.append(token_id)
                offsets.append((start, end))
                continue
            part_ids, part_offsets = self._encode_piece(text[start:end], shift=start)
            first = self.tokenizer.convert_ids_to_tokens(part_ids[0]) if part_ids else ""
            if index and not legacy and text[start] != " " and first.startswith("▁"):
                if first == "▁":
                    part_ids, part_offsets = part_ids[1:], part_offsets[1:]
                else:
                    part_ids = [self.tokenizer.convert_tokens_to_ids(first[1:]), *part_ids[1:]]
            ids += part_ids
            offsets += part_offsets
        return ids, offsets

    def _split_at_added_tokens(self, text: str) -> list[tuple[int, int, int | None]]:
        """`text` as (start, end, token id) of its added tokens and (start, end, None) of the non-empty text parts
        between them, the whitespace beside each token stripped as transformers 4.31's slow tokenizer strips it:
        as bos / eos / unk / pad say (`LlamaTokenizer` makes them `AddedToken`s), on both sides of any other."""
        tokenizer = self.tokenizer
        added = {token.content: (i, token) for i, token in tokenizer.added_tokens_decoder.items()}
        named = {tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token, tokenizer.pad_token}
        pattern = re.compile("|".join(map(re.escape, sorted(added, key=len, reverse=True))) or "(?!)")
        spans: list[list] = []  # [start, end, token id or None]
        position = 0
        for match in pattern.finditer(text):
            spans += [[position, match.start(), None], [match.start(), match.end(), added[match.group()][0]]]
            position = match.end()
        spans.append([position, len(text), None])
        for i in range(1, len(spans), 2):  # the tokens; text parts sit at the even indices
            token = added[text[spans[i][0] : spans[i][1]]][1]
            left, right = spans[i - 1], spans[i + 1]
            if token.rstrip or token.content not in named:
                right[0] = right[1] - len(text[right[0] : right[1]].lstrip())
            if token.lstrip or token.content not in named:
                left[1] = left[0] + len(text[left[0] : left[1]].rstrip())
        return [(start, end, token) for start, end, token in spans if token is not None or end > start]

    def _encode_with_offsets(
        self, text: str, with_specials: bool = False, shift: int = 0
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """The tokenizer's ids of `text` and their character offsets, moved by `shift`."""
        enc = self.tokenizer(text, add_special_tokens=with_specials, return_offsets_mapping=True)
        return enc["input_ids"], [(a + shift, b + shift) for a, b in enc["offset_mapping"]]

    def _encode_piece(self, piece: str, shift: int = 0) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and character offsets (moved by `shift`) of one text without special tokens, as SentencePiece
        encodes it.

        SentencePiece encodes a text word by word, a word starting at the first space of a run, and merges the
        whitespace-only pieces ("▁▁", scored lowest in LLaMA's model) last: `"this  please"` -> "▁this", "▁",
        "▁please", where a `tokenizers` BPE gives "▁▁", "ple", "ase". So the text is cut before each run of two or
        more spaces inside it, and each such word of k spaces is encoded as a text of its own with k - 1 leading
        spaces (SentencePiece's "▁" prefix stands for the first), by `_encode_leading_spaces`.
        """
        cuts = [match.start() for match in re.finditer(r"(?<=[^ ]) {2,}(?=[^ ])", piece)]
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for start, end in zip([0, *cuts], [*cuts, len(piece)], strict=True):
            start += 1 if start else 0  # a later word's first space is the prefix "▁"
            word_ids, word_offsets = self._encode_leading_spaces(piece[start:end], shift + start)
            ids += word_ids
            offsets += word_offsets
        return ids, offsets

    def _encode_leading_spaces(self, piece: str, shift: int) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and offsets of a text that may start with spaces, as SentencePiece encodes it.

        SentencePiece adds its "▁" prefix even to a text that starts with k spaces, and encodes the k + 1 "▁"
        as "▁"*k then "▁word" (" ASSISTANT" -> "▁", "▁ASS"), or as one "▁"*(k+1) run when the word does not
        start with a "▁" piece (" 1" -> "▁▁", "1"); a `tokenizers` Metaspace adds no prefix there (-> "▁ASS").
        Such a text is encoded as its spaces and the text from its last space on, put together that way.
        """
        encode = self._encode_with_offsets
        spaces = len(piece) - len(piece.lstrip(" "))
        if not (spaces and spaces < len(piece)):
            return encode(piece, shift=shift)
        rest_ids, rest_offsets = encode(piece[spaces - 1 :], shift=shift + spaces - 1)  # "▁word…"
        if self.tokenizer.convert_ids_to_tokens(rest_ids[0]) == "▁":  # the word has no "▁" piece
            head_ids, head_offsets = encode(" " * (spaces + 1), shift=shift)  # the whole "▁" run
            head_offsets = [(min(a, shift + spaces), min(b, shift + spaces)) for a, b in head_offsets]
            rest_ids, rest_offsets = rest_ids[1:], rest_offsets[1:]
        else:
            head_ids, head_offsets = encode(piece[:spaces], shift=shift)
        return head_ids + rest_ids, head_offsets + rest_offsets

    @property
    def _sentencepiece_prefix(self) -> bool:
        """Whether the tokenizer starts a text with SentencePiece's "▁" (a prepending Metaspace)."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        pre = getattr(backend, "pre_tokenizer", None)
        return isinstance(pre, pre_tokenizers.Metaspace) and pre.prepend_scheme in ("always", "first")

    def _encode_queries(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Q-Former tokens of each prompt: ids / mask [Q, Lq] (left-truncated)."""
        if prompts:
            encoding = self.qformer_tokenizer(
                prompts,
                padding="longest",
                truncation=True,
                max_length=self.qformer_max_length,
                return_tensors="pt",
            )
            query_ids, query_mask = encoding["input_ids"], encoding["attention_mask"]
        else:
            query_ids = query_mask = torch.zeros(0, 0, dtype=torch.long)
        return {"query_input_ids": query_ids.long(), "query_attention_mask": query_mask.long()}

    def collate(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Batch per-sample outputs of `__call__` (or `prompt_for_generation`).

        Returns input_ids / attention_mask [B, L] (right-padded with `pad_token_id` / 0), labels [B, L]
        (padded with -100; only if every sample has labels), pixel_values [sum S, 3, 224, 224],
        media_frame_counts / media_is_video [sum M], query_input_ids / query_attention_mask [sum Q, max Lq]
        (right-padded with the Q-Former pad id / 0), query_media_index [sum Q] indexing the batch's media.
        """
        input_ids = [o["input_ids"] for o in outputs]
        batch = {
            "input_ids": pad_sequence(input_ids, batch_first=True, padding_value=self.pad_token_id),  # (B, L)
            "attention_mask": pad_sequence(
                [torch.ones_like(ids) for ids in input_ids], batch_first=True, padding_value=0
            ),  # (B, L)
        }
        if all("labels" in o for o in outputs):
            batch["labels"] = pad_sequence(
                [o["labels"] for o in outputs], batch_first=True, padding_value=IGNORE_INDEX
            )  # (B, L)
        for key in ("pixel_values", "media_frame_counts", "media_is_video"):
            batch[key] = torch.cat([o[key] for o in outputs])
        media_offsets = np.cumsum([0] + [o["media_frame_counts"].numel() for o in outputs])[:-1]
        batch["query_media_index"] = torch.cat(
            [o["query_media_index"] + int(offset) for o, offset in zip(outputs, media_offsets, strict=True)]
        )  # (sum Q,)
        query_len = max(o["query_input_ids"].shape[1] for o in outputs)
        query_pad = self.qformer_tokenizer.pad_token_id or 0
        batch["query_input_ids"] = torch.cat(
            [
                F.pad(o["query_input_ids"], (0, query_len - o["query_input_ids"].shape[1]), value=query_pad)
                for o in outputs
            ]
        )  # (sum Q, max Lq)
        batch["query_attention_mask"] = torch.cat(
            [
                F.pad(o["query_attention_mask"], (0, query_len - o["query_attention_mask"].shape[1]))
                for o in outputs
            ]
        )  # (sum Q, max Lq)
        return batch

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
        chat_template = None if "template" in overrides else processor.chat_template  # None: the template's own
        return cls(*parts, **settings, chat_template=chat_template)


SETTINGS = (
    "media_token_id", "image_tokens", "video_frame_tokens", "qformer_max_length", "template", "max_length",
    "max_frames", "preprocess",
)  # fmt: skip
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
