"""Training-sample templates: the paper's Listing 1 and its variants, and the two SALICON templates.

`verbalize` turns a filtered `Post` and its scene descriptions into a LLaMA-VID conversation. Templates:

- ``youtube_video``: Listing 1 verbatim (PAPER.md §1.2). The request for replay values, and the replay
  block, are written only when the video has replay values; the ASR sentence only when there is ASR.
- ``reddit_video`` / ``reddit_image``: not published verbatim ("NOT FOUND"); built like Listing 1 with
  upvotes in place of likes/views. BLIFT rows carry no upvotes: then only comments are asked for.
- ``control_video`` / ``control_image``: the Ad-LLaVA control, the same prompt and scene verbalisation
  without the behaviour questions and block.
- ``salicon_objects`` / ``salicon_regions``: verbatim. The regions template as published has no media
  placeholder; ``<image>`` is appended, as in the objects template.

Without a caption for a scene, its sentence starts at the colours (provenance counts the captioned scenes).
Whitespace in titles, ASR, OCR and comments is collapsed to single spaces, so each comment stays on one line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bl_data.behavior import likes_percent, top_comments
from bl_data.colors import foreground_background, tone
from bl_data.records import Post, SceneDescription

SYSTEM = (
    "You are an AI visual assistant. You are given a detailed description of a media, followed by the actual "
    "media. Answer all questions as if you are seeing the media."
)
SALICON_SYSTEM = "You are an AI visual assistant. Answer all questions as you are seeing the media"
SEPARATOR = ">>> BEHAVIOR <<<"
SALICON_REGIONS = (
    "upper-left",
    "upper-center",
    "upper-right",
    "middle-left",
    "middle-center",
    "middle-right",
    "bottom-left",
    "bottom-center",
    "bottom-right",
)
_SALICON_OBJECTS = (
    "The objects in this image in no particular order are {}. Give me the order of saliency of these objects, "
    "start with the most salient object and end with the least salient object, each in a separate line. Give me "
    "the objects only and nothing else."
)
_SALICON_REGIONS = (
    'Assume the given image is broken into a 3X3 grid the regions or tiles being named "upper-left" '
    '"upper-center", "upper-right", "middle-left", "middle-center", "middle-right", "bottom-left", '
    '"bottom-center", "bottom-right". Rank these regions or tiles based on their saliency, give me the line '
    "separated ranking of all regions in decreasing order."
)
_ARTICLES = ("A ", "An ", "The ")


@dataclass(frozen=True)
class VerbalizedSample:
    """One training sample: the conversation, the raw behaviour it verbalises, and its provenance."""

    id: str
    system: str
    human: str
    gpt: str
    behavior: dict[str, Any]
    provenance: dict[str, Any]

    def conversation(self) -> dict[str, Any]:
        """The LLaMA-VID sample `{"id", "conversations", "system"}` that bl-model's processor reads."""
        return {
            "id": self.id,
            "conversations": [{"from": "human", "value": self.human}, {"from": "gpt", "value": self.gpt}],
            "system": self.system,
        }

    def to_json(self) -> dict[str, Any]:
        """The conversation plus `behavior` and `provenance`: the shard's `json` member."""
        return {**self.conversation(), "behavior": self.behavior, "provenance": self.provenance}


def _clean(text: str) -> str:
    return " ".join(text.split())


def _caption(caption: str) -> str:
    """A caption as the object of "The scene shows …": no final period, a leading article lower-cased."""
    text = _clean(caption).rstrip(".")
    return text[0].lower() + text[1:] if text.startswith(_ARTICLES) else text


def scene_sentence(scene: SceneDescription, noun: str = "scene") -> str:
    """Listing 1's sentence for one scene (or, with `noun="image"`, an image)."""
    if not scene.foreground_colors or not scene.background_colors:
        raise ValueError(f"{noun} needs foreground and background colours, got {scene}")
    parts = [f"The {noun} shows {_caption(scene.caption)}."] if scene.caption else []
    parts.append(
        f"The foreground colors of the {noun} are {', '.join(scene.foreground_colors)}, "
        f"and the background colors are {', '.join(scene.background_colors)}."
    )
    parts.append(f"The dominant tone of the {noun} is {scene.tone}.")
    if scene.tags:
        parts.append(f"This {noun} is categorized by the tags: {', '.join(scene.tags)}.")
    if scene.ocr:
        parts.append(f"The text shown in the {noun} is '{_clean(scene.ocr)}'.")
    return " ".join(parts)


