"""The paper's evaluation protocols over a loaded `BehaviorLlavaForCausalLM` and its processor.

Each protocol maps `Example`s to one record per example,
`{"id", "prediction", "raw", "scores"?, "error"?}`:

- `logprob`: zero-shot over label words. A choice's score is the summed log-probability of its tokens as
  the assistant's answer (teacher-forced, the closing "</s>" not included); the prediction is the best label.
- `generate`: greedy decoding (`spec.max_new_tokens`), then `bl_eval.parsers.PARSERS[spec.parser]`.
- `retrieval`: 1-of-N statements (30 for ads action/reason), each scored by its MEAN per-token
  log-probability as the answer, so that a statement is not preferred for being short; the prediction is
  the argmax index.
- `kshot`: `spec.shots` in-context (prompt, answer, media) turns before the query, then as `generate`.

An example whose media cannot be read or which exceeds the processor's frame / token budget gets
`prediction=None` and the reason in `error`; the runner leaves it out of the metric and counts it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bl_data.media import MediaError, sample_frames
from bl_model import IGNORE_INDEX, BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, Media, MediaBatch
from bl_model.processing import PLACEHOLDER_IS_VIDEO, SampleBudgetError

from .spec import Example, TaskSpec
from .tasks.behavior import shard_frames

Record = dict[str, Any]
ProtocolFn = Callable[
    [BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, TaskSpec, Sequence[Example], int], list[Record]
]

_PLACEHOLDER = re.compile("|".join(map(re.escape, PLACEHOLDER_IS_VIDEO)))
SKIPPABLE = (MediaError, SampleBudgetError, OSError)
"""Per-example failures recorded as errors instead of stopping the run (unreadable media, over budget)."""


# ---- media ----------------------------------------------------------------------------------------------
def load_media(prompt: str, paths: Sequence[Path], max_frames: int, fps: float = 1.0) -> list[Media]:
    """The media of `prompt`'s `<image>` / `<video>` placeholders, in order: images as RGB PIL images,
    videos as frames (T, H, W, 3) uint8 sampled at `fps` (T ≤ `max_frames`, spread over the whole video)."""
    kinds = [PLACEHOLDER_IS_VIDEO[m.group()] for m in _PLACEHOLDER.finditer(prompt)]
    if len(kinds) != len(paths):
        raise ValueError(
            f"the prompt has {len(kinds)} media placeholders but {len(paths)} media paths were given"
        )
    media = []
    for path, is_video in zip(paths, kinds, strict=True):
        if is_video:
            frames, _ = sample_frames(path, fps=fps, max_frames=max_frames)
            media.append(Media(frames, is_video=True))
        else:
            with Image.open(path) as image:
                media.append(Media(image.convert("RGB"), is_video=False))
    return media


def example_media(example: Example, max_frames: int) -> list[Media]:
    """The example's media: from its paths, or (behaviour tasks) the frames stored with it in a shard."""
    if not example.media and "shard" in example.meta:
        return [Media.for_placeholder(example.prompt, shard_frames(example))]
    return load_media(example.prompt, example.media, max_frames)


def _stand_in(media: Sequence[Media]) -> list[Media]:
    """1x1 black media with the same frame counts: they give the same token layout, cheaply."""
    return [
        Media(
            np.zeros((m.num_frames, 1, 1, 3), np.uint8) if m.is_video else np.zeros((1, 1, 3), np.uint8),
            m.is_video,
        )
        for m in media
    ]


