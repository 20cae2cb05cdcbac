"""The behaviour tasks on held-out BLIFT shards (bl-data's `apps/prepare` output): likes/views R²,
perplexity of the top comments, and replay values per scene (RMSE, LCBM's ±5 accuracy).

The prompt is the sample's own Listing 1 human turn (with its system prompt in `meta["system"]`); the
targets come from the sample json's `behavior` dict. The media stay inside the shard: an example has no
media paths but `meta["shard"]` and `meta["key"]`, and `shard_frames(example)` reads its frames.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bl_data.parse import comment_spans
from bl_data.shards import ShardIndex, open_shards

from ..spec import Example, TaskSpec


def shard_frames(example: Example) -> np.ndarray:
    """The frames (T, H, W, 3) uint8 RGB stored with a behaviour example's sample in its shard."""
    key, shard = example.meta["key"], example.meta["shard"]
    index = _shard_index(shard)
    _, frames = index[index.position(key)]
    if not len(frames):
        raise ValueError(f"{shard}: sample {key} has no frames")
    return frames


@functools.cache
def _shard_index(shard: str) -> ShardIndex:
    """One index per shard: its tar headers are read once, then samples are read by offset."""
    return ShardIndex([shard])


def _samples(root: Path) -> Iterator[dict[str, Any]]:
    yield from open_shards(root, split_by_node=False, split_by_worker=False, decode_frames=False)


def _example(sample: dict[str, Any], target: Any, **meta: Any) -> Example:
    conversation = sample["json"]
    return Example(
        id=sample["__key__"],
        prompt=conversation["conversations"][0]["value"],
        target=target,
        meta={
            "shard": sample["__url__"],
            "key": sample["__key__"],
            "system": conversation.get("system"),
            **meta,
        },
    )


def _likes(root: Path) -> Iterator[Example]:
    """Samples with a likes percentage (YouTube): target = 100 * likes / views."""
    for sample in _samples(root):
        if (likes := sample["json"]["behavior"].get("likes_percent")) is not None:
            yield _example(sample, float(likes))


def _replay(root: Path) -> Iterator[Example]:
    """Samples with replay values: target = the per-scene values in [0, 1]."""
    for sample in _samples(root):
        if replay := sample["json"]["behavior"].get("replay"):
            yield _example(sample, [float(v) for v in replay])


def _comments(root: Path) -> Iterator[Example]:
    """Samples whose answer quotes comments: target = the gold answer, scored on the comment spans."""
    for sample in _samples(root):
        answer = sample["json"]["conversations"][1]["value"]
        if spans := comment_spans(answer):
            yield _example(sample, answer, score_spans=spans)


_LAYOUT = (
    "a bl-data shard directory (apps/prepare output, held out from training): <prefix>-NNNNNN.tar shards "
    "listed in <prefix>.manifest.jsonl; each sample's json has conversations (Listing 1), system and "
    "behavior {likes_percent, top_comments, replay, ...}; frames as NNN.jpg members"
)


def _spec(name: str, loader: Callable[[Path], Iterator[Example]], **fields: Any) -> TaskSpec:
    return TaskSpec(
        name=name, group="behavior", loader=loader, layout=_LAYOUT, subdir="blift_heldout", **fields
    )


SPECS = [
    _spec(
        "blift_likes_r2",
        _likes,
        protocol="generate",
        metric="r2",
        parser="likes_percent",
        max_new_tokens=1024,
        paper_metric_key="r2",
        notes="R² of the generated 'liked by X% of viewers' against 100 * likes / views, over answers that "
        "state it.",
    ),
    _spec(
        "blift_comment_ppl",
        _comments,
        protocol="nll",
        metric="perplexity",
        higher_is_better=False,
        paper_metric_key="perplexity",
        notes="Teacher-forced perplexity of the gold top comments (their quoted text), given the prompt and "
        "the answer before them.",
    ),
    _spec(
        "blift_replay_rmse",
        _replay,
        protocol="generate",
        metric="replay",
        parser="replay",
        max_new_tokens=1024,
        higher_is_better=False,
        paper_metric_key="rmse",
        notes="RMSE on LCBM's 0-100 scale over the scenes the answer gives values for, matched by scene number; "
        "missing, extra and repeated scenes are counted beside it.",
    ),
    _spec(
        "blift_replay_acc5",
        _replay,
        protocol="generate",
        metric="replay",
        parser="replay",
        max_new_tokens=1024,
        paper_metric_key="accuracy",
        notes="LCBM: a scene is right when within ±5 on 0-100; scenes without a predicted value are wrong.",
    ),
]
