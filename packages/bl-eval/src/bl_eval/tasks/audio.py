"""Shot2Story20K (Han et al. 2023): 3-shot audio summarisation (the paper's audio task) and the multi-shot
video summary of the behaviour ablation; BLEU-4 / ROUGE-L / METEOR / CIDEr against the annotation, scored
with the coco-caption scorers as Shot2Story's own evaluation (nlg-eval) calls them (`bl_eval.metrics.caption`;
needs a Java runtime for METEOR)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..spec import Example, TaskSpec
from ._common import VIDEO_EXTS, MediaIndex, first_existing, read_json

AUDIO_SHOTS = 3
_AUDIO = (
    '<video>\nThe speech in this video is: "{asr}"\nSummarize what is said and heard in the video, shot by shot, '
    "in a few sentences."
)
_SUMMARY = (
    "<video>\nDescribe this video in detail: summarize what happens in each shot and how the shots connect."
)


def _audio_summary(item: dict[str, Any]) -> str:
    return " ".join(" ".join(str(c).split()) for c in item["audio_captions"])


def _audio_prompt(item: dict[str, Any]) -> str:
    return _AUDIO.format(asr=" ".join(str(item.get("whole_ASR") or "").split()))


def _audio(root: Path) -> Iterator[Example]:
    """Target = the shots' narration ("audio") captions joined; the prompt carries the whole-video ASR. The
    3 in-context examples are the first three videos of 20k_train.json (or, without it, of the test file,
    which are then not evaluated)."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    test = read_json(first_existing(root, "20k_test.json"))
    if (root / "20k_train.json").exists():
        pool = read_json(root / "20k_train.json")[:AUDIO_SHOTS]
    else:
        pool, test = test[:AUDIO_SHOTS], test[AUDIO_SHOTS:]
    shots = [(_audio_prompt(s), _audio_summary(s), [videos.find(s["video"])]) for s in pool]
    for item in test:
        yield Example(
            id=str(item["id"]),
            prompt=_audio_prompt(item),
            target=_audio_summary(item),
            media=[videos.find(item["video"])],
            shots=list(shots),
        )


def _summary(root: Path) -> Iterator[Example]:
    """Target = the video summary (whole_caption)."""
    videos = MediaIndex(root / "videos", VIDEO_EXTS, ".mp4")
    for item in read_json(first_existing(root, "20k_test.json")):
        yield Example(
            id=str(item["id"]),
            prompt=_SUMMARY,
            target=" ".join(item["whole_caption"].split()),
            media=[videos.find(item["video"])],
        )


_LAYOUT = (
    "20k_test.json (Shot2Story20K annotations: [{{video, id, whole_caption, whole_ASR, video_names, "
    "audio_captions, captions, ASR}}]){extra} + videos/<video>"
)


def _spec(name: str, loader: Callable[[Path], Iterator[Example]], **fields: Any) -> TaskSpec:
    return TaskSpec(
        name=name,
        group="audio" if name == "shot2story_audio" else "behavior_ablation",
        metric="caption",
        loader=loader,
        subdir="shot2story",
        parser="text",
        paper_metric_key="bleu",
        **fields,
    )


SPECS = [
    _spec(
        "shot2story_audio",
        _audio,
        protocol="kshot",
        shots=AUDIO_SHOTS,
        max_new_tokens=192,
        layout=_LAYOUT.format(extra=" [+ 20k_train.json for the in-context examples]"),
        notes="The paper names the task 'audio summarization (3-shot)' without its target; here the target is "
        "the narration captions of the shots (Shot2Story's audio-aware captions) and the ASR is in the prompt.",
    ),
    _spec(
        "shot2story_summary",
        _summary,
        protocol="generate",
        max_new_tokens=384,
        layout=_LAYOUT.format(extra=""),
        notes="The behaviour-ablation table's multi-shot video summarization.",
    ),
]