# ---- batching -------------------------------------------------------------------------------------------
def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def collate_left(
    processor: BehaviorLlavaProcessor, encoded: Sequence[dict[str, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """`processor.collate` with input_ids / attention_mask [B, L] LEFT-padded, as batched generation needs."""
    batch = processor.collate(encoded)
    lengths = [e["input_ids"].numel() for e in encoded]
    width = max(lengths)
    input_ids = torch.full((len(encoded), width), processor.pad_token_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)  # (B, L)
    for row, (e, n) in enumerate(zip(encoded, lengths, strict=True)):
        input_ids[row, width - n :] = e["input_ids"]
        attention_mask[row, width - n :] = 1
    batch.update(input_ids=input_ids, attention_mask=attention_mask)
    batch.pop("labels", None)
    return batch


# ---- scoring --------------------------------------------------------------------------------------------
def _whole_answer(text: str) -> list[tuple[int, int]]:
    return [(0, len(text))]


@torch.no_grad()
def continuation_logprobs(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    prompt: str,
    media: Sequence[Media],
    continuations: Sequence[str],
    *,
    system: str | None = None,
    batch_size: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities (C,) and token counts (C,) of each continuation as the assistant's answer.

    A continuation's tokens are all those after the generation prompt up to the end of its text (a lone
    "▁" the tokenizer splits off counts; the closing "</s>" does not). The media are encoded once and
    shared by all C rows; rows run `batch_size` at a time, right-padded.
    """
    if not continuations:
        raise ValueError("no continuations to score")
    device = model.device
    prompt_ids = processor.prompt_for_generation(prompt, _stand_in(media), system=system)["input_ids"]  # (P,)
    start = prompt_ids.numel()
    encoded = []
    for i, text in enumerate(continuations):
        sample = {
            "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": text}],
            "system": system,
        }
        e = processor(sample, media if i == 0 else _stand_in(media), supervise=_whole_answer)
        ids = e["input_ids"]  # (L,)
        if not torch.equal(ids[:start], prompt_ids):
            raise ValueError(f"the tokens of answer {text!r} do not start where the generation prompt ends")
        answer = (e["labels"] != IGNORE_INDEX).nonzero()  # (a, 1) positions of the answer's characters
        end = int(answer.max()) + 1 if answer.numel() else start
        if end <= start:
            raise ValueError(f"answer {text!r} has no tokens")
        e["labels"] = torch.full_like(ids, IGNORE_INDEX)
        e["labels"][start:end] = ids[start:end]
        encoded.append(e)
    media_embeds = None
    if encoded[0]["media_frame_counts"].numel():
        media_embeds = model.encode_media(MediaBatch.pop_from(_to(dict(encoded[0]), device)))  # (n, H)
    sums, counts = [], []
    for first in range(0, len(encoded), batch_size):
        batch = _to(processor.collate(encoded[first : first + batch_size]), device)
        ids, labels = batch["input_ids"], batch["labels"]  # (B, L)
        is_media = ids == model.config.media_token_id  # (B, L)
        embeds = model.get_input_embeddings()(ids.masked_fill(is_media, 0))  # (B, L, H)
        if media_embeds is not None:
            embeds = embeds.masked_scatter(
                is_media[..., None], media_embeds.repeat(ids.shape[0], 1).to(embeds.dtype)
            )
        positions = torch.arange(start - 1, ids.shape[1] - 1, device=device)  # (A,): logits[t] predict t + 1
        logits = model(
            inputs_embeds=embeds, attention_mask=batch["attention_mask"], logits_to_keep=positions
        ).logits
        targets = labels[:, start:]  # (B, A)
        keep = targets != IGNORE_INDEX
        token_lp = torch.log_softmax(logits.float(), -1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        sums.append((token_lp * keep).sum(1).cpu())
        counts.append(keep.sum(1).cpu())
    return torch.cat(sums), torch.cat(counts)


def _failed(example: Example, err: Exception) -> Record:
    return {"id": example.id, "prediction": None, "raw": None, "error": f"{type(err).__name__}: {err}"}


def _scored(
    model: BehaviorLlavaForCausalLM, processor: BehaviorLlavaProcessor, example: Example, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if not example.choices:
        raise ValueError(f"example {example.id}: this protocol needs `choices`")
    media = example_media(example, processor.max_frames)
    return continuation_logprobs(
        model, processor, example.prompt, media, example.choices,
        system=example.meta.get("system"), batch_size=batch_size,
    )  # fmt: skip


def _choose(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    examples: Sequence[Example],
    batch_size: int,
    decide: Callable[[Example, torch.Tensor, torch.Tensor], Record],
) -> list[Record]:
    """Score every example's choices, then `decide(example, summed log-probs (C,), token counts (C,))`."""
    records = []
    for example in examples:
        try:
            sums, counts = _scored(model, processor, example, batch_size)
        except SKIPPABLE as err:
            records.append(_failed(example, err))
            continue
        records.append(decide(example, sums, counts))
    return records


def logprob(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    spec: TaskSpec,
    examples: Sequence[Example],
    batch_size: int = 8,
) -> list[Record]:
    """Zero-shot classification: the choice with the highest summed log-probability; scores per label."""

    def decide(example: Example, sums: torch.Tensor, counts: torch.Tensor) -> Record:
        scores = sums.tolist()
        return {
            "id": example.id, "prediction": example.choices[int(np.argmax(scores))], "raw": None,
            "scores": dict(zip(example.choices, scores, strict=True)),
        }  # fmt: skip

    return _choose(model, processor, examples, batch_size, decide)


def retrieval(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    spec: TaskSpec,
    examples: Sequence[Example],
    batch_size: int = 8,
) -> list[Record]:
    """1-of-N retrieval: the index of the candidate with the highest mean per-token log-probability."""

    def decide(example: Example, sums: torch.Tensor, counts: torch.Tensor) -> Record:
        scores = (sums / counts.clamp(min=1)).tolist()
        return {"id": example.id, "prediction": int(np.argmax(scores)), "raw": None, "scores": scores}

    return _choose(model, processor, examples, batch_size, decide)


# ---- generation -----------------------------------------------------------------------------------------
@torch.no_grad()
def generate_texts(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    encoded: Sequence[dict[str, torch.Tensor]],
    max_new_tokens: int,
    batch_size: int = 8,
) -> list[str]:
    """Greedy answers of encoded prompts (`prompt_for_generation` outputs), `batch_size` at a time, left-padded;
    each answer is cut at the first "</s>"."""
    eos = processor.tokenizer.eos_token_id
    texts = []
    for start in range(0, len(encoded), batch_size):
        batch = _to(collate_left(processor, encoded[start : start + batch_size]), model.device)
        new = model.generate(
            **batch, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=processor.pad_token_id
        ).cpu()  # (B, ≤ max_new_tokens)
        for row in new.tolist():
            row = row[: row.index(eos)] if eos in row else row
            texts.append(processor.tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts


def _generate_and_parse(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    spec: TaskSpec,
    examples: Sequence[Example],
    batch_size: int,
    shots: int,
) -> list[Record]:
    parse = str.strip
    if spec.parser:
        from .parsers import PARSERS

        parse = PARSERS[spec.parser]
    records: dict[str, Record] = {}
    ready: list[tuple[Example, dict[str, torch.Tensor]]] = []
    for example in examples:
        if len(example.shots) < shots:
            raise ValueError(
                f"task {spec.name}: example {example.id} has {len(example.shots)} shots, needs {shots}"
            )
        turns, media = [], []
        try:
            for prompt, answer, paths in example.shots[:shots]:
                turns += [prompt, answer]
                media += load_media(prompt, paths, processor.max_frames)
            turns.append(example.prompt)
            media += example_media(example, processor.max_frames)
            ready.append(
                (example, processor.prompt_for_generation(turns, media, system=example.meta.get("system")))
            )
        except SKIPPABLE as err:
            records[example.id] = _failed(example, err)
    texts = generate_texts(model, processor, [e for _, e in ready], spec.max_new_tokens, batch_size)
    for (example, _), text in zip(ready, texts, strict=True):
        records[example.id] = {"id": example.id, "prediction": parse(text), "raw": text}
    return [records[example.id] for example in examples]


def generate(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    spec: TaskSpec,
    examples: Sequence[Example],
    batch_size: int = 8,
) -> list[Record]:
    """Greedy generation, then the task's parser (raw stripped text when `spec.parser` is None)."""
    return _generate_and_parse(model, processor, spec, examples, batch_size, shots=0)


def kshot(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    spec: TaskSpec,
    examples: Sequence[Example],
    batch_size: int = 8,
) -> list[Record]:
    """The first `spec.shots` of each example's shots as earlier turns (with their media), then `generate`."""
    return _generate_and_parse(model, processor, spec, examples, batch_size, shots=spec.shots)


@torch.no_grad()
def nll(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    spec: TaskSpec,
    examples: Sequence[Example],
    batch_size: int = 8,
) -> list[Record]:
    """Teacher-forced negative log-likelihood of the gold answer's `meta["score_spans"]` characters
    (e.g. its comments): prediction `{"nll": summed NLL, "tokens": count}` for the perplexity metric."""
    records = []
    for example in examples:
        try:
            media = example_media(example, processor.max_frames)
            sample = {
                "id": example.id,
                "conversations": [
                    {"from": "human", "value": example.prompt},
                    {"from": "gpt", "value": example.target},
                ],
                "system": example.meta.get("system"),
            }
            spans = [tuple(span) for span in example.meta["score_spans"]]
            batch = _to(
                processor.collate([processor(sample, media, supervise=lambda _, s=spans: s)]), model.device
            )
            total, count = model.label_nll(**batch)
        except SKIPPABLE as err:
            records.append(_failed(example, err))
            continue
        records.append({"id": example.id, "prediction": {"nll": total, "tokens": count}, "raw": None})
    return records


PROTOCOLS: dict[str, ProtocolFn] = {
    "nll": nll,
    "logprob": logprob,
    "generate": generate,
    "retrieval": retrieval,
    "kshot": kshot,
}
