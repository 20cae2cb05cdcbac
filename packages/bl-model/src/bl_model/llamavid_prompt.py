"""The LLaMA-VID prompt and label algorithm: a conversation and its media -> input_ids, labels, Q-Former prompts.

Each `<image>` / `<video>` placeholder of a human turn is written as one added `<media>` token, and the prompt is
tokenized as LLaMA-VID tokenized it (`tokenization.tokenize_with_media`). Every `<media>` id is then expanded
into exactly `media_tokens(T, is_video)` copies (the model config's counts), which the model fills with its visual
tokens. Labels come from the pieces' character offsets: a token is supervised iff it covers a character of an
assistant message, its closing separator or the space before it. Nothing is truncated: over-long samples and too
many frames are errors.

Two ways to read a training sample (`preprocess`):
- `"as_written"`: media are shown where placeholders are written, one media item per placeholder; each
  placeholder's Q-Former prompt is its turn's text without placeholders.
- `"llamavid"`: LLaMA-VID's training preprocessing (`preprocess_multimodal` + `preprocess_imgsp_v1`). A
  sample has at most one media item; the human turn that writes its placeholder gets it moved to the front
  (`"<video>\\ntext"`), and every later human turn gets it too, in front or at the end (`"text\\n<video>"`)
  at random, drawn from the sample's seed. Each of these turns has its own Q-Former prompt: the turn's text
  without placeholders and with its newlines removed (`"clip\\nthen"` -> `"clipthen"`), so every answer is
  conditioned on context tokens computed from its own question.
Generation prompts are always read as written (LLaMA-VID's evaluation writes `"<image>\\nquestion"`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from .configuration import IGNORE_INDEX
from .conversation import MEDIA_TOKEN, ConversationTemplate, RenderedPrompt
from .tokenization import tokenize_with_media

PLACEHOLDER_IS_VIDEO = {"<image>": False, "<video>": True}
PLACEHOLDER = re.compile("|".join(map(re.escape, PLACEHOLDER_IS_VIDEO)))
ROLES = ("human", "gpt")
Preprocess = Literal["as_written", "llamavid"]
PREPROCESS_MODES: tuple[Preprocess, ...] = ("as_written", "llamavid")

Supervise = Callable[[str], Sequence[tuple[int, int]]]
"""An assistant message -> the `[start, end)` character spans of it to label."""


class SampleBudgetError(ValueError):
    """A well-formed sample over the frame cap or `max_length`: training skips and counts it."""


class MediaItem(Protocol):
    """What the prompt needs of one image or video (`processing.Media` is one)."""

    is_video: bool

    @property
    def num_frames(self) -> int: ...


def sample_seed(sample_id: str) -> int:
    """A sample's default seed: stable across runs and processes (unlike `hash`)."""
    return int.from_bytes(hashlib.sha256(sample_id.encode()).digest()[:8], "little")


def read_conversation(sample: Mapping) -> tuple[str, list[str]]:
    """(id, messages) of a training sample `{"id", "conversations": [{"from", "value"}, ...]}`; ValueError
    naming the sample and turn unless the turns alternate human/gpt, starting with human and ending with gpt."""
    sample_id = str(sample.get("id", "<no id>"))
    conversations = sample.get("conversations") or []
    if not conversations:
        raise ValueError(f"sample {sample_id}: no conversations")
    for i, turn in enumerate(conversations):
        role = turn.get("from")
        if role not in ROLES:
            raise ValueError(
                f"sample {sample_id}: turn {i} has unknown 'from' {role!r}; expected 'human' or 'gpt'"
            )
        if role != ROLES[i % 2]:
            raise ValueError(
                f"sample {sample_id}: turn {i} is from {role!r}; roles must alternate human/gpt starting with human"
            )
    if len(conversations) % 2:
        raise ValueError(f"sample {sample_id}: the last turn must be from 'gpt' to be trained on")
    return sample_id, [turn["value"] for turn in conversations]


