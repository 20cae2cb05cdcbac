"""What the behaviour simulator web app shows, as plain HTML: the predicted numbers and comments, the replay
graph over the video's timeline with each scene's keyframe thumbnail and verbalisation, and an A/B comparison.

Pure functions of `bl_eval.simulate`'s records and bl-data's samples (no Gradio), so they are tested alone.
Every text from the model or the user is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import numpy as np
from PIL import Image

from bl_data.verbalize import SEPARATOR

_SCENE_LINE = re.compile(r"^Scene (\d+): (.+)$")
THUMB_WIDTH = 160


@dataclass(frozen=True)
class SceneView:
    """One scene of the video as the page shows it: number (from 1), [start, end] seconds, bl-data's
    verbalisation of it (colours, tone, caption and tags when captioned) and a keyframe thumbnail (data URI)."""

    number: int
    start: float
    end: float
    text: str
    thumbnail: str


def scene_texts(meta: dict[str, Any]) -> dict[int, str]:
    """Scene number -> its verbalisation: the "Scene N: ..." lines of the sample's answer (before the
    behaviour block), which bl-data writes from the media analysis."""
    answer = meta["conversations"][1]["value"].split(SEPARATOR, 1)[0]
    return {int(m.group(1)): m.group(2) for line in answer.splitlines() if (m := _SCENE_LINE.match(line))}


def thumbnail(frame: np.ndarray, width: int = THUMB_WIDTH) -> str:
    """An RGB uint8 frame (H, W, 3) -> a JPEG data URI `width` pixels wide."""
    image = Image.fromarray(frame)
    image = image.resize((width, max(1, round(image.height * width / image.width))))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def scene_views(meta: dict[str, Any], frames: np.ndarray) -> list[SceneView]:
    """bl-data's sample (scenes, frame times, verbalisation) and its frames (T, H, W, 3) -> one view per
    scene; each scene's keyframe is the sampled frame nearest its middle."""
    times = np.asarray(meta["frame_timestamps"], dtype=float)  # (T,)
    texts = scene_texts(meta)
    views = []
    for number, (start, end) in enumerate(meta["scenes"], 1):
        nearest = int(np.abs(times - (start + end) / 2).argmin())
        views.append(SceneView(number, start, end, texts.get(number, ""), thumbnail(frames[nearest])))
    return views


def likes_text(record: dict[str, Any]) -> str | None:
    """The predicted engagement as the page words it: likes as a share of viewers, or Reddit upvotes."""
    if record.get("likes_percent") is not None:
        return f"{record['likes_percent']:g}% of viewers"
    if record.get("upvotes") is not None:
        return f"{record['upvotes']} upvotes"
    return None


def summary_html(record: dict[str, Any]) -> str:
    """The numbers and comments of one record (or its malformed answer, raw)."""
    title = f"<h3 class='bl-title'>{escape(record['title'])}</h3>"
    if record.get("error") == "malformed answer":
        return (
            f"<div class='bl-summary'>{title}<p class='bl-malformed'>The model's answer has no behaviour "
            f"block (malformed answer). Its text:</p><pre class='bl-raw'>{escape(record['raw'])}</pre></div>"
        )
    stats = []
    if (likes := likes_text(record)) is not None:
        label = "Predicted likes" if record.get("likes_percent") is not None else "Predicted upvotes"
        stats.append(
            f"<div class='bl-stat'><span>{label}</span><b class='bl-likes'>{escape(likes)}</b></div>"
        )
    if record.get("replay"):
        peak = max(record["replay"], key=lambda r: r["value"])
        stats.append(
            f"<div class='bl-stat'><span>Most replayed</span><b class='bl-peak'>scene {peak['scene']}"
            f"{_span(peak)} ({peak['value']:.2f})</b></div>"
        )
    comments = "".join(f"<li>{escape(c)}</li>" for c in record.get("top_comments") or [])
    comments = f"<ol class='bl-comments'>{comments}</ol>" if comments else "<p>No comments predicted.</p>"
    return f"<div class='bl-summary'>{title}{''.join(stats)}<h4>Top comments</h4>{comments}</div>"


def _span(replay: dict[str, Any]) -> str:
    return "" if replay["start"] is None else f", {replay['start']:.2f}–{replay['end']:.2f} s"