def describe_scene(
    frame: np.ndarray,
    caption: str | None = None,
    tags: Sequence[str] = (),
    ocr: str | None = None,
    k: int = 3,
) -> SceneDescription:
    """A scene's description from its keyframe (RGB uint8): computed colours and tone plus the given text."""
    foreground, background = foreground_background(frame, k)
    return SceneDescription(caption, tuple(foreground), tuple(background), tone(frame), tuple(tags), ocr)


def _behavior(post: Post, top_k: int, replay: Sequence[float] | None) -> dict[str, Any]:
    likes_pct = None
    if post.source == "youtube":
        if post.like_count is None or post.view_count is None:
            raise ValueError(f"post {post.id}: a YouTube sample needs like_count and view_count")
        likes_pct = likes_percent(post.like_count, post.view_count)
    return {
        "views": post.view_count,
        "likes": post.like_count,
        "likes_percent": likes_pct,
        "upvotes": post.score,
        "num_comments": post.comment_count,
        "top_comments": [{"text": c.text, "likes": c.likes} for c in top_comments(post.comments, top_k)],
        "replay": None if replay is None else [round(v, 2) for v in replay],
    }


def _human(post: Post, asr: str | None, behavior: dict[str, Any] | None, top_k: int) -> str:
    kind = "video" if post.is_video else "image"
    title = _clean(post.title)
    if post.source == "youtube":
        intro = f'The video advertisement is titled "{title}"'
        intro += f" for the brand {_clean(post.channel)}." if post.channel else "."
        audio = f' The audio in the ad says "{_clean(asr)}".' if asr else ""
    else:
        intro = f'The {kind} is titled "{title}"'
        intro += f" and was posted on r/{post.subreddit}." if post.subreddit else "."
        audio = f' The audio in the {kind} says "{_clean(asr)}".' if asr else ""
    task = f" Analyze this {kind} deeply, then " + (
        f"write scene by scene description of the {kind}" if post.is_video else f"describe the {kind}"
    )
    if behavior is None:
        request = task + "."
    else:
        questions = []
        comments = f"the top-{top_k} popular comments on this {kind}"
        if behavior["likes_percent"] is not None:
            questions.append(
                f"What percentage of viewers would like this {kind}, and what would be {comments}?"
            )
        elif behavior["upvotes"] is not None:
            questions.append(f"How many upvotes would this {kind} get, and what would be {comments}?")
        else:
            questions.append(f"What would be {comments}?")
        if behavior["replay"] is not None:
            questions.append("What would the replay graph values for each scene be?")
        request = f"{task} and answer the following questions. {' '.join(questions)}"
    return f"{intro}{audio}{request}\n<{kind}>"


def _behavior_block(kind: str, behavior: dict[str, Any]) -> str:
    if behavior["likes_percent"] is not None:
        lead = f"The {kind} will be liked by {behavior['likes_percent']:.1f}% of viewers"
    elif behavior["upvotes"] is not None:
        lead = f"The {kind} will get {behavior['upvotes']} upvotes"
    else:
        lead = ""
    comments = [f'{i}. "{_clean(c["text"])}"' for i, c in enumerate(behavior["top_comments"], 1)]
    if comments:
        intro = f"{lead}, and the popular comments could be:" if lead else "The popular comments could be:"
        sections = ["\n".join([intro, *comments])]
    elif lead:
        sections = [f"{lead}."]
    else:
        sections = []
    if behavior["replay"] is not None:
        values = [f"Scene {i}: {v:.2f}" for i, v in enumerate(behavior["replay"], 1)]
        sections.append("\n".join(["The replay values for each scene would be:", *values]))
    if not sections:
        raise ValueError("no behaviour to verbalise: no likes, upvotes, comments or replay values")
    return "\n\n".join(sections)


