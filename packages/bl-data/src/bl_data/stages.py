"""The per-post stages of `prepare` as plain functions that never raise on a bad post.

    result = process_post(post, StageConfig())   # -> PostResult: meta + frames, a Failure, or a drop

Any exception a stage raises becomes that post's `Failure` (its media file, the stage, the reason), in
whatever process runs it, so one poison input cannot stop a run. The local engine (`bl_data.pipeline`) runs
these functions in a process pool; another engine can run the same ones. Stages, in order:

    filter     the paper's rules (`bl_data.filters`); hashing the media for duplicates reads the file
    media      `analyze_media`: probe, scene cuts, sampled frames, one keyframe per scene
    check      the media against the post: kind from the content, duration and heatmap within the media
    caption    a captioner's per-scene captions (optional)
    verbalize  replay per scene, the Listing 1 sample and its Ad-LLaVA control
"""

from __future__ import annotations

import dataclasses
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from .behavior import replay_per_scene
from .media import MediaAnalysis, MediaError, MediaInfo, analyze_media
from .records import Failure, Post
from .verbalize import describe_scene, verbalize

if TYPE_CHECKING:  # workers never filter: they need not import scikit-learn
    from .filters import Dropped, Filters

T = TypeVar("T")


class Captioner(Protocol):
    """Per-scene captions and tags from keyframes (e.g. a VLM); `name` goes into each sample's provenance."""

    name: str

    def __call__(self, keyframes: Sequence[np.ndarray]) -> list[tuple[str, list[str]]]: ...


@dataclass
class StageConfig:
    """Settings of the per-post stages (the media- and check-related part of `PrepareConfig`)."""

    fps: float = 1.0
    max_frames: int = 300
    max_side: int | None = 448  # frames are stored at most this large (the model sees 224 px)
    max_duration: float = 500.0
    # an info.json duration or heatmap end may differ from the media by max(seconds, ratio * duration)
    duration_tolerance_s: float = 2.0
    duration_tolerance_ratio: float = 0.05
    asr_name: str | None = None  # the ASR model of the transcripts given to `finish_post` (provenance)


@dataclass
class PostResult:
    """What became of one post: `meta` + `frames` (T, H, W, 3) uint8 to write, a `failure`, or a drop rule."""

    post_id: str
    media: str | None
    meta: dict[str, Any] | None = None
    frames: np.ndarray | None = None
    failure: Failure | None = None
    dropped: str | None = None