def replay_html(record: dict[str, Any], scenes: Sequence[SceneView]) -> str:
    """The replay graph over the timeline: a bar per scene at its time span, its keyframe under it, and a
    card shown on hover with the scene's times, predicted value and verbalisation."""
    if not scenes:
        return ""
    values = {r["scene"]: r["value"] for r in record.get("replay") or []}
    duration = max(s.end for s in scenes) or 1.0
    top = max([*values.values(), 1e-9])
    columns = []
    for s in scenes:
        left, width = 100 * s.start / duration, 100 * (s.end - s.start) / duration
        value = values.get(s.number)
        height = 0.0 if value is None else 100 * max(value, 0.0) / top
        said = "no value predicted" if value is None else f"replay {value:.2f}"
        columns.append(
            f"<div class='bl-scene' data-scene='{s.number}' style='left:{left:.3f}%;width:{width:.3f}%'>"
            f"<div class='bl-plot'><div class='bl-bar' style='height:{height:.1f}%'></div></div>"
            f"<img class='bl-thumb' src='{s.thumbnail}' alt='scene {s.number} keyframe'>"
            f"<div class='bl-card'><b>Scene {s.number} · {s.start:.2f}–{s.end:.2f} s · {said}</b>"
            f"<p>{escape(s.text)}</p></div></div>"
        )
    ticks = "".join(
        f"<span style='left:{100 * t / duration:.3f}%'>{t:.1f} s</span>" for t in np.linspace(0, duration, 5)
    )
    extra = [r for r in record.get("replay") or [] if r["start"] is None]
    note = ""
    if extra:
        named = ", ".join(f"scene {r['scene']}: {r['value']:.2f}" for r in extra)
        note = f"<p class='bl-note'>Values for scenes the video does not have: {escape(named)}</p>"
    return (
        f"<div class='bl-replay'><div class='bl-timeline'>{''.join(columns)}</div>"
        f"<div class='bl-axis'>{ticks}</div>{note}</div>"
    )


def compare_html(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The differences between two cuts' records, called out in words (B relative to A)."""
    points = []
    if a.get("likes_percent") is not None and b.get("likes_percent") is not None:
        delta = b["likes_percent"] - a["likes_percent"]
        more = "more" if delta > 0 else "fewer" if delta < 0 else "as many"
        points.append(
            f"Likes: B is predicted to be liked by {abs(delta):.2g} percentage points {more} viewers "
            f"({b['likes_percent']:g}% vs {a['likes_percent']:g}%)."
            if delta
            else f"Likes: both are predicted at {a['likes_percent']:g}% of viewers."
        )
    if a.get("upvotes") is not None and b.get("upvotes") is not None:
        points.append(f"Upvotes: B {b['upvotes']} vs A {a['upvotes']} ({b['upvotes'] - a['upvotes']:+d}).")
    for name, record in (("A", a), ("B", b)):
        if record.get("error"):
            points.append(f"Cut {name} has no prediction ({record['error']}).")
        elif record.get("replay"):
            peak = max(record["replay"], key=lambda r: r["value"])
            mean = sum(r["value"] for r in record["replay"]) / len(record["replay"])
            points.append(
                f"Cut {name}: most replayed scene {peak['scene']}{_span(peak)} ({peak['value']:.2f}); "
                f"mean replay {mean:.2f} over {len(record['scenes'])} scenes."
            )
    only_a = [c for c in a.get("top_comments") or [] if c not in (b.get("top_comments") or [])]
    only_b = [c for c in b.get("top_comments") or [] if c not in (a.get("top_comments") or [])]
    if only_a or only_b:
        points.append(f"Comments only A draws: {'; '.join(only_a) or 'none'}.")
        points.append(f"Comments only B draws: {'; '.join(only_b) or 'none'}.")
    elif a.get("top_comments"):
        points.append("Both draw the same top comments.")
    items = "".join(f"<li>{escape(p)}</li>" for p in points)
    return f"<div class='bl-compare'><h3>B versus A</h3><ul>{items}</ul></div>"


CSS = """
.bl-summary .bl-stat {display:flex; justify-content:space-between; font-size:1.1em; padding:2px 0}
.bl-replay {padding: 8px 4px 24px}
.bl-timeline {position:relative; height:230px}
.bl-scene {position:absolute; top:0; height:100%; box-sizing:border-box; padding:0 1px}
.bl-plot {height:150px; display:flex; align-items:flex-end; border-bottom:1px solid #888}
.bl-bar {width:100%; background:#e8743b; border-radius:3px 3px 0 0}
.bl-scene:hover .bl-bar {background:#c0392b}
.bl-thumb {width:100%; height:60px; object-fit:cover; margin-top:4px; border-radius:2px}
.bl-card {display:none; position:absolute; top:8px; left:0; width:260px; z-index:10; padding:6px 8px; pointer-events:none;
          background:var(--background-fill-primary, #fff); border:1px solid #888; border-radius:6px;
          box-shadow:0 2px 8px rgba(0,0,0,.25); font-size:.85em}
.bl-scene:hover .bl-card {display:block}
.bl-axis {position:relative; height:18px; font-size:.8em; color:#666}
.bl-axis span {position:absolute; transform:translateX(-50%); white-space:nowrap}
.bl-axis span:first-child {transform:none}
.bl-axis span:last-child {transform:translateX(-100%)}
"""
