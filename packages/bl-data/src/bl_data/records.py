"""The records every stage of bl-data passes along: a post with its behaviour, scenes, and failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Source = Literal["youtube", "reddit", "blift"]


@dataclass(frozen=True)
class Comment:
    """A viewer comment. `likes` is YouTube's like count or Reddit's score."""

    text: str
    likes: int = 0
    author: str | None = None
    id: str | None = None
    parent: str | None = None


@dataclass(frozen=True)
class HeatmapMarker:
    """One marker of YouTube's "most replayed" graph: [start, end) seconds, value in [0, 1]."""

    start: float
    end: float
    value: float


@dataclass
class Post:
    """One video or image with its engagement, as an importer reads it (before filters)."""

    id: str
    source: Source
    media_path: Path | None
    title: str
    channel: str | None = None
    description: str | None = None
    duration: float | None = None
    upload_date: str | None = None
    tags: list[str] = field(default_factory=list)
    view_count: int | None = None
    like_count: int | None = None
    comment_count: int | None = None
    comments: list[Comment] = field(default_factory=list)
    heatmap: list[HeatmapMarker] | None = None
    subreddit: str | None = None
    score: int | None = None
    over_18: bool = False
    author: str | None = None
    url: str | None = None
    permalink: str | None = None
    is_video: bool = True


@dataclass(frozen=True)
class Scene:
    """A shot: [start, end) seconds of the media."""

    index: int
    start: float
    end: float


@dataclass(frozen=True)
class SceneDescription:
    """What the verbaliser says about one scene (Listing 1's per-scene sentence)."""

    caption: str | None
    foreground_colors: tuple[str, ...]
    background_colors: tuple[str, ...]
    tone: str
    tags: tuple[str, ...] = ()
    ocr: str | None = None


@dataclass(frozen=True)
class Failure:
    """A bad input: which input, at which stage, and why. Written to failures.jsonl; the run goes on.

    `sample_id` and `field` name the post and the offending field when they are known.
    """

    input: str
    stage: str
    reason: str
    sample_id: str | None = None
    field: str | None = None
