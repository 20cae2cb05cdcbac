"""Behaviour simulation: ask a trained model how an audience will react to new videos (Listing 1 of the paper).

    model, processor = bl_model.inference.load("runs/behavior-llava-13b/final")
    for report in simulate(model, processor, [VideoRequest(Path("ad.mp4"), "My ad", "Brand")], out_dir=Path("out")):
        print(report["likes_percent"], report["top_comments"], report["replay"])

Each video goes through bl-data's media processing and verbalisation (scenes, 1 fps frames, keyframe colours and
tone; no captioner) into the Listing 1 request; answers are generated in batches and their behaviour block is
parsed: likes %, top comments, and replay values matched to the scenes by scene number. A video that cannot be
processed gives `{"video", "error": "media", "reason"}` and the others go on; an answer without a behaviour
block gives `{"error": "malformed answer", "raw"}`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from bl_data.parse import BehaviorParseError, parse_behavior
from bl_data.records import HeatmapMarker, Post
from bl_data.stages import StageConfig, process_post
from bl_model import BehaviorLlavaForCausalLM, BehaviorLlavaProcessor, Media
from bl_model.inference import generate_texts

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v"})


PLATFORMS = ("youtube", "reddit")


@dataclass(frozen=True)
class VideoRequest:
    """A video to simulate: its file, title (default: the file name), channel / brand (on Reddit: the
    subreddit) and the platform it is posted on (YouTube: likes, comments and replay; Reddit: upvotes and
    comments)."""

    video: Path
    title: str | None = None
    channel: str | None = None
    platform: str = "youtube"

    def __post_init__(self) -> None:
        if self.platform not in PLATFORMS:
            raise ValueError(f"unknown platform {self.platform!r}; expected one of {', '.join(PLATFORMS)}")

    @property
    def name(self) -> str:
        return self.title or self.video.stem


def find_videos(paths: Sequence[Path]) -> list[Path]:
    """Files as given, folders expanded to their video files (sorted, by suffix); a missing path is an error."""
    videos = []
    for path in paths:
        if path.is_dir():
            videos += sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        elif path.is_file():
            videos.append(path)
        else:
            raise FileNotFoundError(f"no video or folder at {path}")
    return videos


def listing1_request(request: VideoRequest, max_frames: int) -> tuple[dict[str, Any], np.ndarray]:
    """bl-data's sample of the video with behaviour unknown -> (its shard metadata, frames (T, H, W, 3) uint8).

    Placeholder likes/views and a one-point heatmap at 0 s (every scene takes its value, the nearest marker)
    make the verbaliser ask Listing 1's likes, comments and replay questions without a second pass over the
    media (on Reddit, a placeholder score asks for upvotes and comments); only the human turn, the system
    text and the scenes are used.
    """
    video = request.video
    if request.platform == "reddit":
        post = Post(
            id=video.stem,
            source="reddit",
            media_path=video,
            title=request.name,
            subreddit=request.channel,
            score=0,
        )
    else:
        post = Post(
            id=video.stem,
            source="youtube",
            media_path=video,
            title=request.name,
            channel=request.channel,
            view_count=1,
            like_count=0,
            heatmap=[HeatmapMarker(0.0, 0.0, 0.0)],
        )
    result = process_post(post, StageConfig(max_frames=max_frames, max_duration=math.inf))
    if result.failure is not None:
        raise ValueError(f"{video}: {result.failure.stage} failed: {result.failure.reason}")
    return result.meta, result.frames


def structure(raw: str, scenes: Sequence[Sequence[float]]) -> dict[str, Any]:
    """An answer's behaviour: likes %, upvotes, top comments, and the replay values by scene number with that
    scene's [start, end] (None for a scene number the video does not have), plus the video's scenes the answer
    gave no value for and the scene numbers it repeated; or the malformed-answer report."""
    try:
        parsed = parse_behavior(raw)
    except BehaviorParseError:
        return {"error": "malformed answer", "raw": raw}
    replay = missing = None
    if parsed.replay is not None:
        replay = []
        for scene, value in sorted(parsed.replay.items()):
            span = scenes[scene - 1] if 1 <= scene <= len(scenes) else (None, None)
            replay.append({"scene": scene, "start": span[0], "end": span[1], "value": value})
        missing = [i for i in range(1, len(scenes) + 1) if i not in parsed.replay]
    return {
        "likes_percent": parsed.likes_percent,
        "upvotes": parsed.upvotes,
        "top_comments": parsed.comments,
        "replay": replay,
        "replay_missing_scenes": missing,
        "replay_repeated_scenes": parsed.repeated_scenes,
        "raw": raw,
    }


def plot_replay(replay: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """A bar per scene (over its time span when every scene has one, else by scene number) -> PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [r["value"] for r in replay]
    fig, ax = plt.subplots(figsize=(8, 3))
    if all(r["start"] is not None and r["end"] is not None for r in replay):
        widths = [max(r["end"] - r["start"], 0.05) for r in replay]
        ax.bar([r["start"] for r in replay], values, width=widths, align="edge", edgecolor="k")
        ax.set_xlabel("time (s)")
    else:
        ax.bar([r["scene"] for r in replay], values, edgecolor="k")
        ax.set_xlabel("scene")
    ax.set_ylabel("predicted replay")
    ax.set_title(title or "predicted replay per scene")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def simulate(
    model: BehaviorLlavaForCausalLM,
    processor: BehaviorLlavaProcessor,
    requests: Sequence[VideoRequest],
    *,
    out_dir: Path | None = None,
    max_new_tokens: int = 1024,
    batch_size: int = 4,
    on_media: Callable[[VideoRequest, dict[str, Any], np.ndarray], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One report per request, in order, `batch_size` videos per generation batch; with `out_dir`, each replay
    graph is plotted to `out_dir/<video stem>.replay.png` (report["plot"]; `<stem>-2`, ... for a repeated stem).
    `on_media(request, meta, frames)` is called with each readable video's bl-data sample (its scenes'
    verbalisation and 1 fps frames, e.g. for a display) before its answer is generated."""
    plotted: set[str] = set()  # names taken by this run: videos of one name in two folders keep both plots
    with tqdm(total=len(requests), desc="simulate", unit="video") as bar:
        for start in range(0, len(requests), batch_size):
            chunk = requests[start : start + batch_size]
            reports: list[dict[str, Any]] = []
            ready: list[tuple[dict[str, Any], dict]] = []
            for request in chunk:
                report = {
                    "video": str(request.video),
                    "title": request.name,
                    "channel": request.channel,
                    "platform": request.platform,
                }
                reports.append(report)
                try:  # unreadable media, or over the processor's frame / token budget (a ValueError)
                    meta, frames = listing1_request(request, processor.max_frames)
                    human = meta["conversations"][0]["value"]
                    media = [Media.for_placeholder(human, frames)]
                    encoded = processor.prompt_for_generation(human, media, system=meta["system"])
                except (ValueError, OSError) as err:
                    report |= {"error": "media", "reason": str(err)}
                    continue
                if on_media is not None:
                    on_media(request, meta, frames)
                report["scenes"] = meta["scenes"]
                ready.append((report, encoded))
            answers = generate_texts(model, processor, [e for _, e in ready], max_new_tokens, batch_size)
            for (report, _), raw in zip(ready, answers, strict=True):
                report |= structure(raw, report["scenes"])
                report["plot"] = None
                if out_dir is not None and report.get("replay"):
                    stem = Path(report["video"]).stem
                    name, i = stem, 1
                    while name in plotted:
                        i += 1
                        name = f"{stem}-{i}"
                    plotted.add(name)
                    path = out_dir / f"{name}.replay.png"
                    report["plot"] = str(plot_replay(report["replay"], path, report["title"]))
            bar.update(len(chunk))
            yield from reports