def verbalize(
    post: Post,
    scenes: Sequence[SceneDescription],
    *,
    replay: Sequence[float] | None = None,
    asr: str | None = None,
    with_behavior: bool = True,
    top_k: int = 5,
    provenance: Mapping[str, Any] | None = None,
) -> VerbalizedSample:
    """The sample of `post` (after filters): one description per scene (exactly one for an image).

    `replay` (one value per scene, from `behavior.replay_per_scene`) adds the replay question and block.
    `with_behavior=False` gives the Ad-LLaVA control. `provenance` adds caller facts (captioner, ASR model…)
    to the computed ones.
    """
    kind = "video" if post.is_video else "image"
    if not scenes or (kind == "image" and len(scenes) != 1):
        raise ValueError(
            f"post {post.id}: a {kind} needs {'one' if kind == 'image' else 'at least one'} scene"
        )
    if replay is not None and (kind == "image" or len(replay) != len(scenes)):
        raise ValueError(f"post {post.id}: replay needs one value per scene of a video, got {len(replay)}")
    behavior = _behavior(post, top_k, replay)
    if kind == "video":
        lines = [f"Scene {i}: {scene_sentence(s)}" for i, s in enumerate(scenes, 1)]
        gpt = "\n".join(["The scene-by-scene descriptions are:\n", *lines])
    else:
        gpt = f"The description of the image is:\n\n{scene_sentence(scenes[0], 'image')}"
    if with_behavior:
        gpt += f"\n\n{SEPARATOR}\n\n{_behavior_block(kind, behavior)}"
    prefix = "control" if not with_behavior else "youtube" if post.source == "youtube" else "reddit"
    captioned = sum(s.caption is not None for s in scenes)
    computed = {
        "template": f"{prefix}_{kind}",
        "source": post.source,
        "scenes": len(scenes),
        "captioned_scenes": captioned,
        "captions": "none" if captioned == 0 else "all" if captioned == len(scenes) else "partial",
        "asr": bool(asr),
        "ocr_scenes": sum(bool(s.ocr) for s in scenes),
        "replay": replay is not None,
    }
    human = _human(post, asr, behavior if with_behavior else None, top_k)
    return VerbalizedSample(post.id, SYSTEM, human, gpt, behavior, {**(provenance or {}), **computed})


def salicon_objects(
    sample_id: str, ranked: Sequence[str], prompt_order: Sequence[str] | None = None
) -> VerbalizedSample:
    """SALICON object-ranking sample: `ranked` most salient first; the prompt lists them sorted by name."""
    if not ranked or len(set(ranked)) != len(ranked):
        raise ValueError(f"{sample_id}: ranked objects must be non-empty and unique, got {list(ranked)}")
    listed = sorted(ranked) if prompt_order is None else list(prompt_order)
    if sorted(listed) != sorted(ranked):
        raise ValueError(f"{sample_id}: prompt_order {listed} is not a permutation of {list(ranked)}")
    human = _SALICON_OBJECTS.format(", ".join(listed)) + "\n<image>"
    provenance = {"template": "salicon_objects"}
    return VerbalizedSample(
        sample_id, SALICON_SYSTEM, human, "\n".join(ranked), {"saliency_ranking": list(ranked)}, provenance
    )


def salicon_regions(sample_id: str, ranked: Sequence[str]) -> VerbalizedSample:
    """SALICON 3x3-region ranking sample: all nine `SALICON_REGIONS`, most salient first."""
    if sorted(ranked) != sorted(SALICON_REGIONS):
        raise ValueError(f"{sample_id}: ranking must hold each of {SALICON_REGIONS} once, got {list(ranked)}")
    provenance = {"template": "salicon_regions"}
    return VerbalizedSample(
        sample_id,
        SALICON_SYSTEM,
        _SALICON_REGIONS + "\n<image>",
        "\n".join(ranked),
        {"saliency_ranking": list(ranked)},
        provenance,
    )


def rank_regions(saliency: np.ndarray) -> list[str]:
    """The nine regions by mean saliency of their tile of a (H, W) map, highest first (ties: grid order)."""
    if saliency.ndim != 2 or min(saliency.shape) < 3:
        raise ValueError(f"expected a (H, W) saliency map with H, W >= 3, got {saliency.shape}")
    means = [tile.mean() for band in np.array_split(saliency, 3, 0) for tile in np.array_split(band, 3, 1)]
    return [SALICON_REGIONS[i] for i in np.argsort(-np.asarray(means), kind="stable")]
