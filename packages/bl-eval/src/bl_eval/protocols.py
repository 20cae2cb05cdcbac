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
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, Media
from bl_model.inference import ContinuationScores, continuation_logprobs, generate_texts, label_nll
from bl_model.llamavid_prompt import PLACEHOLDER_IS_VIDEO, SampleBudgetError

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


# ---- scoring --------------------------------------------------------------------------------------------
def _failed(example: Example, err: Exception) -> Record:
    return {"id": example.id, "prediction": None, "raw": None, "error": f"{type(err).__name__}: {err}"}


def _scored(
    model: BehaviorLlavaForCausalLM, processor: BehaviorLlavaProcessor, example: Example, batch_size: int
) -> ContinuationScores:
    if not example.choices:
        raise ValueError(f"example {example.id}: this protocol needs `choices`")
    media = example_media(example, processor.max_frames)
    return continuation_logprobs(
        model,
        processor,
        example.prompt,
        media,
        example.choices,
        system=example.meta.get("system"),
        batch_size=batch_size,
    )


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
            sums, counts, _ = _scored(model, processor, example, batch_size)
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
            "id": example.id,
            "prediction": example.choices[int(np.argmax(scores))],
            "raw": None,
            "scores": dict(zip(example.choices, scores, strict=True)),
        }

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
            total, count = label_nll(
                model, processor, processor(sample, media, supervise=lambda _, s=spans: s)
            )
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