class Rejected(Exception):
    """A stage's named verdict on a post: the reason and the offending field."""

    def __init__(self, reason: str, field: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


def exception_reason(err: BaseException) -> str:
    """A one-line reason for an unexpected exception: its type, where it was raised, and its message (for
    one without a message, e.g. a bare `assert`, the source line that raised it, which says what failed)."""
    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    line = frames[-1].line if frames else None
    message = f": {err}" if str(err) else f": no message, raised by `{line}`" if line else ""
    return f"unexpected {type(err).__name__}{where}{message}"


def failure_of(post: Post, stage: str, err: Exception) -> Failure:
    """The Failure of `post` at `stage` for the exception `err`."""
    field = None
    if isinstance(err, Rejected):
        reason, field = err.reason, err.field
    elif isinstance(err, MediaError):
        reason = err.reason
    elif isinstance(err, OSError):
        reason = f"cannot read {err.filename or 'the media'} ({err.strerror or err})"
    else:
        reason = exception_reason(err)
    media = str(post.media_path) if post.media_path is not None else post.id
    return Failure(media, stage, reason, post.id, field)


def run_stage(stage: str, post: Post, fn: Callable[..., T], *args: Any) -> T | Failure:
    """`fn(*args)`, or the Failure of `post` at `stage` when it raises any exception."""
    try:
        return fn(*args)
    except Exception as err:  # the whole point: no input may stop the run
        return failure_of(post, stage, err)


def filter_post(post: Post, filters: Filters) -> Post | Dropped | Failure:
    """The `filter` stage: the post after the rules, a drop, or a Failure (e.g. media the hash cannot read)."""
    return run_stage("filter", post, filters, post)


def check_media(post: Post, info: MediaInfo, cfg: StageConfig) -> tuple[Post, dict[str, str]]:
    """The `check` stage: `post` with the media's kind, and the repairs made (for provenance).

    The media kind comes from the content, not the file name: a still image named `.mp4` is an image (a
    recorded repair), except for YouTube, whose posts are videos (rejected). For a video, an info.json
    `duration`, and any heatmap marker's end, beyond the media's duration by more than the tolerance is
    rejected (`Rejected` naming the field).
    """
    repairs: dict[str, str] = {}
    if post.is_video != info.is_video:
        kind = "video" if info.is_video else "still image"
        named = post.media_path.suffix if post.media_path is not None else "?"
        if post.source == "youtube" and not info.is_video:
            raise Rejected(f"the content is a {kind}, not a video (file named {named})", "media")
        repairs["media_kind"] = f"{kind} from the content (file named {named})"
        post = dataclasses.replace(post, is_video=info.is_video)
    if not info.is_video:
        return post, repairs
    tolerance = max(cfg.duration_tolerance_s, cfg.duration_tolerance_ratio * info.duration)
    within = f"the media's {info.duration:.2f} s by more than {tolerance:.2f} s"
    if post.duration is not None and abs(post.duration - info.duration) > tolerance:
        raise Rejected(f"duration {post.duration:g} s differs from {within}", "duration")
    for i, marker in enumerate(post.heatmap or []):
        if marker.end > info.duration + tolerance:
            raise Rejected(
                f"heatmap marker [{marker.start:g}, {marker.end:g}) s ends beyond {within}",
                f"heatmap[{i}].end_time",
            )
    return post, repairs


def _analyze(post: Post, cfg: StageConfig) -> MediaAnalysis:
    return analyze_media(post.media_path, fps=cfg.fps, max_frames=cfg.max_frames, max_side=cfg.max_side)


def _verbalize(
    post: Post, analysis: MediaAnalysis, captions: list, asr: str | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    scenes = [
        describe_scene(kf, caption=c, tags=tags)
        for kf, (c, tags) in zip(analysis.keyframes, captions, strict=True)
    ]
    replay = replay_per_scene(post.heatmap, analysis.scenes) if post.is_video else None
    sample = verbalize(post, scenes, replay=replay, asr=asr, provenance=provenance)
    control = verbalize(post, scenes, replay=replay, asr=asr, with_behavior=False, provenance=provenance)
    return sample.to_json() | {
        "control_conversations": control.conversation()["conversations"],
        "source": post.source,
        "url": post.url,
        "scenes": [[s.start, s.end] for s in analysis.scenes],
        "frame_timestamps": analysis.timestamps.round(3).tolist(),
    }


@dataclass
class Decoded:
    """A post after the `media` and `check` stages: the checked post, its media analysis and repairs."""

    post: Post
    analysis: MediaAnalysis
    repairs: dict[str, str]


def media_of(post: Post) -> str | None:
    """The post's media path as text (the key of `PostResult.media` and the media ledger), None without one."""
    return str(post.media_path) if post.media_path is not None else None


def decode_post(post: Post, cfg: StageConfig) -> Decoded | PostResult:
    """The `media` and `check` stages (and the media's max_duration): a `Decoded`, or the post's
    failure or drop as a `PostResult`; never raises."""
    media = media_of(post)
    analysis = run_stage("media", post, _analyze, post, cfg)
    if isinstance(analysis, Failure):
        return PostResult(post.id, media, failure=analysis)
    checked = run_stage("check", post, check_media, post, analysis.info, cfg)
    if isinstance(checked, Failure):
        return PostResult(post.id, media, failure=checked)
    post, repairs = checked
    if post.is_video and analysis.info.duration > cfg.max_duration:
        return PostResult(post.id, media, dropped="max_duration")
    post = dataclasses.replace(post, duration=post.duration or analysis.info.duration)
    return Decoded(post, analysis, repairs)


def caption_post(decoded: Decoded, captioner: Captioner | None) -> list | Failure:
    """The `caption` stage: (caption, tags) per scene, `(None, [])` each without a captioner."""
    if captioner is None:
        return [(None, [])] * len(decoded.analysis.keyframes)
    return run_stage("caption", decoded.post, captioner, decoded.analysis.keyframes)


def finish_post(
    decoded: Decoded,
    captions: list | Failure,
    captioner_name: str | None,
    cfg: StageConfig,
    transcript: str | None = None,
) -> PostResult:
    """The `verbalize` stage after the captions (a caption Failure passes through) and the ASR stage's
    `transcript` of the media (None: none, or no speech); never raises."""
    post, media = decoded.post, media_of(decoded.post)
    if isinstance(captions, Failure):
        return PostResult(post.id, media, failure=captions)
    asr = transcript or None
    provenance = {
        "captioner": captioner_name,
        "asr_model": cfg.asr_name if asr else None,
        **decoded.repairs,
    }
    meta = run_stage("verbalize", post, _verbalize, post, decoded.analysis, captions, asr, provenance)
    if isinstance(meta, Failure):
        return PostResult(post.id, media, failure=meta)
    return PostResult(post.id, media, meta=meta, frames=decoded.analysis.frames)


def process_post(post: Post, cfg: StageConfig, captioner: Captioner | None = None) -> PostResult:
    """Every stage after the filters for one post (runs in a worker process); never raises."""
    decoded = decode_post(post, cfg)
    if isinstance(decoded, PostResult):
        return decoded
    captions = caption_post(decoded, captioner)
    return finish_post(decoded, captions, captioner.name if captioner else None, cfg)