def llamavid_turns(messages: Sequence[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """LLaMA-VID's training turns: (messages with the media shown in every human turn from the first that
    writes a placeholder on, the Q-Former prompt of each human turn that shows it).

    A turn that writes placeholders keeps one, moved to the front (`"<video>\\ntext"`, stripped); a later turn
    gets it in front or at the end (`"text\\n<video>"`), `rng.randint(0, 1) == 0` choosing the front.
    """
    rewritten, prompts = [], []
    shown: str | None = None  # the placeholder, once a human turn has written it
    for turn, text in enumerate(messages):
        if turn % 2 == 0 and (found := PLACEHOLDER.search(text)):
            shown, bare = found.group(), PLACEHOLDER.sub("", text).strip()
            rewritten.append(f"{shown}\n{bare}".strip())
            prompts.append(bare.replace("\n", ""))
        elif turn % 2 == 0 and shown is not None:
            rewritten.append(f"{shown}\n{text}" if rng.randint(0, 1) == 0 else f"{text}\n{shown}")
            prompts.append(text.replace("\n", ""))
        else:
            rewritten.append(text)
    return rewritten, prompts


@dataclass(frozen=True)
class PlacedMedia:
    """Placeholders matched with media: the messages with each placeholder written as `<media>`, and per
    placeholder in text order, the index of the media item it shows and its Q-Former prompt."""

    messages: list[str]
    shown: list[int]
    queries: list[str]


def place_media(
    sample_id: str,
    messages: Sequence[str],
    media_is_video: Sequence[bool],
    prompts: Sequence[str] | None = None,
) -> PlacedMedia:
    """Match the human turns' placeholders with the media. `prompts`: each placeholder's Q-Former prompt with
    every placeholder showing media 0 (`llamavid`); None: one media item per placeholder, in order, prompted by
    its turn's text without placeholders. ValueError on a kind mismatch, too few or unused media."""
    shown: list[int] = []
    queries: list[str] = []
    rewritten: list[str] = []
    for turn, text in enumerate(messages):
        if turn % 2:
            rewritten.append(text)
            continue
        for match in PLACEHOLDER.finditer(text):
            index = 0 if prompts is not None else len(shown)
            if index >= len(media_is_video):
                raise ValueError(
                    f"sample {sample_id}: more placeholders than media ({len(media_is_video)} media items given)"
                )
            if PLACEHOLDER_IS_VIDEO[match.group()] != media_is_video[index]:
                kind = "a video" if media_is_video[index] else "an image"
                raise ValueError(
                    f"sample {sample_id}: placeholder {match.group()} (turn {turn}) is matched with media "
                    f"{index}, which is {kind}"
                )
            shown.append(index)
            queries.append(PLACEHOLDER.sub("", text).strip() if prompts is None else prompts[len(queries)])
        rewritten.append(PLACEHOLDER.sub(MEDIA_TOKEN, text))
    if len(set(shown)) < len(media_is_video):
        raise ValueError(
            f"sample {sample_id}: {len(media_is_video)} media items but only {len(set(shown))} placeholders "
            f"({len(media_is_video) - len(set(shown))} media unused)"
        )
    return PlacedMedia(rewritten, shown, queries)


def supervised_labels(
    ids: torch.Tensor,
    offsets: np.ndarray,
    rendered: RenderedPrompt,
    answers: Sequence[str],
    supervise: Supervise | None = None,
) -> torch.Tensor:
    """ids (L0,) and their character offsets (L0, 2) in `rendered.text` -> labels (L0,): the id where the token
    covers a supervised character (`rendered.supervised_spans`, or `supervise`'s spans of each answer), else -100."""
    supervised = np.zeros(len(rendered.text), dtype=np.int64)  # (chars,) 1 on supervised characters
    spans = rendered.supervised_spans
    if supervise is not None:  # sub-spans of each answer, relative to where its message starts
        spans = [
            (s + a, s + b)
            for s, text in zip(rendered.answer_starts, answers, strict=True)
            for a, b in supervise(text)
        ]
    for start, end in spans:
        supervised[start:end] = 1
    prefix = np.concatenate([[0], np.cumsum(supervised)])  # (chars + 1,) supervised chars before i
    keep = torch.from_numpy(prefix[offsets[:, 1]] > prefix[offsets[:, 0]])  # (L0,) token covers one
    return torch.where(keep, ids, torch.full_like(ids, IGNORE_INDEX))  # (L0,)


@dataclass(frozen=True)
class EncodedPrompt:
    """The text half of a processed sample (Q = placeholders, in text order)."""

    input_ids: torch.Tensor  # (L,) media ids expanded
    labels: torch.Tensor | None  # (L,) -100 outside supervised text; None for a generation prompt
    query_input_ids: torch.Tensor  # (Q, Lq) Q-Former prompt of each placeholder, left-truncated
    query_attention_mask: torch.Tensor  # (Q, Lq)
    query_media_index: torch.Tensor  # (Q,) media item each placeholder shows


@dataclass(frozen=True, eq=False)
class LlamaVidPrompt:
    """The algorithm with one processor's tokenizers and settings (`BehaviorLlavaProcessor` documents them)."""

    tokenizer: PreTrainedTokenizerBase
    qformer_tokenizer: PreTrainedTokenizerBase
    template: ConversationTemplate
    media_token_id: int
    image_tokens: int
    video_frame_tokens: int
    qformer_max_length: int
    max_length: int
    max_frames: int
    preprocess: Preprocess = "as_written"

    def media_tokens(self, num_frames: int, is_video: bool) -> int:
        """LLM tokens one media item expands to: T * video_frame_tokens for a video, image_tokens for an image."""
        return num_frames * self.video_frame_tokens if is_video else self.image_tokens

    def encode_sample(
        self,
        sample: Mapping,
        media: Sequence[MediaItem],
        supervise: Supervise | None = None,
        seed: int | None = None,
    ) -> EncodedPrompt:
        """A training sample, read as `preprocess` says; `seed` (default `sample_seed(id)`) draws `"llamavid"`'s
        sides of the media in later turns."""
        sample_id, messages = read_conversation(sample)
        prompts = None
        if self.preprocess == "llamavid":
            if len(media) > 1:
                raise ValueError(
                    f"sample {sample_id}: {len(media)} media items; llamavid preprocessing shows one item in "
                    "every human turn (use preprocess='as_written' for several)"
                )
            rng = random.Random(sample_seed(sample_id) if seed is None else seed)
            messages, prompts = llamavid_turns(messages, rng)
        return self.encode(
            sample_id,
            messages,
            media,
            sample.get("system"),
            with_labels=True,
            supervise=supervise,
            prompts=prompts,
        )

    def encode(
        self,
        sample_id: str,
        messages: list[str],
        media: Sequence[MediaItem],
        system: str | None,
        *,
        with_labels: bool,
        supervise: Supervise | None = None,
        prompts: Sequence[str] | None = None,
    ) -> EncodedPrompt:
        """Messages as written (placeholders in human turns) -> ids, labels and Q-Former prompts; `prompts` as
        `place_media`'s. ValueError on malformed input, SampleBudgetError over `max_frames` / `max_length`."""
        if any(MEDIA_TOKEN in text for text in [*messages, system or ""]):
            raise ValueError(f"sample {sample_id}: the text contains the reserved token {MEDIA_TOKEN}")
        frame_counts = self._check_media(sample_id, media)
        placed = place_media(sample_id, messages, [item.is_video for item in media], prompts)
        rendered = self.template.render(placed.messages, system)
        # ids (L0,), offsets (L0, 2): character spans in rendered.text
        ids, offsets = tokenize_with_media(self.tokenizer, rendered.text, self.media_token_id)
        is_media = ids == self.media_token_id  # (L0,)
        if int(is_media.sum()) != len(placed.shown):
            raise ValueError(
                f"sample {sample_id}: the text holds {int(is_media.sum())} {MEDIA_TOKEN} ids for "
                f"{len(placed.shown)} placeholders (is {MEDIA_TOKEN} in the tokenizer's vocabulary as text?)"
            )
        repeats = torch.ones_like(ids)  # (L0,) copies of each token after expansion
        repeats[is_media] = torch.tensor(
            [self.media_tokens(frame_counts[m], media[m].is_video) for m in placed.shown], dtype=torch.long
        )
        input_ids = ids.repeat_interleave(repeats)  # (L,)
        if input_ids.numel() > self.max_length:
            raise SampleBudgetError(
                f"sample {sample_id}: {input_ids.numel()} tokens after media expansion exceed "
                f"max_length={self.max_length}; samples are never truncated"
            )
        labels = None
        if with_labels:
            labels = supervised_labels(ids, offsets, rendered, messages[1::2], supervise)  # (L0,)
            labels = labels.repeat_interleave(repeats)  # (L,)
        query_ids, query_mask = self.encode_queries(placed.queries)
        shown = torch.tensor(placed.shown, dtype=torch.long)  # (Q,)
        return EncodedPrompt(input_ids, labels, query_ids, query_mask, shown)

    def _check_media(self, sample_id: str, media: Sequence[MediaItem]) -> list[int]:
        """Each media item's frame count; ValueError for no frames or a many-frame image, SampleBudgetError
        over `max_frames`."""
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
        return frame_counts

    def encode_queries(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Q-Former tokens of each prompt: ids, mask (Q, Lq), left-truncated to `qformer_max_length`."""
        if not prompts:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return empty, empty
        encoding = self.qformer_tokenizer(
            prompts,
            padding="longest",
            truncation=True,
            max_length=self.qformer_max_length,
            return_tensors="pt",
        )
        return encoding["input_ids"].long(), encoding["attention_mask"].long()
